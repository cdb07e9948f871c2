"""Compiled (numba) draws of :mod:`dmf.random`: the same bits as its NumPy functions, without
their temporaries (a SplitMix64 finaliser is nine passes over an array in NumPy)."""

from __future__ import annotations

import numpy as np
from numba import njit

from dmf.random import SPLITMIX_GOLDEN, SPLITMIX_MIX1, SPLITMIX_MIX2


@njit(nogil=True, cache=True, inline="always")
def _unit_splitmix(x):  # pragma: no cover
    """A uniform in (0, 1) from the top 53 bits of the SplitMix64 finaliser of ``x`` (uint64)."""
    z = x + SPLITMIX_GOLDEN
    z = (z ^ (z >> np.uint64(30))) * SPLITMIX_MIX1
    z = (z ^ (z >> np.uint64(27))) * SPLITMIX_MIX2
    z = z ^ (z >> np.uint64(31))
    return (np.float64(z >> np.uint64(11)) + 0.5) / 9007199254740992.0


@njit(nogil=True, cache=True)
def entity_uniforms(keys, width):  # pragma: no cover
    """:func:`dmf.random.entity_uniforms` compiled: the same bits, one pass, no temporaries."""
    n = len(keys)
    first = np.empty((n, width))
    second = np.empty((n, width))
    for i in range(n):
        base = keys[i] * SPLITMIX_MIX2
        for j in range(width):
            counter = base + np.uint64(2 * j)
            first[i, j] = _unit_splitmix(counter)
            second[i, j] = _unit_splitmix(counter + np.uint64(1))
    return first, second
