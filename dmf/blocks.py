"""Dask stage that partitions indexed ratings into row blocks stored as CSR arrays.

Rows (users, or items) are cut into ``n_blocks`` contiguous index ranges. Every input
partition is split once into one piece per block (``split_partition``); each block then
concatenates its pieces, sorts them by (row, column) and packs them as a
:class:`~dmf.kernels.RatingBlock` (``assemble_block``). Sorting makes a block's content
independent of how the input was partitioned.
"""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf._compiled import sort_into_rows
from dmf.kernels import RatingBlock


def block_bounds(n_rows: int, n_blocks: int) -> np.ndarray:
    """Boundaries (int64, length ``n_blocks + 1``) of ``n_blocks`` near-equal index ranges."""
    n_blocks = max(1, min(n_blocks, max(n_rows, 1)))
    return (np.arange(n_blocks + 1, dtype=np.int64) * n_rows) // n_blocks


def split_partition(
    part: pd.DataFrame, row_column: str, col_column: str, value_column: str | None, bounds: np.ndarray
) -> tuple:
    """Split a partition's ratings into one ``(rows, cols, values)`` piece per block."""
    rows = part[row_column].to_numpy(dtype=np.int64)
    cols = part[col_column].to_numpy(dtype=np.int32)
    if value_column is None:
        values = np.zeros(len(rows), dtype=np.float32)
    else:
        values = part[value_column].to_numpy(dtype=np.float32)
    block = np.searchsorted(bounds, rows, side="right") - 1
    # small integer block ids make the stable argsort a radix sort
    order = np.argsort(block.astype(np.uint16 if len(bounds) <= 2**16 else np.int64), kind="stable")
    cuts = np.searchsorted(block[order], np.arange(len(bounds)))
    pieces = []
    for b in range(len(bounds) - 1):
        selected = order[cuts[b] : cuts[b + 1]]
        pieces.append((rows[selected], cols[selected], values[selected]))
    return tuple(pieces)


def assemble_block(pieces: list, start: int, stop: int, row_side: str, duplicates: str = "error") -> RatingBlock:
    """Concatenate a block's pieces into CSR arrays sorted by (row, column).

    ``duplicates="error"`` raises a ``ValueError`` naming the count of repeated
    (row, column) pairs; ``"drop"`` keeps one of each (for pairs without values).
    """
    rows = np.concatenate([p[0] for p in pieces]) if pieces else np.empty(0, np.int64)
    cols = np.concatenate([p[1] for p in pieces]) if pieces else np.empty(0, np.int32)
    values = np.concatenate([p[2] for p in pieces]) if pieces else np.empty(0, np.float32)
    n_rows = stop - start
    indptr, cols, values = sort_into_rows(rows - start, cols, values, n_rows)
    # a pair repeats when its column equals the previous one within the same row
    repeated = np.zeros(len(cols), dtype=bool)
    repeated[1:] = cols[1:] == cols[:-1]
    row_starts = indptr[:-1]
    repeated[row_starts[row_starts < len(cols)]] = False
    if repeated.any():
        if duplicates == "error":
            raise ValueError(
                f"ratings hold {int(repeated.sum())} repeated (user, item) pairs in {row_side} rows "
                f"{start}..{stop - 1}; read them with dmf.read_ratings(..., duplicates='latest' or 'mean')"
            )
        row_of = np.repeat(np.arange(n_rows), np.diff(indptr))
        counts = np.diff(indptr) - np.bincount(row_of[repeated], minlength=n_rows)
        cols, values = cols[~repeated], values[~repeated]
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
    return RatingBlock(start=int(start), indptr=indptr, cols=cols, values=values)


def build_blocks(
    indexed: dd.DataFrame,
    row_column: str,
    col_column: str,
    value_column: str | None,
    n_rows: int,
    n_blocks: int,
    row_side: str,
    duplicates: str = "error",
) -> list:
    """Delayed :class:`RatingBlock` objects, one per row block, from an indexed ratings frame.

    ``indexed`` holds integer row and column indices; tasks: one split per input partition,
    one assembly per block.
    """
    bounds = block_bounds(n_rows, n_blocks)
    n_out = len(bounds) - 1
    split = dask.delayed(split_partition, nout=n_out, pure=True)
    pieces = [split(part, row_column, col_column, value_column, bounds) for part in indexed.to_delayed()]
    assemble = dask.delayed(assemble_block, pure=True)
    return [
        assemble([piece[b] for piece in pieces], int(bounds[b]), int(bounds[b + 1]), row_side, duplicates)
        for b in range(n_out)
    ]
