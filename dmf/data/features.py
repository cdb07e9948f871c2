"""Side information: tables of user or item attributes turned into numeric feature matrices.

One row per id. Numeric and boolean columns are standardized (missing values become the
column mean), text and categorical columns one-hot encoded, columns of lists (such as
MovieLens genres) multi-hot encoded. Columns with one value only carry no information and
are left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def encode_features(features: pd.DataFrame, id_column: str) -> tuple[pd.Index, np.ndarray, list[str]]:
    """``(ids, matrix float64 (n, d), feature names)`` of an attribute table keyed by ``id_column``."""
    if not isinstance(features, pd.DataFrame):
        raise TypeError(f"features must be a pandas DataFrame with an {id_column!r} column, got {type(features).__name__}")
    if id_column not in features.columns:
        raise ValueError(f"features have no column {id_column!r} (columns: {list(features.columns)})")
    features = features.reset_index(drop=True)
    ids = pd.Index(features[id_column])
    if not ids.is_unique:
        repeated = ids[ids.duplicated()].unique()
        raise ValueError(f"features repeat {len(repeated)} {id_column} ids, e.g. {list(repeated[:3])}; one row per id")
    blocks, names = [], []
    for column in features.columns.drop(id_column):
        values = features[column]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            numeric = values.astype(np.float64)
            numeric = numeric.fillna(numeric.mean())
            spread = numeric.std(ddof=0)
            if not spread > 0:
                continue
            blocks.append(((numeric - numeric.mean()) / spread).to_numpy()[:, None])
            names.append(str(column))
        elif values.map(lambda v: isinstance(v, (list, tuple, set, np.ndarray))).any():
            lists = values.map(lambda v: list(v) if isinstance(v, (list, tuple, set, np.ndarray)) else [])
            exploded = lists.explode().dropna()
            labels = sorted(exploded.unique(), key=str)
            hot = np.zeros((len(values), len(labels)))
            hot[exploded.index.map(features.index.get_loc), pd.Index(labels).get_indexer(exploded)] = 1.0
            blocks.append(hot)
            names.extend(f"{column}={label}" for label in labels)
        else:
            labels = sorted(values.dropna().unique(), key=str)
            if len(labels) < 2:
                continue
            codes = pd.Categorical(values, categories=labels).codes  # -1 for missing values
            hot = np.zeros((len(values), len(labels)))
            hot[np.flatnonzero(codes >= 0), codes[codes >= 0]] = 1.0
            blocks.append(hot)
            names.extend(f"{column}={label}" for label in labels)
    if not blocks:
        raise ValueError(f"features carry no usable column (columns: {list(features.columns)})")
    return ids, np.hstack(blocks), names
