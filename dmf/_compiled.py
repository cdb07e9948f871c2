"""Compiled (numba) kernels: the conjugate-gradient row solver (the fast path of ``solver="cg"``),
per-rating scores, top-k selection and the CSR sort of rating blocks.

One pass per row over its own ratings per CG step, never forming the row's Gram matrix:
``O(n_u·k)`` per step instead of ``O(n_u·k²)`` for the exact solve (Takács et al. 2011, as
in ``implicit``). Mathematically the same iteration as
:func:`dmf.kernels.conjugate_gradient`, which stays as the NumPy reference.

``fastmath`` lets LLVM vectorize the dot products; the arithmetic of a row still depends on
that row's data only, so results do not depend on the block layout.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: LLVM may reassociate and contract (vectorize dot products) but must keep NaN and inf
#: semantics, so that divergence still shows as non-finite factors.
_FAST_FINITE_SAFE = {"reassoc", "contract", "nsz", "arcp"}


@njit(nogil=True, fastmath=_FAST_FINITE_SAFE, cache=True)
def cg_solve_rows(indptr, cols, targets, weights, factors, append_one, base_gram, reg, damping, solution, steps,
                  scores):  # pragma: no cover
    """Conjugate-gradient solves of every row, in place on ``solution`` (the start).

    Row ``u`` solves ``(base_gram + Σ_i w_i·y_i y_iᵀ + diag(reg·n_u + damping)) z = Σ_i t_i·y_i``
    with ``y_i = factors[cols[i]]``, followed by a 1 when ``append_one`` (the bias coordinate).
    ``weights`` of length 0 means all ones, ``base_gram`` of shape (0, 0) means none; rows
    without ratings are set to zero. When ``scores`` is not empty it receives ``y_i · z`` of
    every rating under the final solution (the training loss needs it).

    A row's ``y_i`` are gathered once into a contiguous buffer: the random reads from
    ``factors`` happen once per row, the CG steps then stream through the buffer.
    """
    n_rows, width = solution.shape
    rank = factors.shape[1]
    use_weights = len(weights) > 0
    use_gram = base_gram.shape[0] > 0
    want_scores = len(scores) > 0
    residual = np.empty(width)
    direction = np.empty(width)
    image = np.empty(width)
    penalty = np.empty(width)
    longest = 0
    for row in range(n_rows):
        longest = max(longest, indptr[row + 1] - indptr[row])
    gathered = np.empty((longest, width), dtype=factors.dtype)
    for row in range(n_rows):
        lo, hi = indptr[row], indptr[row + 1]
        n = hi - lo
        if n == 0:
            solution[row, :] = 0.0
            continue
        x = solution[row]
        for j in range(width):
            penalty[j] = reg[j] * n + damping[j]
        # gather, and residual = b − A x in the same pass
        for j in range(width):
            total = penalty[j] * x[j]
            if use_gram:
                for l in range(width):
                    total += base_gram[j, l] * x[l]
            residual[j] = -total
        for q in range(n):
            source = factors[cols[lo + q]]
            y = gathered[q]
            for j in range(rank):
                y[j] = source[j]
            if append_one:
                y[rank] = 1.0
            projection = 0.0
            for j in range(width):
                projection += y[j] * x[j]
            weight = weights[lo + q] if use_weights else 1.0
            coefficient = targets[lo + q] - weight * projection
            for j in range(width):
                residual[j] += coefficient * y[j]
        norm = 0.0
        for j in range(width):
            direction[j] = residual[j]
            norm += residual[j] * residual[j]
        for _ in range(steps):
            if norm <= 0.0:
                break
            for j in range(width):
                total = penalty[j] * direction[j]
                if use_gram:
                    for l in range(width):
                        total += base_gram[j, l] * direction[l]
                image[j] = total
            for q in range(n):
                y = gathered[q]
                projection = 0.0
                for j in range(width):
                    projection += y[j] * direction[j]
                if use_weights:
                    projection *= weights[lo + q]
                for j in range(width):
                    image[j] += projection * y[j]
            curvature = 0.0
            for j in range(width):
                curvature += direction[j] * image[j]
            if curvature <= 0.0:
                break
            step = norm / curvature
            new_norm = 0.0
            for j in range(width):
                x[j] += step * direction[j]
                residual[j] -= step * image[j]
                new_norm += residual[j] * residual[j]
            ratio = new_norm / norm
            for j in range(width):
                direction[j] = residual[j] + ratio * direction[j]
            norm = new_norm
        if want_scores:
            for q in range(n):
                y = gathered[q]
                total = 0.0
                for j in range(width):
                    total += y[j] * x[j]
                scores[lo + q] = total


@njit(nogil=True, fastmath=_FAST_FINITE_SAFE, cache=True)
def rating_scores(indptr, cols, row_factors, col_factors):  # pragma: no cover
    """``row_factors[r] · col_factors[cols[i]]`` for every rating ``i`` of every row ``r`` (float64)."""
    n_rows, width = row_factors.shape
    scores = np.empty(len(cols))
    for row in range(n_rows):
        x = row_factors[row]
        for position in range(indptr[row], indptr[row + 1]):
            y = col_factors[cols[position]]
            total = 0.0
            for j in range(width):
                total += x[j] * y[j]
            scores[position] = total
    return scores


@njit(nogil=True, cache=True, inline="always")
def _offer(value, col, values, columns, filled, k):  # pragma: no cover
    """Insert ``(value, col)`` into the sorted best-``k`` list (``values``/``columns``, of which
    ``filled`` are used); returns the new fill. Columns arrive in increasing order, so a tie
    keeps the earlier (lower) column."""
    if filled == k and not value > values[k - 1]:
        return filled
    position = filled if filled < k else k - 1
    while position > 0 and value > values[position - 1]:
        if position < k:
            values[position] = values[position - 1]
            columns[position] = columns[position - 1]
        position -= 1
    values[position] = value
    columns[position] = col
    return filled + 1 if filled < k else filled


@njit(nogil=True, cache=True)
def top_k_of_products(products, row_bias, col_term, seen_indptr, seen_cols, k):  # pragma: no cover
    """Top-``k`` of ``(products[r, c] + row_bias[r]) + col_term[c]`` per row, skipping the
    columns ``seen_cols[seen_indptr[r]:seen_indptr[r + 1]]``: bias terms, exclusion and
    selection in one pass over the factor product (which is overwritten).

    Returns (columns int64 (m, k), values (m, k), counts int64 (m,)), best first, ties by
    lower column; entries past ``counts[r]`` are −1.
    """
    n_rows, n_cols = products.shape
    columns = np.full((n_rows, k), -1, dtype=np.int64)
    values = np.empty((n_rows, k), dtype=products.dtype)
    counts = np.zeros(n_rows, dtype=np.int64)
    for row in range(n_rows):
        scores = products[row]
        for position in range(seen_indptr[row], seen_indptr[row + 1]):
            scores[seen_cols[position]] = -np.inf
        bias = row_bias[row]
        filled = 0
        for col in range(n_cols):
            if scores[col] != -np.inf:
                filled = _offer((scores[col] + bias) + col_term[col], col, values[row], columns[row], filled, k)
        counts[row] = filled
    return columns, values, counts


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
