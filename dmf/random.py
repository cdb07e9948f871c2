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

#: SplitMix64's constants (also the compiled draws', :mod:`dmf.engine._compiled_random`).
SPLITMIX_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
SPLITMIX_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
SPLITMIX_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser of uint64 values (a bijection with good avalanche)."""
    with np.errstate(over="ignore"):
        z = x + SPLITMIX_GOLDEN
        z = (z ^ (z >> np.uint64(30))) * SPLITMIX_MIX1
        z = (z ^ (z >> np.uint64(27))) * SPLITMIX_MIX2
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
        return splitmix64(np.array([int(seed) % 2**64], dtype=np.uint64) ^ (np.uint64(stream) * SPLITMIX_MIX1))[0]


def counter_bits(seed: int, stream: int, entity: np.ndarray, counter: np.ndarray | int = 0) -> np.ndarray:
    """64 random bits (uint64) per element, a function of (seed, stream, entity, counter) only.

    ``entity`` and ``counter`` broadcast against each other; both are read as uint64.
    """
    with np.errstate(over="ignore"):
        keys = splitmix64(np.asarray(entity).astype(np.uint64) ^ _stream_base(seed, stream))
        return splitmix64(keys ^ (np.asarray(counter).astype(np.uint64) * SPLITMIX_MIX2))


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


def entity_keys(seed: int, stream: int, hashes: np.ndarray) -> np.ndarray:
    """The key (uint64) of each entity's row of :func:`entity_normals`."""
    with np.errstate(over="ignore"):
        return splitmix64(np.asarray(hashes, dtype=np.uint64) ^ _stream_base(seed, stream))


def entity_uniforms(keys: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The two uniform matrices (len(keys), width) behind :func:`entity_normals`: entry ``j``
    of a row draws from ``key·MIX2 + 2j`` and the next counter. The NumPy reference of the
    compiled :func:`dmf.engine._compiled_random.entity_uniforms` (the same bits)."""
    with np.errstate(over="ignore"):
        position = np.arange(width, dtype=np.uint64) * np.uint64(2)
        counters = keys[:, None] * SPLITMIX_MIX2 + position[None, :]
        return _unit_interval(splitmix64(counters)), _unit_interval(splitmix64(counters + np.uint64(1)))


def box_muller(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Standard normals from two uniforms in (0, 1) per entry (one Box-Muller branch)."""
    return np.sqrt(-2.0 * np.log(first)) * np.cos(2.0 * np.pi * second)


def entity_normals(seed: int, stream: int, hashes: np.ndarray, width: int) -> np.ndarray:
    """Standard normal matrix (len(hashes), width); row i is a function of (seed, stream,
    hashes[i]) only. ``hashes`` come from :func:`id_hashes`. In NumPy; the engine draws the
    same bits compiled (:func:`dmf.engine.kernels.seeded_normals`)."""
    return box_muller(*entity_uniforms(entity_keys(seed, stream, hashes), width))
