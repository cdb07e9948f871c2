"""Ingest validation on top of :func:`dmf.read_ratings`: row census and the rating scale.

:func:`dmf.read_ratings` rejects missing ids, NaN and non-numeric ratings and resolves
duplicate (user, item) pairs; this module adds the check that ratings lie within the
data set's scale and counts the input rows so that dropped duplicates can be reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf.columns import ITEM, RATING, TIMESTAMP, USER
from dmf.data.ratings import DuplicatePolicy, read_ratings

logger = logging.getLogger(__name__)

MOVIELENS_SCALE = (0.5, 5.0)
_EXAMPLES = 3
_CENSUS_META = pd.DataFrame({"rows": pd.Series([], dtype="int64"), "out_of_scale": pd.Series([], dtype="int64"),
                             "examples": pd.Series([], dtype=object)})


@dataclass
class ValidatedRatings:
    """Ratings that passed validation.

    Attributes
    ----------
    ratings
        Lazy Dask DataFrame in canonical columns, one row per (user, item), rating float32.
    input_rows
        Rows before duplicates were resolved; ``input_rows - len(ratings)`` rows were dropped.
    rating_scale
        The (low, high) scale the ratings were checked against.
    """

    ratings: dd.DataFrame
    input_rows: int
    rating_scale: tuple[float, float]


def validate_ratings(
    frame: dd.DataFrame,
    *,
    rating_scale: tuple[float, float] = MOVIELENS_SCALE,
    duplicates: DuplicatePolicy = "latest",
    user: str = USER,
    item: str = ITEM,
    rating: str = RATING,
    timestamp: str | None = TIMESTAMP,
) -> ValidatedRatings:
    """Validate canonical ratings: :func:`dmf.read_ratings`, then the scale, before anything is written.

    Parameters
    ----------
    frame
        Dask DataFrame with canonical columns ``user``, ``item``, ``rating`` and optionally ``timestamp``.
    rating_scale
        Inclusive (low, high) range a rating must lie in (MovieLens: 0.5 to 5).
    duplicates
        Policy for repeated (user, item) pairs, passed to :func:`dmf.read_ratings`; the
        default keeps the latest rating by timestamp.
    user, item, rating, timestamp
        Source column names, renamed to the canonical ones by :func:`dmf.read_ratings`.

    Returns
    -------
    ValidatedRatings

    Raises
    ------
    ValueError
        Missing ids, NaN or non-numeric ratings (from :func:`dmf.read_ratings`), or ratings
        outside ``rating_scale``; the message names the column, the count and example rows.
    """
    low, high = (float(bound) for bound in rating_scale)
    if not low < high:
        raise ValueError(f"rating_scale must be (low, high) with low < high, got {rating_scale}")
    ratings = read_ratings(frame, user=user, item=item, rating=rating, timestamp=timestamp, duplicates=duplicates)
    census = frame.map_partitions(_census_partition, rating, low, high, meta=_CENSUS_META).compute()
    input_rows = int(census["rows"].sum())
    out_of_scale = int(census["out_of_scale"].sum())
    if out_of_scale:
        examples = [example for cell in census["examples"] if cell for example in cell][:_EXAMPLES]
        raise ValueError(
            f"column {rating!r} has {out_of_scale} of {input_rows} ratings outside the scale "
            f"[{low:g}, {high:g}], e.g. {examples}; fix the data or pass the data set's "
            "rating_scale=(low, high)"
        )
    logger.info("validated %d input rows; ratings within [%g, %g]", input_rows, low, high)
    return ValidatedRatings(ratings=ratings, input_rows=input_rows, rating_scale=(low, high))


def _census_partition(part: pd.DataFrame, rating: str, low: float, high: float) -> pd.DataFrame:
    values = pd.to_numeric(part[rating], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    outside = (values < low) | (values > high)
    examples = part[outside].head(_EXAMPLES).to_dict("records") if outside.any() else []
    return pd.DataFrame({"rows": [len(part)], "out_of_scale": [int(outside.sum())], "examples": [examples]})
