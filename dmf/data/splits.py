"""Train/test splits of a ratings Dask DataFrame, identical for any partitioning.

- :func:`random_split`: a rating is in test when a counter-based uniform of (seed, user id
  hash, item id hash) falls below the fraction (:mod:`dmf.random`), so the split depends on
  the seed and the pair only, for integer and string ids alike;
- :func:`temporal_split`: each user's latest ``test_count`` ratings (or latest fraction)
  by timestamp, ties broken by item id; rows are shuffled by user so each user is whole;
- :func:`fold_splits`: k disjoint folds of the pairs (GroupLens' u1..u5 style): fold ``f``'s
  test set is the pairs whose counter-based uniform falls in ``[f/k, (f+1)/k)``;

The ``mark_*`` functions add a boolean ``is_test`` column instead of splitting, so that a
writer can produce train and test in one pass.
"""

from __future__ import annotations

import logging

import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf.columns import ITEM, TIMESTAMP, USER
from dmf.random import SPLIT_STREAM, counter_uniform, id_hashes

logger = logging.getLogger(__name__)

IS_TEST = "is_test"


def mark_random(ratings: dd.DataFrame, test_fraction: float, seed: int) -> dd.DataFrame:
    """``ratings`` with a boolean ``is_test`` column: about ``test_fraction`` of rows, chosen by (seed, user, item).

    Each (user, item) pair's membership is a function of the seed and the pair only, so it is the
    same for any partition count; the test share is binomial around ``test_fraction``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    meta = ratings._meta.assign(**{IS_TEST: pd.Series([], dtype=bool)})
    return ratings.map_partitions(_mark_random_partition, float(test_fraction), int(seed), meta=meta)


def holdout_mask(part: pd.DataFrame, test_fraction: float, seed: int) -> np.ndarray:
    """True for the rows of a pandas frame that :func:`mark_random` puts in test: a
    counter-based uniform of (seed, user id hash, item id hash) below ``test_fraction``."""
    return counter_uniform(seed, SPLIT_STREAM, id_hashes(part[USER]), id_hashes(part[ITEM])) < test_fraction


def _mark_random_partition(part: pd.DataFrame, test_fraction: float, seed: int) -> pd.DataFrame:
    return part.assign(**{IS_TEST: holdout_mask(part, test_fraction, seed)})


def mark_temporal(
    ratings: dd.DataFrame,
    *,
    test_count: int | None = None,
    test_fraction: float | None = None,
    min_train: int = 1,
) -> dd.DataFrame:
    """``ratings`` with ``is_test`` true on each user's latest ratings by timestamp.

    Parameters
    ----------
    ratings
        Canonical ratings with a ``timestamp`` column, one row per (user, item).
    test_count, test_fraction
        Exactly one: the latest ``test_count`` ratings of each user, or the latest
        ``round(test_fraction * n_user_ratings)``.
    min_train
        Ratings each user keeps in train whatever ``test_count`` says (users with fewer
        ratings than this have none in test).

    Returns
    -------
    dask.dataframe.DataFrame
        Shuffled by user (each user's rows in one partition); ties in timestamp are broken
        by item id, so the marks depend on the data only.
    """
    if (test_count is None) == (test_fraction is None):
        raise ValueError("pass exactly one of test_count (ratings per user) or test_fraction")
    if test_count is not None and test_count < 1:
        raise ValueError(f"test_count must be at least 1, got {test_count}")
    if test_fraction is not None and not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    if min_train < 0:
        raise ValueError(f"min_train must be non-negative, got {min_train}")
    if TIMESTAMP not in ratings.columns:
        raise ValueError(f"a temporal split needs a {TIMESTAMP!r} column; columns are {list(ratings.columns)}")
    meta = ratings._meta.assign(**{IS_TEST: pd.Series([], dtype=bool)})
    by_user = ratings.shuffle(on=USER)
    return by_user.map_partitions(_mark_latest_partition, test_count, test_fraction, min_train, meta=meta)


def _mark_latest_partition(part: pd.DataFrame, test_count: int | None, test_fraction: float | None,
                           min_train: int) -> pd.DataFrame:
    ordered = part.sort_values([USER, TIMESTAMP, ITEM], kind="stable", ignore_index=True)
    group = ordered.groupby(USER, sort=False)[ITEM]
    sizes = group.transform("size").to_numpy()
    from_latest = sizes - 1 - group.cumcount().to_numpy()
    if test_count is not None:
        wanted = np.full(len(ordered), test_count)
    else:
        wanted = np.floor(test_fraction * sizes + 0.5).astype(np.int64)
    wanted = np.minimum(wanted, np.maximum(sizes - min_train, 0))
    return ordered.assign(**{IS_TEST: from_latest < wanted})


def split_marked(marked: dd.DataFrame) -> tuple[dd.DataFrame, dd.DataFrame]:
    """(train, test) frames from a frame with an ``is_test`` column, which they drop."""
    train = marked[~marked[IS_TEST]].drop(columns=IS_TEST)
    test = marked[marked[IS_TEST]].drop(columns=IS_TEST)
    return train, test


def random_split(ratings: dd.DataFrame, test_fraction: float, seed: int) -> tuple[dd.DataFrame, dd.DataFrame]:
    """(train, test) by :func:`mark_random`."""
    return split_marked(mark_random(ratings, test_fraction, seed))


def temporal_split(ratings: dd.DataFrame, *, test_count: int | None = None, test_fraction: float | None = None,
                   min_train: int = 1) -> tuple[dd.DataFrame, dd.DataFrame]:
    """(train, test) by :func:`mark_temporal`."""
    return split_marked(mark_temporal(ratings, test_count=test_count, test_fraction=test_fraction,
                                      min_train=min_train))


def mark_fold(ratings: dd.DataFrame, k: int, seed: int) -> dd.DataFrame:
    """``ratings`` with an int column ``fold`` in ``0 .. k-1``, a function of (seed, user, item)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    meta = ratings._meta.assign(fold=pd.Series([], dtype=np.int64))
    return ratings.map_partitions(_mark_fold_partition, k, int(seed), meta=meta)


def _mark_fold_partition(part: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    uniform = counter_uniform(seed, SPLIT_STREAM, id_hashes(part[USER]), id_hashes(part[ITEM]))
    return part.assign(fold=np.minimum((uniform * k).astype(np.int64), k - 1))


def fold_splits(ratings: dd.DataFrame, k: int, seed: int) -> list[tuple[dd.DataFrame, dd.DataFrame]]:
    """k (train, test) pairs whose test sets partition the ratings (see :func:`mark_fold`)."""
    marked = mark_fold(ratings, k, seed)
    return [(marked[marked["fold"] != f].drop(columns="fold"), marked[marked["fold"] == f].drop(columns="fold"))
            for f in range(k)]


def without_pairs(ratings: dd.DataFrame, held_out: dd.DataFrame) -> dd.DataFrame:
    """``ratings`` without the rows whose (user, item) pair occurs in ``held_out`` (a prepared
    test set: its pairs never train)."""
    marker = held_out[[USER, ITEM]].drop_duplicates().assign(_held_out=True)
    merged = ratings.merge(marker, on=[USER, ITEM], how="left")
    return merged[merged["_held_out"].isna()].drop(columns="_held_out")
