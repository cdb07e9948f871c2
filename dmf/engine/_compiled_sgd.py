"""The compiled SGD pass over one grid cell (see :mod:`dmf.engine.dsgd`)."""

from __future__ import annotations

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
    row's penalty adds up to ``reg·n_u + damping``, the penalty of :class:`dmf.ALS`. The dot product
    and the error are accumulated in float64; factors and biases are stored in float32.
    """
    rank = user_factors.shape[1]
    total = 0.0
    for n in range(len(users)):
        u = users[n]
        i = items[n]
        dot = 0.0
        for f in range(rank):
            dot += user_factors[u, f] * item_factors[i, f]
        n_u = user_counts[u]
        n_i = item_counts[i]
        if use_biases:
            error = values[n] - (mean + user_biases[u] + item_biases[i] + dot)
            user_biases[u] += step * (error - (bias_reg + bias_damping / n_u) * user_biases[u])
            item_biases[i] += step * (error - (bias_reg + bias_damping / n_i) * item_biases[i])
        else:
            error = values[n] - dot
        total += error * error
        user_penalty = reg + damping / n_u
        item_penalty = reg + damping / n_i
        for f in range(rank):
            p = user_factors[u, f]
            q = item_factors[i, f]
            user_factors[u, f] = p + step * (error * q - user_penalty * p)
            item_factors[i, f] = q + step * (error * p - item_penalty * q)
    return total
