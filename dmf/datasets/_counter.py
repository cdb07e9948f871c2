"""Counter-based random numbers: values that are pure functions of (seed, stream, entity, counter).

A value never depends on how many other values were drawn before it, so data generated per
partition is identical for any partitioning. SplitMix64 finalisers, vectorised with NumPy.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def counter_bits(seed: int, stream: int, entity: np.ndarray, counter: np.ndarray | int = 0) -> np.ndarray:
    """64 random bits (uint64) per element, a function of (seed, stream, entity, counter) only.

    ``entity`` and ``counter`` broadcast against each other; both are read as uint64.
    """
    with np.errstate(over="ignore"):
        base = _splitmix64(np.array([int(seed) % 2**64], dtype=np.uint64) ^ (np.uint64(stream) * _MIX1))[0]
        keys = _splitmix64(np.asarray(entity).astype(np.uint64) ^ base)
        return _splitmix64(keys ^ (np.asarray(counter).astype(np.uint64) * _MIX2))


def counter_uniform(seed: int, stream: int, entity: np.ndarray, counter: np.ndarray | int = 0) -> np.ndarray:
    """Uniform floats in the open interval (0, 1) from :func:`counter_bits` (53 random bits)."""
    bits = counter_bits(seed, stream, entity, counter)
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def counter_normal(seed: int, stream: int, entity: np.ndarray, counter: np.ndarray | int = 0) -> np.ndarray:
    """Standard normals (Box-Muller) from two counter-based uniforms per element."""
    counter = np.asarray(counter).astype(np.uint64) * np.uint64(2)
    first = counter_uniform(seed, stream, entity, counter)
    second = counter_uniform(seed, stream, entity, counter + np.uint64(1))
    return np.sqrt(-2.0 * np.log(first)) * np.cos(2.0 * np.pi * second)
