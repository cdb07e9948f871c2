"""The compiled SGD pass over one grid cell (see :mod:`dmf.engine.dsgd`)."""

from __future__ import annotations

import numpy as np
from numba import njit

from dmf.engine._compiled import _FAST_FINITE_SAFE


@njit(nogil=True, fastmath=_FAST_FINITE_SAFE, cache=True)
def sgd_pass(users, items, values, user_factors, item_factors, user_biases, item_biases, user_counts, item_counts,
             mean, step, reg, bias_reg, damping, bias_damping, use_biases):  # pragma: no cover - compiled
    """One SGD step per rating, in the given order, in place; returns Σ e² of the errors
    before each step.

    Rating ``n`` is (``users[n]``, ``items[n]``, ``values[n]``) with local row indices into
    the factor arrays. With ``e = r − (mean + b_u + b_i + p_u·q_i)`` (``p_u·q_i`` alone
    without biases), ``λ_u = reg + damping / n_u`` and ``β_u = bias_reg + bias_damping / n_u``
    (``n_u = user_counts[u]``, the user's ratings in the whole training set; the same for items)::

        b_u += step·(e − β_u·b_u)                 b_i += step·(e − β_i·b_i)
        p_u += step·(e·q_i − λ_u·p_u)             q_i += step·(e·p_u − λ_i·q_i)

    (both factor updates from the old values), as Funk's and Koren's SGD; over an epoch a
    row's penalty adds up to ``reg·n_u + damping``, the penalty of :class:`dmf.ALS`. The
    arithmetic is float32 (as the factors are stored), so LLVM vectorizes both loops over the
    factors 8 wide: 2.3x faster per rating than float64 arithmetic at rank 100 (51 vs 117 ns,
    measured 2026-11-30); the returned loss is summed in float64. ``user_counts`` and
    ``item_counts`` are float32.
    """
    rank = user_factors.shape[1]
    step, mean = np.float32(step), np.float32(mean)
    reg, bias_reg = np.float32(reg), np.float32(bias_reg)
    damping, bias_damping = np.float32(damping), np.float32(bias_damping)
    total = 0.0
    for n in range(len(users)):
        p_u = user_factors[users[n]]
        q_i = item_factors[items[n]]
        dot = np.float32(0.0)
        for f in range(rank):
            dot += p_u[f] * q_i[f]
        n_u = user_counts[users[n]]
        n_i = item_counts[items[n]]
        if use_biases:
            u, i = users[n], items[n]
            error = values[n] - (mean + user_biases[u] + item_biases[i] + dot)
            user_biases[u] += step * (error - (bias_reg + bias_damping / n_u) * user_biases[u])
            item_biases[i] += step * (error - (bias_reg + bias_damping / n_i) * item_biases[i])
        else:
            error = values[n] - dot
        total += error * error
        scaled = step * error
        user_shrink = step * (reg + damping / n_u)
        item_shrink = step * (reg + damping / n_i)
        for f in range(rank):
            p = p_u[f]
            q = q_i[f]
            p_u[f] = p + scaled * q - user_shrink * p
            q_i[f] = q + scaled * p - item_shrink * q
    return total
