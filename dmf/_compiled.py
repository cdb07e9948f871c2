"""Compiled (numba) conjugate-gradient row solver: the fast path of ``solver="cg"``.

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
def cg_solve_rows(indptr, cols, targets, weights, design, base_gram, reg, damping, solution, steps):  # pragma: no cover
    """Conjugate-gradient solves of every row, in place on ``solution`` (the start).

    Row ``u`` solves ``(base_gram + Σ_i w_i·y_i y_iᵀ + diag(reg·n_u + damping)) z = Σ_i t_i·y_i``
    with ``y_i = design[cols[i]]``. ``weights`` of length 0 means all ones, ``base_gram`` of
    shape (0, 0) means none; rows without ratings are set to zero.
    """
    n_rows, width = solution.shape
    use_weights = len(weights) > 0
    use_gram = base_gram.shape[0] > 0
    residual = np.empty(width)
    direction = np.empty(width)
    image = np.empty(width)
    penalty = np.empty(width)
    for row in range(n_rows):
        lo, hi = indptr[row], indptr[row + 1]
        if hi == lo:
            solution[row, :] = 0.0
            continue
        x = solution[row]
        for j in range(width):
            penalty[j] = reg[j] * (hi - lo) + damping[j]
        # residual = b − A x, computed in one pass over the row's ratings
        for j in range(width):
            total = penalty[j] * x[j]
            if use_gram:
                for l in range(width):
                    total += base_gram[j, l] * x[l]
            residual[j] = -total
        for position in range(lo, hi):
            y = design[cols[position]]
            projection = 0.0
            for j in range(width):
                projection += y[j] * x[j]
            weight = weights[position] if use_weights else 1.0
            coefficient = targets[position] - weight * projection
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
            for position in range(lo, hi):
                y = design[cols[position]]
                projection = 0.0
                for j in range(width):
                    projection += y[j] * direction[j]
                if use_weights:
                    projection *= weights[position]
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


@njit(nogil=True, cache=True)
def top_k_select(scores, k):  # pragma: no cover
    """Best ``k`` finite-or-not-−inf entries per row of ``scores``, best first, ties by lower
    column: one scan per row keeping a sorted list of ``k`` (no full argpartition).

    Returns (columns int64 (m, k), counts int64 (m,)); entries past ``counts[r]`` are −1.
    """
    n_rows, n_cols = scores.shape
    columns = np.full((n_rows, k), -1, dtype=np.int64)
    values = np.empty(k, dtype=scores.dtype)
    counts = np.zeros(n_rows, dtype=np.int64)
    for row in range(n_rows):
        filled = 0
        for col in range(n_cols):
            value = scores[row, col]
            if value == -np.inf:
                continue
            if filled == k and not value > values[k - 1]:
                continue  # ties keep the earlier (lower) column
            position = filled if filled < k else k - 1
            while position > 0 and value > values[position - 1]:
                if position < k:
                    values[position] = values[position - 1]
                    columns[row, position] = columns[row, position - 1]
                position -= 1
            values[position] = value
            columns[row, position] = col
            if filled < k:
                filled += 1
        counts[row] = filled
    return columns, counts
