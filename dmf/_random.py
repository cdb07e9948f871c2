"""Counter-based randomness: values that depend on (seed, stream, entity, position) only.

Initial factors must not depend on blocks, partitions or workers, so each entity's vector is
a pure function of the seed and the entity's id hash: a SplitMix64 hash of the counter,
turned into normals by Box-Muller. Vectorised over entities, no per-entity Python loop.
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


def _uniform(keys: np.ndarray) -> np.ndarray:
    """Uniform floats in (0, 1) from uint64 keys (53 random bits)."""
    return ((_splitmix64(keys) >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def entity_normals(seed: int, stream: int, id_hashes: np.ndarray, width: int) -> np.ndarray:
    """Standard normal matrix (len(id_hashes), width), row i a function of (seed, stream, id i).

    ``stream`` separates independent uses (e.g. user vs item factors).
    """
    with np.errstate(over="ignore"):
        base = _splitmix64(np.asarray([seed], dtype=np.uint64) ^ (np.uint64(stream) * _MIX1))[0]
        entity_keys = _splitmix64(np.asarray(id_hashes, dtype=np.uint64) ^ base)
        position = np.arange(width, dtype=np.uint64) * np.uint64(2)
        keys = entity_keys[:, None] * _MIX2 + position[None, :]
    u1 = _uniform(keys)
    u2 = _uniform(keys + np.uint64(1))
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
