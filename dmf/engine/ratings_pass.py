"""The one pass over the ratings that a fit starts with: the distinct user and item ids (the
vocabularies) and the ratings' sum, count, minimum and maximum, one task per partition
merged in a tree, so that only small results reach the client."""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf.columns import ITEM, RATING, USER


def partition_ids_and_stats(part: pd.DataFrame) -> tuple:
    """A partition's distinct user ids, distinct item ids and ratings' (sum, count, min, max)."""
    values = part[RATING].to_numpy(dtype=np.float64)
    stats = (float(values.sum()), len(values), float(values.min()), float(values.max())) if len(values) else (0.0, 0, np.inf, -np.inf)
    return pd.unique(part[USER].to_numpy()), pd.unique(part[ITEM].to_numpy()), stats


def merge_ids_and_stats(parts: list) -> tuple:
    """Merge :func:`partition_ids_and_stats` results (of partitions, or of earlier merges)."""
    users = pd.unique(np.concatenate([p[0] for p in parts]))
    items = pd.unique(np.concatenate([p[1] for p in parts]))
    stats = [p[2] for p in parts]
    return users, items, (sum(s[0] for s in stats), sum(s[1] for s in stats), min(s[2] for s in stats),
                          max(s[3] for s in stats))


def ids_and_stats(ratings: dd.DataFrame, fan_in: int = 16):
    """Delayed (user ids, item ids, (sum, count, min, max)) of ``ratings``: one task per
    partition, merged in a tree of ``fan_in``."""
    level = [dask.delayed(partition_ids_and_stats, pure=True)(part) for part in ratings.to_delayed()]
    merge = dask.delayed(merge_ids_and_stats, pure=True)
    while len(level) > 1:
        level = [merge(level[i : i + fan_in]) for i in range(0, len(level), fan_in)]
    return level[0]  # a Dask DataFrame has at least one partition
