"""Validators shared by every stage: what kind of table was given, and which columns it has."""

from __future__ import annotations

import dask.dataframe as dd
import pandas as pd

#: Rows per partition when a pandas table becomes a Dask one.
ROWS_PER_PARTITION = 1_000_000


def as_dask_frame(frame, what: str, npartitions: int | None = None) -> dd.DataFrame:
    """``frame`` as a Dask DataFrame (a pandas one is split into ``npartitions``, by default
    million-row partitions).

    Raises ``TypeError`` naming ``what`` for anything else.
    """
    if isinstance(frame, dd.DataFrame):
        return frame
    if isinstance(frame, pd.DataFrame):
        npartitions = npartitions or max(1, -(-len(frame) // ROWS_PER_PARTITION))
        return dd.from_pandas(frame, npartitions=npartitions, sort=False)
    raise TypeError(f"{what} must be a pandas or Dask DataFrame, got {type(frame).__name__}")


def require_columns(frame, columns: list[str], what: str) -> None:
    """Raise ``ValueError`` naming the first of ``columns`` that ``frame`` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} has no column {missing[0]!r} (columns: {list(frame.columns)})")
