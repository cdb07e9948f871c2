"""Compiled (numba) kernels of the block build: the split of ratings by block and the sorts
into CSR rows."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def sort_into_rows(local_rows, cols, values, n_rows):  # pragma: no cover
    """CSR arrays of ``(row, col, value)`` triples, rows ``0 .. n_rows − 1``, sorted by
    (row, column): two stable counting sorts, by column and then by row (O(n), no
    comparison sort).

    Returns (indptr int64 (n_rows + 1,), cols, values); equal (row, col) pairs keep their
    input order.
    """
    n = len(local_rows)
    n_cols = 0
    for col in cols:
        n_cols = max(n_cols, col + 1)
    col_start = np.zeros(n_cols + 1, dtype=np.int64)
    for col in cols:
        col_start[col + 1] += 1
    for col in range(n_cols):
        col_start[col + 1] += col_start[col]
    by_col = np.empty(n, dtype=np.int64)
    for position in range(n):
        by_col[col_start[cols[position]]] = position
        col_start[cols[position]] += 1
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    for row in local_rows:
        indptr[row + 1] += 1
    for row in range(n_rows):
        indptr[row + 1] += indptr[row]
    fill = indptr[:-1].copy()
    sorted_cols = np.empty_like(cols)
    sorted_values = np.empty_like(values)
    for position in by_col:
        row = local_rows[position]
        sorted_cols[fill[row]] = cols[position]
        sorted_values[fill[row]] = values[position]
        fill[row] += 1
    return indptr, sorted_cols, sorted_values


@njit(nogil=True, cache=True)
def split_by_bounds(rows, cols, values, bounds):  # pragma: no cover
    """Counting sort of ``(row, col, value)`` triples by the block of ``bounds`` their row falls in
    (input order kept within a block). Returns (offsets int64 (n_blocks + 1,), local rows int32
    (row − its block's first row), cols, values): block ``b`` is ``offsets[b]:offsets[b + 1]``.
    Raises ``ValueError`` for a row outside ``bounds[0] .. bounds[-1] − 1``."""
    n_blocks = len(bounds) - 1
    n = len(rows)
    block_of = np.empty(n, dtype=np.int32)
    offsets = np.zeros(n_blocks + 1, dtype=np.int64)
    for i in range(n):
        row = rows[i]
        if row < bounds[0] or row >= bounds[n_blocks]:
            raise ValueError("a row index is outside the blocks' range")
        b = np.searchsorted(bounds, row, side="right") - 1
        block_of[i] = b
        offsets[b + 1] += 1
    for b in range(n_blocks):
        offsets[b + 1] += offsets[b]
    fill = offsets[:-1].copy()
    local_rows = np.empty(n, dtype=np.int32)
    out_cols = np.empty(n, dtype=cols.dtype)
    out_values = np.empty(n, dtype=values.dtype)
    for i in range(n):
        b = block_of[i]
        position = fill[b]
        fill[b] += 1
        local_rows[position] = rows[i] - bounds[b]
        out_cols[position] = cols[i]
        out_values[position] = values[i]
    return offsets, local_rows, out_cols, out_values


@njit(nogil=True, cache=True)
def packed_sort_keys(local_rows, cols, col_bits, position_bits):  # pragma: no cover
    """``row << (col_bits + position_bits) | col << position_bits | position`` (uint64) per triple:
    sorting the keys sorts by (row, column, input position)."""
    n = len(cols)
    keys = np.empty(n, dtype=np.uint64)
    col_shift = np.uint64(position_bits)
    row_shift = np.uint64(col_bits + position_bits)
    for i in range(n):
        keys[i] = (np.uint64(local_rows[i]) << row_shift) | (np.uint64(cols[i]) << col_shift) | np.uint64(i)
    return keys


@njit(nogil=True, cache=True)
def unpack_sorted_keys(keys, values, n_rows, col_bits, position_bits):  # pragma: no cover
    """CSR arrays (indptr int64, cols int32, values) from sorted :func:`packed_sort_keys` keys."""
    n = len(keys)
    col_shift = np.uint64(position_bits)
    row_shift = np.uint64(col_bits + position_bits)
    col_mask = (np.uint64(1) << np.uint64(col_bits)) - np.uint64(1)
    position_mask = (np.uint64(1) << col_shift) - np.uint64(1)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    cols = np.empty(n, dtype=np.int32)
    sorted_values = np.empty(n, dtype=values.dtype)
    for i in range(n):
        key = keys[i]
        indptr[np.int64(key >> row_shift) + 1] += 1
        cols[i] = np.int32((key >> col_shift) & col_mask)
        sorted_values[i] = values[np.int64(key & position_mask)]
    for row in range(n_rows):
        indptr[row + 1] += indptr[row]
    return indptr, cols, sorted_values


@njit(nogil=True, cache=True)
def value_sort_keys(local_rows, cols, value_bits, col_bits):  # pragma: no cover
    """``row << (col_bits + 32) | col << 32 | value bits`` (uint64) per triple (``value_bits``:
    the float32 values viewed as uint32): sorting the keys sorts by (row, column) and carries
    each value along, so no gather by position follows the sort."""
    n = len(cols)
    keys = np.empty(n, dtype=np.uint64)
    row_shift = np.uint64(col_bits + 32)
    for i in range(n):
        keys[i] = (np.uint64(local_rows[i]) << row_shift) | (np.uint64(cols[i]) << np.uint64(32)) | np.uint64(value_bits[i])
    return keys


@njit(nogil=True, cache=True)
def unpack_value_keys(keys, n_rows, col_bits):  # pragma: no cover
    """CSR arrays (indptr int64, cols int32, value bits uint32) from sorted :func:`value_sort_keys` keys."""
    n = len(keys)
    row_shift = np.uint64(col_bits + 32)
    col_mask = (np.uint64(1) << np.uint64(col_bits)) - np.uint64(1)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    cols = np.empty(n, dtype=np.int32)
    value_bits = np.empty(n, dtype=np.uint32)
    for i in range(n):
        key = keys[i]
        indptr[np.int64(key >> row_shift) + 1] += 1
        cols[i] = np.int32((key >> np.uint64(32)) & col_mask)
        value_bits[i] = np.uint32(key & np.uint64(0xFFFFFFFF))
    for row in range(n_rows):
        indptr[row + 1] += indptr[row]
    return indptr, cols, value_bits
