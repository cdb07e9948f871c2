"""Prediction stage: the predicted rating of (user, item) pairs under a fitted model.

The model (without its training interactions) reaches the workers once per stage as one
graph key; partitions are scored in parallel.
"""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf.columns import ITEM, PREDICTION, USER
from dmf.model.fitted import FittedModel
from dmf.model.params import UNKNOWN_POLICIES

PREDICTION_META = pd.DataFrame({USER: [], ITEM: [], PREDICTION: pd.Series([], dtype="float32")})


def predict_ratings(row_factors: np.ndarray, col_factors: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                    offset: np.ndarray | float = 0.0, chunk: int = 1 << 16) -> np.ndarray:
    """``offset + sum(row_factors[rows] * col_factors[cols], axis=1)`` as float64.

    The dot products run in the factors' dtype (float32 for models), in cache-sized chunks.
    """
    out = np.empty(len(rows), dtype=np.float64)
    for begin in range(0, len(rows), chunk):
        end = begin + chunk
        out[begin:end] = np.einsum("ij,ij->i", row_factors[rows[begin:end]], col_factors[cols[begin:end]])
    return out + offset


def score_pairs(model: FittedModel, users, items, clip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Predictions (float64) for arrays of external ids, and a mask of the pairs that fell back
    to the bias model because the user or the item is unknown (μ plus whichever bias is
    known; 0 for a model without biases). ``clip`` clips to the training rating range."""
    user_index = model.user_ids.index_of(users)
    item_index = model.item_ids.index_of(items)
    known_user, known_item = user_index >= 0, item_index >= 0
    both = known_user & known_item
    prediction = np.full(len(user_index), model.offset, dtype=np.float64)
    if model.has_biases:
        prediction[known_user] += model.user_biases[user_index[known_user]]
        prediction[known_item] += model.item_biases[item_index[known_item]]
    prediction[both] += predict_ratings(model.user_factors, model.item_factors, user_index[both], item_index[both])
    if clip:
        np.clip(prediction, *model.rating_range, out=prediction)
    return prediction, ~both


def as_scorer(value) -> tuple[FittedModel, str, bool] | None:
    """``(model, unknown policy, clip)`` of a fitted estimator (its current ``unknown`` and
    ``clip``) or of a :class:`FittedModel` (the parameters it was trained with); None for
    anything else."""
    if isinstance(value, FittedModel):
        return value, value.params.get("unknown", "bias"), bool(value.params.get("clip", False))
    model = getattr(value, "model_", None)
    if isinstance(model, FittedModel):
        return model, getattr(value, "unknown", "bias"), bool(getattr(value, "clip", False))
    return None


def check_policy(unknown: str) -> None:
    if unknown not in UNKNOWN_POLICIES:
        raise ValueError(f"unknown must be one of {UNKNOWN_POLICIES}, got {unknown!r}")


def predict_partition(part: pd.DataFrame, model: FittedModel, unknown: str, clip: bool) -> pd.DataFrame:
    prediction, fallback = score_pairs(model, part[USER], part[ITEM], clip)
    if unknown == "nan":
        prediction[fallback] = np.nan
    out = pd.DataFrame({USER: part[USER].to_numpy(), ITEM: part[ITEM].to_numpy(), PREDICTION: prediction.astype(np.float32)})
    return out[~fallback] if unknown == "drop" else out


def predict_stage(model_key, pairs: dd.DataFrame, unknown: str, clip: bool) -> dd.DataFrame:
    """Dask stage: ``user, item, prediction`` for every row of ``pairs`` (``model_key``: the
    broadcast :class:`FittedModel`)."""
    check_policy(unknown)
    meta = PREDICTION_META.astype({USER: pairs._meta[USER].dtype, ITEM: pairs._meta[ITEM].dtype})
    return pairs.map_partitions(predict_partition, model_key, unknown, clip, meta=meta)
