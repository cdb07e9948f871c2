"""The one source of hashing and randomness in dmf: counter-based, never stateful.

Every random value is a pure function of (seed, stream, entity, counter), so results depend
on the seed only, never on partitions, blocks, workers or the order of work:

- :func:`id_hashes` is *the* id hash: 64 bits per external id that depend on that id alone
  (integers: the value itself; strings: BLAKE2b). Initial factors, splits and the nightly
  hold-out all key their randomness on it.
- :func:`counter_bits`, :func:`counter_uniform`, :func:`counter_normal`: SplitMix64
  finalisers of the counter, vectorised with NumPy (splits, synthetic data).
- :func:`entity_normals`: a row of normals per entity (initial factor vectors).

Streams separate independent uses of one seed; they are listed here so that no two uses
share one by accident.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

#: Streams of :func:`entity_normals` and the counter functions, one per use.
USER_FACTOR_STREAM = 1
ITEM_FACTOR_STREAM = 2
SPLIT_STREAM = 0x5B1D
#: DSGD: the order of the ratings within a grid cell, and the order of the strata per epoch.
SGD_ORDER_STREAM = 0x56D1
STRATUM_STREAM = 0x56D2
#: SVD: the random test matrix of the range finder.
SVD_TEST_STREAM = 0x5FD0
#: BPMF: the noise of the Gibbs draws, stream ``BPMF_NOISE_STREAM + 2·sweep + side`` (above
#: every other stream for any number of sweeps below 2**40).
BPMF_NOISE_STREAM = 0xB9F0 << 40

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser of uint64 values (a bijection with good avalanche)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def id_hashes(ids) -> np.ndarray:
    """The id hash (uint64 per id): integers map to themselves, strings to BLAKE2b-64 of
    their UTF-8 text. A hash depends on its id alone, never on the other ids.

    Strings are hashed once per distinct value, so a column of repeated ids (ratings) costs
    one hash per distinct id.
    """
    values = pd.Index(ids) if not isinstance(ids, pd.Index) else ids
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.to_numpy().astype(np.uint64)
    codes, uniques = pd.factorize(values)
    hashed = np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little") for v in uniques),
        dtype=np.uint64,
        count=len(uniques),
    )
    return hashed[codes]


def _stream_base(seed: int, stream: int) -> np.uint64:
    with np.errstate(over="ignore"):
        return splitmix64(np.array([int(seed) % 2**64], dtype=np.uint64) ^ (np.uint64(stream) * _MIX1))[0]


def counter_bits(seed: int, stream: int, entity: np.ndarray, counter: np.ndarray | int = 0) -> np.ndarray:
    """64 random bits (uint64) per element, a function of (seed, stream, entity, counter) only.

    ``entity`` and ``counter`` broadcast against each other; both are read as uint64.
    """
    with np.errstate(over="ignore"):
        keys = splitmix64(np.asarray(entity).astype(np.uint64) ^ _stream_base(seed, stream))
        return splitmix64(keys ^ (np.asarray(counter).astype(np.uint64) * _MIX2))


def _unit_interval(bits: np.ndarray) -> np.ndarray:
    """Floats in the open interval (0, 1) from the top 53 of 64 random bits."""
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def counter_uniform(seed: int, stream: int, entity: np.ndarray, counter: np.ndarray | int = 0) -> np.ndarray:
    """Uniform floats in (0, 1) from :func:`counter_bits`."""
    return _unit_interval(counter_bits(seed, stream, entity, counter))


def counter_normal(seed: int, stream: int, entity: np.ndarray, counter: np.ndarray | int = 0) -> np.ndarray:
    """Standard normals (Box-Muller) from two counter-based uniforms per element."""
    counter = np.asarray(counter).astype(np.uint64) * np.uint64(2)
    first = counter_uniform(seed, stream, entity, counter)
    second = counter_uniform(seed, stream, entity, counter + np.uint64(1))
    return np.sqrt(-2.0 * np.log(first)) * np.cos(2.0 * np.pi * second)


def entity_normals(seed: int, stream: int, hashes: np.ndarray, width: int) -> np.ndarray:
    """Standard normal matrix (len(hashes), width); row i is a function of (seed, stream,
    hashes[i]) only. ``hashes`` come from :func:`id_hashes`."""
    with np.errstate(over="ignore"):
        entity_keys = splitmix64(np.asarray(hashes, dtype=np.uint64) ^ _stream_base(seed, stream))
        position = np.arange(width, dtype=np.uint64) * np.uint64(2)
        keys = entity_keys[:, None] * _MIX2 + position[None, :]
    first = _unit_interval(splitmix64(keys))
    second = _unit_interval(splitmix64(keys + np.uint64(1)))
    return np.sqrt(-2.0 * np.log(first)) * np.cos(2.0 * np.pi * second)
