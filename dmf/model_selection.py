"""Model selection on the cluster: splits, and grid or random search whose fits share the
expensive part.

The ratings are read, validated and persisted once; each fold's train and test sets are views
of them. Per fold, the training ratings are blocked once (:func:`dmf.engine.prepared.prepare_ratings`)
and every setting of the ALS family (``ALS``, ``ImplicitALS``) fits on those blocks, with the
fold's test pairs blocked once as its validation set, scored on the workers after every
epoch; settings run concurrently, at most ``parallelism`` at a time. Other estimators fit
independently, one setting at a time (``SGD`` with the same per-epoch validation; ``SVD``, which has no epochs, is
evaluated after its fit).

    search = dmf.model_selection.grid_search(dmf.ALS(), {"rank": [16, 32], "reg": [0.05, 0.1]}, ratings,
                                             splits=dmf.model_selection.KFold(3))
    search.summary            # one row per setting: mean and std of the metric over folds
    search.best_params        # {"rank": 32, "reg": 0.05}
    search.best_estimator     # refit on all the ratings
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf import scheduler
from dmf.columns import RATING, TIMESTAMP
from dmf.data.ratings import read_ratings
from dmf.data.splits import fold_splits, random_split, temporal_split
from dmf.engine.prepared import PreparedRatings, prepare_ratings
from dmf.engine.validation import ValidationSpec
from dmf.estimators.als import ALS, ImplicitALS
from dmf.estimators.base import Estimator
from dmf.frames import as_dask_frame
from dmf.random import SPLIT_STREAM, counter_uniform, id_hashes
from dmf.stages.metrics import error_totals
from dmf.stages.ranking import ranking_metrics

logger = logging.getLogger(__name__)

#: Estimators whose fits share a fold's blocks.
SHARES_BLOCKS = (ALS, ImplicitALS)


# -- splits -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class KFold:
    """``k`` folds whose test sets partition the pairs, by (seed, user, item): GroupLens' u1..u5 style."""

    k: int = 5
    seed: int = 0

    def split(self, ratings: dd.DataFrame) -> list[tuple[dd.DataFrame, dd.DataFrame]]:
        return fold_splits(ratings, self.k, self.seed)


@dataclass(frozen=True)
class Holdout:
    """One random split: about ``test_fraction`` of the pairs, by (seed, user, item)."""

    test_fraction: float = 0.1
    seed: int = 0

    def split(self, ratings: dd.DataFrame) -> list[tuple[dd.DataFrame, dd.DataFrame]]:
        return [random_split(ratings, self.test_fraction, self.seed)]


@dataclass(frozen=True)
class Temporal:
    """One split by time: each user's latest ``test_count`` ratings (or latest fraction)."""

    test_count: int | None = None
    test_fraction: float | None = 0.1
    min_train: int = 1

    def split(self, ratings: dd.DataFrame) -> list[tuple[dd.DataFrame, dd.DataFrame]]:
        count, fraction = (self.test_count, None) if self.test_count is not None else (None, self.test_fraction)
        return [temporal_split(ratings, test_count=count, test_fraction=fraction, min_train=self.min_train)]


@dataclass(frozen=True)
class PerUser:
    """One split per user: ``test_count`` random ratings of each user (GroupLens' ua/ub style),
    users keeping at least ``min_train`` ratings for training."""

    test_count: int = 10
    seed: int = 0
    min_train: int = 1

    def split(self, ratings: dd.DataFrame) -> list[tuple[dd.DataFrame, dd.DataFrame]]:
        shuffled = ratings.map_partitions(_random_time, self.seed,
                                          meta=ratings._meta.assign(**{TIMESTAMP: pd.Series([], dtype=np.float64)}))
        return [temporal_split(shuffled, test_count=self.test_count, min_train=self.min_train)]


def _random_time(part: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A ``timestamp`` that orders each user's ratings at random (by seed and pair)."""
    return part.assign(**{TIMESTAMP: counter_uniform(seed, SPLIT_STREAM + 1, id_hashes(part["user"]),
                                                      id_hashes(part["item"]))})


# -- search -----------------------------------------------------------------------------------
@dataclass
class SearchResult:
    """What a search found.

    ``table``: one row per (setting, fold): ``setting`` (its index in ``settings``), the
    parameters searched, ``fold``, the validation
    metrics, ``epochs`` run, ``best_epoch`` (the epoch whose factors the model kept) and
    ``seconds``. ``summary``: one row per setting, the mean and standard deviation of
    ``metric`` over folds (best first). ``best_params``: the best setting (the searched
    parameters only); ``best_estimator``: that setting refit on all the ratings (None without
    ``refit``)."""

    table: pd.DataFrame
    summary: pd.DataFrame
    metric: str
    higher_is_better: bool
    best_params: dict
    best_estimator: Estimator | None = None
    seconds: float = 0.0
    settings: list = field(default_factory=list)


def grid_search(estimator: Estimator, grid: dict[str, list], ratings, *, splits=None, metric: str | None = None,
                parallelism: int = 2, refit: bool = True, patience: int | None = None,
                relevance_threshold: float | None = None, n_iter: int | None = None, seed: int = 0, client=None,
                validate: bool = True) -> SearchResult:
    """Fit ``estimator`` with every setting of ``grid`` on every fold of ``splits``.

    Parameters
    ----------
    estimator
        An unfitted estimator; its parameters are the defaults every setting overrides.
    grid
        Parameter name -> list of values; the settings are their product.
    ratings
        Anything :func:`dmf.read_ratings` accepts.
    splits
        :class:`KFold` (default, ``KFold(3)``), :class:`Holdout`, :class:`Temporal` or :class:`PerUser`.
    metric
        ``"rmse"`` or ``"mae"`` (lower is better), ``"ndcg@K"`` or ``"precision@K"`` (higher is
        better; a user's top-K among the items it did not train on, against its test items
        with a rating >= ``relevance_threshold``, all of them by default). Default: RMSE for
        models that predict ratings, NDCG@10 for those whose scores only rank.
    parallelism
        Settings of the ALS family fitted at the same time (each fit's tasks share the
        cluster); other estimators' settings are fitted one at a time.
    patience
        Early stopping per fit (see ``fit``); the fold's score is then the best epoch's.
    n_iter
        A random search: ``n_iter`` settings drawn without replacement from the grid by ``seed``.
    """
    started = time.perf_counter()
    client = scheduler.resolve_client(client)
    settings = _settings(estimator, grid, n_iter, seed)
    metric, k, higher = _metric(metric, estimator)
    frame = read_ratings(ratings) if validate else as_dask_frame(ratings, "ratings")
    if client is not None:
        frame = client.persist(frame)  # read and validated once; every fold is a view of it
    rows = []
    for fold, (train, test) in enumerate((splits or KFold(3)).split(frame)):
        if client is not None:
            train, test = client.persist([train, test])
        rows.extend(_search_fold(estimator, settings, fold, train, test, metric, k, patience, relevance_threshold,
                                 parallelism, client))
    table = pd.DataFrame(rows)
    column = f"validation_{metric}"
    summary = (table.groupby("setting", sort=True)
               .agg(mean=(column, "mean"), std=(column, "std"), folds=("fold", "count"), seconds=("seconds", "mean"))
               .reset_index())
    summary = pd.concat([pd.DataFrame(settings).loc[summary["setting"]].reset_index(drop=True), summary], axis=1)
    summary = summary.sort_values("mean", ascending=not higher, kind="stable", na_position="last").reset_index(drop=True)
    if summary["mean"].isna().all():
        raise ValueError(f"no setting could be scored by {metric} (every fold's score is NaN)")
    best_params = dict(settings[int(summary.loc[0, "setting"])])
    best = None
    if refit:
        best = type(estimator)(**{**estimator.get_params(), **best_params}).fit(frame, validate=False, client=client)
    return SearchResult(table, summary, metric, higher, best_params, best, time.perf_counter() - started, settings)


def random_search(estimator: Estimator, grid: dict[str, list], ratings, n_iter: int, **options) -> SearchResult:
    """:func:`grid_search` over ``n_iter`` settings drawn at random from ``grid`` (``seed=``)."""
    return grid_search(estimator, grid, ratings, n_iter=n_iter, **options)


def _settings(estimator: Estimator, grid: dict[str, list], n_iter: int | None, seed: int) -> list[dict]:
    if not grid:
        raise ValueError("the search grid is empty: give at least one parameter and its values")
    for name, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"grid[{name!r}] must be a non-empty list of values, got {values!r}")
    settings = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if n_iter is not None:
        if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
            raise ValueError(f"n_iter must be a positive integer, got {n_iter!r}")
        chosen = np.random.default_rng(seed).choice(len(settings), size=min(n_iter, len(settings)), replace=False)
        settings = [settings[i] for i in sorted(chosen)]
    for setting in settings:  # every setting is valid before anything runs
        type(estimator)(**{**estimator.get_params(), **setting})
    return settings


def _metric(metric: str | None, estimator: Estimator) -> tuple[str, int, bool]:
    """(metric, k, higher is better)."""
    metric = metric or ("rmse" if estimator.predicts_ratings else "ndcg@10")
    if metric in ("rmse", "mae"):
        if not estimator.predicts_ratings:
            raise ValueError(f"{type(estimator).__name__} scores only rank items: search it by 'ndcg@K' or "
                             f"'precision@K', not {metric!r}")
        return metric, 10, False
    name, _, cutoff = metric.partition("@")
    if name not in ("ndcg", "precision") or not cutoff.isdigit() or int(cutoff) < 1:
        raise ValueError(f"metric must be 'rmse', 'mae', 'ndcg@K' or 'precision@K', got {metric!r}")
    return metric, int(cutoff), True


def _search_fold(estimator, settings, fold, train, test, metric, k, patience, relevance_threshold, parallelism,
                 client) -> list[dict]:
    ranking = metric not in ("rmse", "mae")
    prepared: dict[Any, PreparedRatings] = {}
    for setting in settings:  # one set of blocks per distinct training transform (e.g. ImplicitALS's threshold)
        model = type(estimator)(**{**estimator.get_params(), **setting})
        if isinstance(model, SHARES_BLOCKS):
            key = (repr(model._ratings_transform()), model.n_blocks)
            if key not in prepared:
                prepared[key] = prepare_ratings(model._prepare(train), model.n_blocks, client)
    if ranking and relevance_threshold is not None:
        test = test[test[RATING] >= relevance_threshold]

    def run(index: int) -> dict:
        setting = settings[index]
        model = type(estimator)(**{**estimator.get_params(), **setting})
        begun = time.perf_counter()
        if isinstance(model, SHARES_BLOCKS):
            # ranking: every setting is scored on the same relevant pairs (not those its own threshold keeps)
            spec = ValidationSpec(test if ranking else model._prepare(test), clip=bool(model.clip), patience=patience,
                                  k=k, ranking=ranking, every_epoch=False, watch=metric)
            fitted = model._fit(prepared[(repr(model._ratings_transform()), model.n_blocks)], client=client,
                                warm_start=None, validation=spec)
            record = _scored_record(fitted.history)
        elif hasattr(model, "max_iter") and not ranking:  # SGD: validated per epoch
            model.fit(train, validate=False, client=client, validation=test, patience=patience)
            record = _scored_record(model.history_)
        else:
            model.fit(train, validate=False, client=client)
            record = {"epoch": len(model.history_), **_evaluate(model, test, metric, k, client)}
        history = fitted.history if isinstance(model, SHARES_BLOCKS) else model.history_
        row = {"setting": index, **setting, "fold": fold, **{key: value for key, value in record.items() if key.startswith("validation_")},
               "epochs": len(history), "best_epoch": record["epoch"], "seconds": time.perf_counter() - begun}
        logger.info("fold %d %s: %s=%.5f (%.1f s)", fold, setting, metric, row.get(f"validation_{metric}", math.nan),
                    row["seconds"])
        return row

    # Other estimators build Dask DataFrame graphs from the fold's shared frames; two threads
    # lowering one expression can deadlock in Python 3.11's functools.cached_property (its lock
    # is per attribute, not per object), so they fit one setting at a time.
    threads = max(1, parallelism) if isinstance(estimator, SHARES_BLOCKS) else 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dmf-search") as pool:
        return list(pool.map(run, range(len(settings))))


def _scored_record(history: list[dict]) -> dict:
    """The record of the epoch whose factors the model holds (the kept one, else the last)."""
    kept = [record for record in history if record.get("kept")]
    return kept[0] if kept else history[-1]


def _evaluate(model: Estimator, test: dd.DataFrame, metric: str, k: int, client) -> dict:
    """Validation metrics of a fitted model from the stages (for estimators without epochs), on
    the pairs whose user and item the model knows, as the per-epoch validation counts them."""
    users, items = model.user_ids_, model.item_ids_
    test = test[test["user"].isin(list(users)) & test["item"].isin(list(items))]
    if metric in ("rmse", "mae"):
        totals = error_totals(model, test, client=client)
        return {"validation_rmse": totals["rmse"], "validation_mae": totals["mae"]}
    found = ranking_metrics(model.recommend(k, client=client), test, k=k, precision_denominator="min", client=client)
    return {f"validation_ndcg@{k}": found["ndcg@k"], f"validation_precision@{k}": found["precision@k"]}
