"""Rating-prediction metrics as Dask reductions of mergeable partials.

Each partition contributes (sum of squared errors, sum of absolute errors, count, fallback
count); only those four numbers per partition reach the client.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf import scheduler
from dmf.columns import ITEM, PREDICTION, RATING, USER
from dmf.frames import as_dask_frame, require_columns
from dmf.model.fitted import FittedModel
from dmf.stages.predict import as_scorer, score_pairs

if TYPE_CHECKING:
    from distributed import Client

_PARTIAL_COLUMNS = ["squared_error", "absolute_error", "count", "fallback", "dropped"]
_PARTIAL_META = pd.DataFrame({c: pd.Series([], dtype="float64") for c in _PARTIAL_COLUMNS})


class Metric(float):
    """A metric value (a float) that also carries how it was computed.

    Attributes
    ----------
    count : int
        Test pairs that entered the metric.
    n_fallback : int or None
        Pairs whose user or item was unknown to the model and were predicted by the bias
        model (None when predictions were given instead of a model).
    n_dropped : int
        Pairs left out because the model's ``unknown="nan"`` or ``"drop"`` policy gave them
        no prediction.
    """

    def __new__(cls, value: float, count: int, n_fallback: int | None, n_dropped: int = 0):
        metric = super().__new__(cls, value)
        metric.count, metric.n_fallback, metric.n_dropped = count, n_fallback, n_dropped
        return metric

    def __repr__(self) -> str:
        return f"Metric({float(self)!r}, count={self.count}, n_fallback={self.n_fallback}, n_dropped={self.n_dropped})"


def _model_partials(part: pd.DataFrame, model: FittedModel, unknown: str, clip: bool) -> pd.DataFrame:
    prediction, fallback = score_pairs(model, part[USER], part[ITEM], clip)
    usable = ~fallback if unknown in ("nan", "drop") else np.ones(len(part), dtype=bool)
    _refuse_non_finite(part[usable], prediction[usable], part[RATING].to_numpy(dtype=np.float64)[usable])
    errors = prediction[usable] - part[RATING].to_numpy(dtype=np.float64)[usable]
    return _partials(errors, int(fallback[usable].sum()), int((~usable).sum()))


def _refuse_non_finite(part: pd.DataFrame, prediction: np.ndarray, rating: np.ndarray) -> None:
    """A NaN or infinite rating or prediction would poison the sums (Dask's sum then skips the
    partition while its count stays): refuse it, naming the side, count and examples."""
    for side, values in (("test ratings", rating), ("predictions", prediction)):
        bad = ~np.isfinite(values)
        if bad.any():
            example = part[[USER, ITEM]][bad].head(3).to_dict("records")
            raise ValueError(f"{int(bad.sum())} {side} are NaN or infinite, e.g. for {example}; metrics refuse "
                             "non-finite values (check the test set, or the model for NaN factors)")


def _prediction_partials(part: pd.DataFrame) -> pd.DataFrame:
    prediction = part[PREDICTION].to_numpy(dtype=np.float64)
    missing = np.isnan(prediction)
    if missing.any():
        example = part[missing].head(3).to_dict("records")
        raise ValueError(
            f"{int(missing.sum())} test pairs have no prediction (NaN), e.g. {example}; metrics never drop them "
            "silently: predict with unknown='bias' or filter the test set first"
        )
    rating = part[RATING].to_numpy(dtype=np.float64)
    _refuse_non_finite(part, prediction, rating)
    return _partials(prediction - rating, 0, 0)


def _partials(errors: np.ndarray, fallback: int, dropped: int) -> pd.DataFrame:
    return pd.DataFrame(
        [[float(np.dot(errors, errors)), float(np.abs(errors).sum()), float(len(errors)), float(fallback), float(dropped)]],
        columns=_PARTIAL_COLUMNS,
    )


def error_totals(model_or_predictions, test: pd.DataFrame | dd.DataFrame, *, client: Client | None = None) -> dict:
    """RMSE, MAE and counts of a model (or of predictions) on a test set, in one Dask pass.

    Parameters
    ----------
    model_or_predictions
        A fitted estimator (its ``unknown`` and ``clip`` apply), a
        :class:`~dmf.model.FittedModel` (the ``unknown`` and ``clip`` it was trained with),
        or a DataFrame with ``user, item, prediction`` (and
        optionally ``rating``; otherwise it is joined to ``test`` on user and item).
    test
        Pandas or Dask DataFrame with canonical ``user, item, rating`` columns.

    Returns
    -------
    dict with ``rmse``, ``mae``, ``count``, ``n_fallback`` (None for given predictions),
    ``n_dropped``.
    """
    test = as_dask_frame(test, "test")
    require_columns(test, [USER, ITEM, RATING], "test")
    client = scheduler.resolve_client(client)
    scorer = as_scorer(model_or_predictions)
    if scorer is not None:
        model, unknown, clip = scorer

        def evaluate():  # the model is broadcast anew on each attempt
            model_key = scheduler.broadcast(model.without_seen(), client)
            partials = test.map_partitions(_model_partials, model_key, unknown, clip, meta=_PARTIAL_META)
            return scheduler.compute([partials.sum()], client, what="evaluation")[0]

        totals = scheduler.retry_on_worker_loss(evaluate, "evaluation", client)
        from_model = True
    else:
        predictions = as_dask_frame(model_or_predictions, "predictions")
        require_columns(predictions, [USER, ITEM, PREDICTION], "predictions")
        if RATING not in predictions.columns:
            # every test pair stays: one without a prediction gets NaN and is refused below
            predictions = predictions[[USER, ITEM, PREDICTION]].merge(test[[USER, ITEM, RATING]], on=[USER, ITEM], how="right")
        partials = predictions.map_partitions(_prediction_partials, meta=_PARTIAL_META)
        (totals,) = scheduler.compute([partials.sum()], client)
        from_model = False
    count = int(totals["count"])
    if count == 0:
        raise ValueError("no test pairs to evaluate (the test set is empty or every pair was dropped)")
    return {
        "rmse": math.sqrt(totals["squared_error"] / count),
        "mae": totals["absolute_error"] / count,
        "count": count,
        "n_fallback": int(totals["fallback"]) if from_model else None,
        "n_dropped": int(totals["dropped"]),
    }


def rmse(model_or_predictions, test: pd.DataFrame | dd.DataFrame, *, client: Client | None = None) -> Metric:
    """Root mean squared error on ``test``; see :func:`error_totals` for the arguments."""
    totals = error_totals(model_or_predictions, test, client=client)
    return Metric(totals["rmse"], totals["count"], totals["n_fallback"], totals["n_dropped"])


def mae(model_or_predictions, test: pd.DataFrame | dd.DataFrame, *, client: Client | None = None) -> Metric:
    """Mean absolute error on ``test``; see :func:`error_totals` for the arguments."""
    totals = error_totals(model_or_predictions, test, client=client)
    return Metric(totals["mae"], totals["count"], totals["n_fallback"], totals["n_dropped"])
