"""The DSGD grid: ratings cut into ``d × d`` cells by user block and item block.

Cell ``(b, c)`` holds the ratings of user block ``b`` on item block ``c`` (the rows of one
:class:`~dmf.engine.layout.BlockLayout` per side), as local row indices in their *visiting
order*: sorted by a seeded hash of the (user, item) pair. The order is a function of the
seed and the pair alone, so it does not depend on how the input was partitioned; a
repeated pair has a repeated key, which is how duplicates are found. A *stratum* is ``d``
cells that share no user block and no item block: ``(b, (b + shift) mod d)`` for every
``b``; :func:`stratum_order` gives the seeded order of the ``d`` shifts in an epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dmf.columns import ITEM, RATING, USER
from dmf.engine.blocks import rows_to_csr
from dmf.random import SGD_ORDER_STREAM, STRATUM_STREAM, counter_bits, counter_uniform


@dataclass(frozen=True)
class GridCell:
    """The ratings of user block ``user_block`` on item block ``item_block``, in visiting
    order: ``users``/``items`` are int32 indices local to the blocks, ``values`` float32."""

    user_block: int
    item_block: int
    users: np.ndarray
    items: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


def split_into_cells(part: pd.DataFrame, user_ids, item_ids, user_bounds: np.ndarray,
                     item_bounds: np.ndarray) -> tuple:
    """A partition of ratings (ids) as one piece per cell, in row-major cell order: each
    piece is (global user indices, global item indices, values)."""
    users = user_ids.index_of(part[USER].to_numpy())
    items = item_ids.index_of(part[ITEM].to_numpy())
    values = part[RATING].to_numpy(dtype=np.float32)
    d_items = len(item_bounds) - 1
    cell = (np.searchsorted(user_bounds, users, side="right") - 1) * d_items + (
        np.searchsorted(item_bounds, items, side="right") - 1)
    order = np.argsort(cell, kind="stable")
    offsets = np.searchsorted(cell[order], np.arange((len(user_bounds) - 1) * d_items + 1))
    users, items, values = users[order], items[order], values[order]
    return tuple((users[lo:hi], items[lo:hi], values[lo:hi]) for lo, hi in zip(offsets[:-1], offsets[1:]))


def assemble_cell(pieces: list, user_block: int, item_block: int, user_start: int, item_start: int, n_items: int,
                  seed: int) -> GridCell:
    """A cell from its pieces, in visiting order; a ``ValueError`` names repeated pairs."""
    users = np.concatenate([p[0] for p in pieces]).astype(np.int64) if pieces else np.empty(0, np.int64)
    items = np.concatenate([p[1] for p in pieces]).astype(np.int64) if pieces else np.empty(0, np.int64)
    values = np.concatenate([p[2] for p in pieces]) if pieces else np.empty(0, np.float32)
    # a bijection of the pair index: distinct pairs never tie, so the order is total
    keys = counter_bits(seed, SGD_ORDER_STREAM, users * n_items + items)
    order = np.argsort(keys)
    repeated = int(np.count_nonzero(keys[order][1:] == keys[order][:-1]))
    if repeated:
        raise ValueError(f"ratings hold {repeated} repeated (user, item) pairs in grid cell ({user_block}, "
                         f"{item_block}); read them with dmf.read_ratings(..., duplicates='latest' or 'mean')")
    return GridCell(user_block, item_block, (users[order] - user_start).astype(np.int32),
                    (items[order] - item_start).astype(np.int32), np.ascontiguousarray(values[order]))


def stratum_order(seed: int, epoch: int, d: int) -> np.ndarray:
    """The shifts ``0 .. d-1`` in the order epoch ``epoch`` visits the strata."""
    return np.argsort(counter_uniform(seed, STRATUM_STREAM, np.arange(d), epoch), kind="stable")


def seen_of_user_block(cells: list[GridCell], n_rows: int, item_starts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(row pointers, global item indices) of one user block, from its ``d`` cells."""
    rows = np.concatenate([cell.users for cell in cells])
    items = np.concatenate([cell.items + np.int32(start) for cell, start in zip(cells, item_starts)])
    indptr, items, _ = rows_to_csr(rows, items, np.zeros(len(items), np.float32), n_rows)
    return indptr, items


def block_counts(cells: list[GridCell], side: str, n_rows: int) -> np.ndarray:
    """Ratings per row (float32, as the SGD kernel reads them) of one user block (``side="users"``, the cells of its row of the
    grid) or item block (``"items"``, the cells of its column)."""
    counts = np.zeros(n_rows, dtype=np.int64)
    for cell in cells:
        counts += np.bincount(cell.users if side == "users" else cell.items, minlength=n_rows)
    return counts.astype(np.float32)
