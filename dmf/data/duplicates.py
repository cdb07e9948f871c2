"""Repeated (user, item) pairs of a ratings table: found by 64-bit pair hashes, resolved by
moving only their rows.

:func:`repeated_pair_hashes` runs inside ``read_ratings``' validation pass: each partition
sends its sorted pair hashes (8 bytes a rating, no rows) to range buckets, which return the
hashes that repeat. :func:`resolve_duplicates` then raises (``"error"``) or keeps one row per
pair (``"latest"``, ``"mean"``); the rows of every other pair stay in their partitions.
"""

from __future__ import annotations

import logging
from typing import Literal

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf import scheduler
from dmf.columns import ITEM, RATING, TIMESTAMP, USER
from dmf.frames import ROWS_PER_PARTITION

logger = logging.getLogger("dmf.data.ratings")

DuplicatePolicy = Literal["error", "latest", "mean"]
DUPLICATE_POLICIES = ("error", "latest", "mean")
_EXAMPLES = 3


def resolve_duplicates(frame: dd.DataFrame, repeated: np.ndarray, policy: DuplicatePolicy) -> dd.DataFrame:
    """``frame`` with one row per (user, item) pair, given its :func:`repeated_pair_hashes`.

    ``"error"`` (and ``"latest"`` without timestamps) counts the repeated pairs exactly, in a
    pass over the rows whose hash repeats, and raises naming the count and examples; a hash
    shared by two different pairs alone is no error. ``"latest"``/``"mean"`` keep the rows of
    other pairs in place and resolve the candidate rows in one partition (or shuffled among
    themselves beyond a partition's worth).
    """
    if not len(repeated):
        return frame
    tagged = frame.map_partitions(_tag_repeated, dask.delayed(repeated, pure=True),
                                  meta=frame._meta.assign(**{_REPEATED: pd.Series([], dtype=bool)}))
    candidates = tagged[tagged[_REPEATED]].drop(columns=_REPEATED)
    if policy == "error" or (policy == "latest" and TIMESTAMP not in frame.columns):
        n_pairs, extra_rows, examples = _exact_repeats(candidates)
        if n_pairs and policy == "error":
            raise ValueError(
                f"ratings hold {n_pairs} (user, item) pairs that occur more than once "
                f"({extra_rows} extra rows), e.g. {examples}; pass duplicates='latest' or "
                "duplicates='mean' to keep one rating per pair"
            )
        if n_pairs:
            raise ValueError(
                f"ratings hold {n_pairs} repeated (user, item) pairs, e.g. {examples}, and "
                "duplicates='latest' needs a timestamp column to pick one; pass timestamp=<column name> "
                "or duplicates='mean'"
            )
        return frame  # only equal 64-bit hashes of different pairs
    # counted by hash: exact unless two different pairs share a 64-bit hash (which then pass
    # through the resolution unchanged)
    n_rows = int(repeated[:, 1].sum())
    logger.info("resolving %d duplicated (user, item) pairs (%d extra rows) by %r",
                len(repeated), n_rows - len(repeated), policy)
    kept = tagged[~tagged[_REPEATED]].drop(columns=_REPEATED)
    n_parts = -(-n_rows // ROWS_PER_PARTITION)
    together = (candidates.repartition(npartitions=1) if n_parts == 1
                else candidates.shuffle(on=[USER, ITEM], npartitions=n_parts))
    return dd.concat([kept, together.map_partitions(_resolve_pairs, policy, meta=frame._meta)])


def _pair_hashes(part: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash of each row's (user, item) pair, the same in every process and for every
    integer width (int32 ids hash as int64)."""
    pairs = part[[USER, ITEM]]
    widen = {c: "int64" for c in (USER, ITEM)  # NumPy integers only: nullable ones may hold NA
             if isinstance(pairs[c].dtype, np.dtype) and pairs[c].dtype.kind in "iu" and pairs[c].dtype != "int64"}
    return pd.util.hash_pandas_object(pairs.astype(widen) if widen else pairs, index=False).to_numpy()


_HASH_BUCKETS = 16


def _hash_pieces(part: pd.DataFrame, n_buckets: int) -> list:
    """A partition's sorted pair hashes cut into ``n_buckets`` equal ranges of the hash space."""
    hashes = np.sort(_pair_hashes(part))
    inner = np.array([(b << 64) // n_buckets for b in range(1, n_buckets)], dtype=np.uint64)
    cuts = np.concatenate([[0], np.searchsorted(hashes, inner), [len(hashes)]])
    return [hashes[cuts[b]:cuts[b + 1]] for b in range(n_buckets)]


def _repeated_in_bucket(*pieces: np.ndarray) -> np.ndarray:
    """The hashes that occur more than once among one bucket's pieces, with their row counts
    (``[hash, count]`` rows, uint64)."""
    hashes = np.sort(np.concatenate(pieces)) if pieces else np.empty(0, np.uint64)
    same = hashes[1:] == hashes[:-1]
    values, counts = np.unique(hashes[1:][same], return_counts=True)
    return np.stack([values, counts.astype(np.uint64) + 1], axis=1)


def repeated_pair_hashes(parts: list):
    """Delayed sorted array of the pair hashes that occur in more than one row: each partition
    sends its sorted hashes, 8 bytes a rating, to ``_HASH_BUCKETS`` range buckets; no rows move."""
    n_buckets = max(1, min(_HASH_BUCKETS, len(parts)))
    split = dask.delayed(_hash_pieces, nout=n_buckets, pure=True)
    pieces = [split(part, n_buckets) for part in parts]
    bucket = dask.delayed(_repeated_in_bucket, pure=True)
    repeated = [bucket(*[piece[b] for piece in pieces]) for b in range(n_buckets)]
    return dask.delayed(_joined_repeats, pure=True)(*repeated)


def _joined_repeats(*buckets: np.ndarray) -> np.ndarray:
    joined = np.concatenate(buckets) if buckets else np.empty((0, 2), np.uint64)
    return joined[np.argsort(joined[:, 0])]


_REPEATED = "_dmf_repeated_pair"
_FILTER_BITS = 22


def _tag_repeated(part: pd.DataFrame, repeated: np.ndarray) -> pd.DataFrame:
    """``part`` with a boolean column: is the row's pair hash among ``repeated``'s hashes. A
    bitmap of the hashes' low bits rules out almost every row before the exact binary search."""
    hashes = repeated[:, 0]
    pair = _pair_hashes(part)
    bitmap = np.zeros(1 << _FILTER_BITS, dtype=bool)
    low = np.uint64((1 << _FILTER_BITS) - 1)
    bitmap[hashes & low] = True
    maybe = np.flatnonzero(bitmap[pair & low])
    position = np.minimum(np.searchsorted(hashes, pair[maybe]), len(hashes) - 1)
    inside = np.zeros(len(part), dtype=bool)
    inside[maybe[hashes[position] == pair[maybe]]] = True
    return part.assign(**{_REPEATED: inside})


def _exact_repeats(candidates: dd.DataFrame) -> tuple[int, int, str]:
    """(repeated pairs, extra rows, a few examples) among the candidate rows, counted by pair."""
    pair_counts = candidates[[USER, ITEM]].assign(occurrences=1).groupby([USER, ITEM])["occurrences"].sum()
    repeated = pair_counts[pair_counts > 1]
    total, n_pairs, examples = scheduler.compute(
        [repeated.sum(), repeated.size, repeated.head(_EXAMPLES, npartitions=-1)],
        scheduler.resolve_client(None), what="duplicates",
    )
    return int(n_pairs), int(total) - int(n_pairs), ", ".join(f"({u!r}, {i!r}) x{n}" for (u, i), n in examples.items())


def _resolve_pairs(part: pd.DataFrame, policy: DuplicatePolicy) -> pd.DataFrame:
    """Keep one row per (user, item) in a partition that holds all rows of its pairs."""
    if policy == "latest":
        ordered = part.sort_values([USER, ITEM, TIMESTAMP, RATING], kind="stable")
        return ordered.drop_duplicates([USER, ITEM], keep="last")
    aggregations = {RATING: (RATING, "mean")}
    if TIMESTAMP in part.columns:
        aggregations[TIMESTAMP] = (TIMESTAMP, "max")
    resolved = part.groupby([USER, ITEM], sort=True, as_index=False).agg(**aggregations)
    return resolved.astype({RATING: "float32"})[list(part.columns)]
