"""Compiled (numba) kernels: the conjugate-gradient row solver (the fast path of ``solver="cg"``),
per-rating scores and top-k selection (the block build's kernels are in :mod:`dmf.engine._compiled_blocks`).

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


#: How :func:`cg_solve_rows` reads each rating's target ``t`` and weight ``w``.
GIVEN, EXPLICIT, IMPLICIT = 0, 1, 2
#: What :func:`cg_solve_rows` returns: nothing (0.0), Σ (t − s)², or Σ c·(p − s)² − s² with
#: c = 1 + w and p = [t > 0] (the observed part of the implicit-feedback loss).
NO_LOSS, SQUARED_LOSS, IMPLICIT_LOSS = 0, 1, 2


@njit(nogil=True, fastmath=_FAST_FINITE_SAFE, cache=True)
def cg_solve_rows(indptr, cols, mode, targets, weights, values, offset, other_biases, alpha, factors, append_one,
                  base_gram, reg, damping, solution, steps, scores, loss_kind):  # pragma: no cover
    """Conjugate-gradient solves of every row, in place on ``solution`` (the start).

    Row ``u`` solves ``(base_gram + Σ_i w_i·y_i y_iᵀ + diag(reg·n_u + damping)) z = Σ_i t_i·y_i``
    with ``y_i = factors[cols[i]]``, followed by a 1 when ``append_one`` (the bias coordinate).
    ``mode`` says where ``t`` and ``w`` come from:

    - ``GIVEN``: ``targets`` and ``weights`` (length 0: all ones);
    - ``EXPLICIT``: ``t = values − offset − other_biases[col]`` (no biases when empty), ``w = 1``;
    - ``IMPLICIT``: confidence ``c = 1 + alpha·|v|``, ``t = c·[v > 0]``, ``w = c − 1``.

    ``base_gram`` of shape (0, 0) means none; rows without ratings are set to zero. When
    ``scores`` is not empty it receives ``y_i · z`` of every rating under the final solution;
    the return value is the training loss of ``loss_kind``, from the same scores.

    A row's ``y_i`` (and ``t_i``, ``w_i``) are gathered once into contiguous buffers (the
    random reads from ``factors`` happen once per row, in a loop of their own so that many
    are in flight); the residual, each CG step and the scores are then passes over the
    buffer. Each pass is a function of its own: inlined into one loop nest, LLVM compiled the
    gather and the passes about 2x slower (measured on ml-20m-sized blocks).
    """
    n_rows, width = solution.shape
    use_gram = base_gram.shape[0] > 0
    use_weights = mode == IMPLICIT or (mode == GIVEN and len(weights) > 0)
    x = np.empty(width)
    residual = np.empty(width)
    direction = np.empty(width)
    image = np.empty(width)
    penalty = np.empty(width)
    longest = 0
    for row in range(n_rows):
        longest = max(longest, indptr[row + 1] - indptr[row])
    gathered = np.empty((longest, width), dtype=factors.dtype)
    row_targets = np.empty(longest)
    row_weights = np.ones(longest)
    loss = 0.0
    for row in range(n_rows):
        lo, hi = indptr[row], indptr[row + 1]
        n = hi - lo
        if n == 0:
            solution[row, :] = 0.0
            continue
        _gather_rows(cols, lo, n, factors, gathered, append_one)
        _row_targets(mode, lo, n, cols, targets, weights, values, offset, other_biases, alpha, row_targets, row_weights)
        for j in range(width):
            x[j] = solution[row, j]
            penalty[j] = reg[j] * n + damping[j]
        # residual = b − A x = Σ_i (t_i − w_i·y_i·x) y_i − (penalty ⊙ x + base_gram·x)
        _regularizer_image(penalty, base_gram, use_gram, x, residual)
        for j in range(width):
            residual[j] = -residual[j]
        _accumulate_projections(gathered, n, x, row_weights, use_weights, row_targets, True, residual)
        norm = 0.0
        for j in range(width):
            direction[j] = residual[j]
            norm += residual[j] * residual[j]
        for _ in range(steps):
            if norm <= 0.0:
                break
            # image = A·direction
            _regularizer_image(penalty, base_gram, use_gram, direction, image)
            _accumulate_projections(gathered, n, direction, row_weights, use_weights, row_targets, False, image)
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
        for j in range(width):
            solution[row, j] = x[j]
        if len(scores) > 0 or loss_kind != NO_LOSS:
            loss += _buffer_scores(gathered, n, x, lo, scores, row_targets, row_weights, loss_kind)
    return loss


@njit(nogil=True, fastmath=_FAST_FINITE_SAFE, cache=True, inline="never")
def _row_targets(mode, lo, n, cols, targets, weights, values, offset, other_biases, alpha, row_targets,
                 row_weights):  # pragma: no cover
    """The targets and weights of a row's ratings ``lo .. lo + n − 1`` (see :func:`cg_solve_rows`)."""
    if mode == GIVEN:
        for q in range(n):
            row_targets[q] = targets[lo + q]
        if len(weights) > 0:
            for q in range(n):
                row_weights[q] = weights[lo + q]
    elif mode == EXPLICIT:
        use_biases = len(other_biases) > 0
        for q in range(n):
            target = np.float64(values[lo + q]) - offset
            if use_biases:
                target -= other_biases[cols[lo + q]]
            row_targets[q] = target
    else:
        for q in range(n):
            value = np.float64(values[lo + q])
            confidence = 1.0 + alpha * abs(value)
            row_targets[q] = confidence if value > 0 else 0.0
            row_weights[q] = confidence - 1.0


@njit(nogil=True, fastmath=_FAST_FINITE_SAFE, cache=True, inline="never")
def _gather_rows(cols, lo, n, factors, gathered, append_one):  # pragma: no cover
    """``gathered[q] = factors[cols[lo + q]]`` (then a 1 when ``append_one``) for ``q < n``."""
    rank = factors.shape[1]
    for q in range(n):
        source = factors[cols[lo + q]]
        y = gathered[q]
        for j in range(rank):
            y[j] = source[j]
        if append_one:
            y[rank] = 1.0


@njit(nogil=True, fastmath=_FAST_FINITE_SAFE, inline="always")
def _regularizer_image(penalty, base_gram, use_gram, v, out):  # pragma: no cover
    """``out = penalty ⊙ v (+ base_gram·v)``."""
    width = len(v)
    for j in range(width):
        total = penalty[j] * v[j]
        if use_gram:
            for l in range(width):  # noqa: E741 - the Gram column, as in the papers
                total += base_gram[j, l] * v[l]
        out[j] = total


@njit(nogil=True, fastmath=_FAST_FINITE_SAFE, cache=True, inline="never")
def _accumulate_projections(gathered, n, v, weights, use_weights, targets, subtract_from_targets, out):  # pragma: no cover
    """``out += Σ_q c_q·y_q`` over the buffer's first ``n`` rows ``y_q``, with ``c_q = w_q·(y_q·v)``,
    or ``t_q − w_q·(y_q·v)`` when ``subtract_from_targets`` (``w``: ``weights`` when
    ``use_weights``, else 1; ``t``: ``targets``). Four rows at a time: four independent dot
    products, one update of ``out``."""
    width = gathered.shape[1]
    q = 0
    while q + 4 <= n:
        y0, y1, y2, y3 = gathered[q], gathered[q + 1], gathered[q + 2], gathered[q + 3]
        p0 = p1 = p2 = p3 = 0.0
        for j in range(width):
            vj = v[j]
            p0 += y0[j] * vj
            p1 += y1[j] * vj
            p2 += y2[j] * vj
            p3 += y3[j] * vj
        if use_weights:
            p0 *= weights[q]
            p1 *= weights[q + 1]
            p2 *= weights[q + 2]
            p3 *= weights[q + 3]
        if subtract_from_targets:
            p0 = targets[q] - p0
            p1 = targets[q + 1] - p1
            p2 = targets[q + 2] - p2
            p3 = targets[q + 3] - p3
        for j in range(width):
            out[j] += p0 * y0[j] + p1 * y1[j] + p2 * y2[j] + p3 * y3[j]
        q += 4
    while q < n:
        y = gathered[q]
        p = 0.0
        for j in range(width):
            p += y[j] * v[j]
        if use_weights:
            p *= weights[q]
        if subtract_from_targets:
            p = targets[q] - p
        for j in range(width):
            out[j] += p * y[j]
        q += 1


@njit(nogil=True, fastmath=_FAST_FINITE_SAFE, cache=True, inline="never")
def _buffer_scores(gathered, n, x, lo, scores, targets, weights, loss_kind):  # pragma: no cover
    """Scores ``s_q = gathered[q] · x`` (into ``scores[lo + q]`` when ``scores`` is not empty) and
    their loss of ``loss_kind`` (see :data:`NO_LOSS`)."""
    width = gathered.shape[1]
    keep = len(scores) > 0
    loss = 0.0
    for q in range(n):
        y = gathered[q]
        score = 0.0
        for j in range(width):
            score += y[j] * x[j]
        if keep:
            scores[lo + q] = score
        if loss_kind == SQUARED_LOSS:
            loss += (targets[q] - score) ** 2
        elif loss_kind == IMPLICIT_LOSS:
            preference = 1.0 if targets[q] > 0 else 0.0
            loss += (1.0 + weights[q]) * (preference - score) ** 2 - score * score
    return loss


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
