"""Histograms of ratings and of a model's predictions for them, as one Dask reduction (the
run reports draw them); only the bin counts of each partition reach the client."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf import scheduler
from dmf.columns import ITEM, RATING, USER
from dmf.frames import as_dask_frame, require_columns
from dmf.model.fitted import FittedModel
from dmf.stages.predict import as_scorer, score_pairs

if TYPE_CHECKING:
    from distributed import Client


def rating_histograms(model, ratings: pd.DataFrame | dd.DataFrame, *, bins: int = 20,
                      client: Client | None = None) -> dict:
    """Histograms of the ``rating`` column of ``ratings`` and of ``model``'s predictions for
    the same pairs, over ``bins`` equal bins of the model's training rating range.

    Predictions outside the range (models that do not clip) are counted in the end bins; a
    model whose scores only rank items (``predicts_ratings`` false: implicit feedback, SVD)
    gets no prediction histogram. Pairs whose user or item the model does not know are
    predicted by its ``unknown`` policy and left out when it gives no prediction.

    Returns
    -------
    dict with ``edges`` (``bins + 1`` floats), ``ratings`` and ``predictions`` (``bins`` counts
    each; ``predictions`` is None for ranking models) and ``pairs``.
    """
    ratings = as_dask_frame(ratings, "ratings")
    require_columns(ratings, [USER, ITEM, RATING], "ratings")
    client = scheduler.resolve_client(client)
    scored_model, unknown, clip = as_scorer(model)
    low, high = scored_model.rating_range
    edges = np.linspace(low, high, bins + 1) if high > low else np.linspace(low - 0.5, high + 0.5, bins + 1)
    with_predictions = bool(getattr(model, "predicts_ratings", True))
    meta = pd.DataFrame({name: pd.Series([], dtype="int64") for name in _columns(bins)})

    def count():  # the model is broadcast anew on each attempt
        model_key = scheduler.broadcast(scored_model.without_seen(), client) if with_predictions else None
        counts = ratings.map_partitions(_partition_counts, model_key, unknown, clip, edges, meta=meta)
        return scheduler.compute([counts.sum()], client, what="histograms")[0]

    totals = scheduler.retry_on_worker_loss(count, "histograms", client)
    values = totals.to_numpy(dtype=np.int64)
    return {"edges": [float(edge) for edge in edges], "ratings": values[:bins].tolist(),
            "predictions": values[bins:].tolist() if with_predictions else None, "pairs": int(values[:bins].sum())}


def _columns(bins: int) -> list[str]:
    return [f"rating_{b}" for b in range(bins)] + [f"prediction_{b}" for b in range(bins)]


def _binned(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0]


def _partition_counts(part: pd.DataFrame, model: FittedModel | None, unknown: str, clip: bool,
                      edges: np.ndarray) -> pd.DataFrame:
    bins = len(edges) - 1
    rating_counts = _binned(part[RATING].to_numpy(dtype=np.float64), edges)
    prediction_counts = np.zeros(bins, dtype=np.int64)
    if model is not None:
        prediction, fallback = score_pairs(model, part[USER], part[ITEM], clip)
        usable = ~fallback if unknown in ("nan", "drop") else np.ones(len(part), dtype=bool)
        prediction = prediction[usable]
        prediction_counts = _binned(prediction[np.isfinite(prediction)], edges)
    return pd.DataFrame([np.concatenate([rating_counts, prediction_counts])], columns=_columns(bins))


def top_k_reach(recommendations: dd.DataFrame | pd.DataFrame, catalog_items: int, k: int, *,
                client: Client | None = None) -> dict:
    """How much of the catalog a top-k reaches: the distinct items recommended to anyone, and
    a histogram of how many users each of them is recommended to (bins 1, 2–3, 4–7, …).

    Returns
    -------
    dict with ``k``, ``catalog_items``, ``recommended_items``, ``coverage`` (their ratio) and
    ``users_per_item`` (``edges``, ``counts``).
    """
    recommendations = as_dask_frame(recommendations, "recommendations")
    require_columns(recommendations, [USER, ITEM], "recommendations")
    client = scheduler.resolve_client(client)
    (per_item,) = scheduler.compute([recommendations[ITEM].value_counts()], client)
    users = per_item.to_numpy(dtype=np.int64)
    top = int(users.max()) if len(users) else 1
    edges = 2.0 ** np.arange(0, int(np.ceil(np.log2(top + 1))) + 1)
    counts = np.histogram(users, bins=edges)[0] if len(users) else np.zeros(len(edges) - 1, dtype=np.int64)
    return {"k": int(k), "catalog_items": int(catalog_items), "recommended_items": int(len(users)),
            "coverage": len(users) / catalog_items if catalog_items else None,
            "users_per_item": {"edges": edges.tolist(), "counts": counts.tolist()}}
