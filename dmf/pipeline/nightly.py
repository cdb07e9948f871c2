"""One idempotent nightly retraining run: ingest → split → warm-started fit → evaluate →
quality gate → top-k → atomic publish of ``models/v{N}`` and switch of ``models/current``.

A run whose snapshot (file names and contents) and settings equal those the current version
was published from does nothing (status ``unchanged``), so rerunning a night is harmless.
The home directory's layout and the publishing machinery are :mod:`dmf.pipeline.home`'s.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dmf.data.ratings import read_ratings
from dmf.data.splits import random_split, without_pairs
from dmf.estimators import ESTIMATORS, Estimator
from dmf.pipeline.config import NightlyConfig
from dmf.pipeline.home import (
    current_version,
    fingerprint,
    gate_and_publish,
    published_summary,
    run_locked,
    snapshot_digests,
)
from dmf.pipeline.options import ESTIMATOR_CHOICES, Timer, versions
from dmf.scheduler import persist_with_progress, retry_on_worker_loss
from dmf.stages.histograms import rating_histograms, top_k_reach
from dmf.stages.metrics import error_totals
from dmf.stages.ranking import ranking_metrics
from dmf.stages.serving import pair_rows
from dmf.storage import write_json_atomic

logger = logging.getLogger(__name__)

def run_nightly(config: NightlyConfig, client, *, lock_held: bool = False) -> dict:
    """One nightly run; returns its summary. Raises :class:`PipelineRefused` at the gate.

    ``lock_held``: the caller already holds ``HOME/nightly.lock`` (the pipeline takes it
    before it starts a cluster). A run that fails records ``status: failed`` and the error
    in ``last-run.json`` (:func:`~dmf.pipeline.home.run_locked`).
    """
    return run_locked(config.home, "nightly", config.snapshot, lambda: _run_locked(config, client), lock_held=lock_held)


def _run_locked(config: NightlyConfig, client) -> dict:
    timer = Timer()
    digests = snapshot_digests(config.snapshot)
    test_digests = snapshot_digests(config.test) if config.test is not None else {}
    run_fingerprint = fingerprint({**digests, **{f"test:{name}": d for name, d in test_digests.items()}},
                                  config.settings())
    published_path = current_version(config.home)
    if (not config.force and published_path is not None
            and published_summary(published_path).get("fingerprint") == run_fingerprint):
        report = {"status": "unchanged", "current": published_path.name, "fingerprint": run_fingerprint,
                  "snapshot": str(config.snapshot), "versions": versions(), "seconds": timer.seconds}
        write_json_atomic(config.home / "last-run.json", report)
        logger.info("snapshot and settings unchanged since %s; nothing to do", published_path.name)
        return report
    with timer("ingest"):
        ratings = read_ratings(config.snapshot, duplicates=config.duplicates)
        ratings = client.persist(ratings)
        n_ratings = int(ratings.shape[0].compute())
    train, test = held_out_split(ratings, config.test, config.test_fraction, config.split_seed, config.duplicates,
                                 client)
    class_name, defaults = ESTIMATOR_CHOICES[config.estimator]
    estimator = ESTIMATORS[class_name](**{**defaults, **config.params})
    implicit = not estimator.predicts_ratings  # scores that only rank: gated on NDCG@k
    published = _load_published(published_path, train, test, config, client)
    same_kind = published is not None and type(published.model) is type(estimator)
    if published is not None and not same_kind:
        logger.warning("the published %s holds a %s model, this run trains %s: publishing without a quality gate "
                       "and without warm start", published_path.name, type(published.model).__name__,
                       type(estimator).__name__)
    warm_start = published.model if same_kind and published.model.rank == estimator.rank else None
    with timer("fit"):
        model = estimator.fit(train, client=client, validate=False, warm_start=warm_start)
    with timer("evaluate"):
        metrics = {"count": int(test.shape[0].compute())} if implicit else error_totals(model, test, client=client)
        published_metrics = published.metrics if same_kind else None
    with timer("ranking"):  # top-k without the training items, scored on the held-out ones
        held_out_top_k = TopK(model, config.k, client)
        ranking = retry_on_worker_loss(
            lambda: ranking_metrics(held_out_top_k.frame(), test, k=config.k,
                                    relevance_threshold=config.relevance_threshold,
                                    catalog_size=len(model.item_ids_), client=client),
            "top-k and ranking metrics", client)
    with timer("recommend"):  # what is published: the held-out pairs were rated too, never recommend them
        model.model_ = model.model_.replace(seen=model.model_.seen.with_pairs(*pair_rows(model.model_, test, client)))
        top_k = TopK(model, config.k, client)
        top_k.frame()
    with timer("report"):  # the report's histograms and coverage: one pass over the held-out pairs
        histograms = {**rating_histograms(model, test, client=client), "of": "held-out pairs"}
        reach = top_k_reach(top_k.frame(), len(model.item_ids_), config.k, client=client)
    metrics = {**metrics, "ranking": ranking}
    report = {
        "snapshot": str(config.snapshot),
        "rows": {"ratings": n_ratings, "train": model.n_ratings_, "test": metrics["count"]},
        "params": model.get_params(),
        "warm_start": str(published_path) if warm_start is not None else None,
        "metrics": metrics,
        "published_metrics": published_metrics,
        "history": model.history_,
        "histograms": histograms,
        "top_k": reach,
        "settings": config.settings(),
        "fingerprint": run_fingerprint,
        "snapshot_files": digests,
        "versions": versions(),
    }
    gate = "ndcg@k" if implicit else "rmse"
    return gate_and_publish(
        config.home, model=model, report=report, published_path=published_path,
        score=("NDCG@k" if implicit else "RMSE", ranking[gate] if implicit else metrics[gate]),
        published_score=_score(published_metrics, gate), higher_is_better=implicit,
        tolerance=config.tolerance, keep=config.keep, timer=timer,
        write_recommendations=lambda path: retry_on_worker_loss(
            lambda: top_k.frame().to_parquet(path, write_index=False), "writing the recommendations", client),
    )


def held_out_split(ratings, test: Path | None, test_fraction: float, split_seed: int, duplicates: str,
                   client) -> tuple:
    """(train, test) of a run: the prepared ``test`` ratings (their pairs removed from the
    snapshot's), or else the snapshot's hashed ``test_fraction``: a pair's side depends on
    (split seed, user, item) only, so it stays on its side as the snapshot grows and a
    published model never trained on today's test pairs."""
    if test is None:
        return random_split(ratings, test_fraction, split_seed)
    held_out = client.persist(read_ratings(test, duplicates=duplicates))
    return without_pairs(ratings, held_out), held_out


class _Published:
    """The current version's model and its metrics on this run's test pairs."""

    def __init__(self, model: Estimator, metrics: dict):
        self.model, self.metrics = model, metrics


def _score(metrics: dict | None, gate: str) -> float | None:
    if metrics is None:
        return None
    return metrics["ranking"][gate] if gate in metrics.get("ranking", {}) else metrics.get(gate)


#: The settings that choose the held-out pairs: a published model is a baseline only if they are equal.
_SPLIT_SETTINGS = ("test", "test_fraction", "split_seed")


def _load_published(path: Path | None, train, test, config: NightlyConfig, client) -> _Published | None:
    """The published model, evaluated on this run's test pairs (RMSE; for implicit feedback
    the ranking metrics of its top-k without this run's training pairs); None when there is
    none or when it cannot serve as a baseline (damaged files, NaN factors; held-out pairs
    chosen otherwise, so that it may have trained on this run's test pairs): then the new
    model is published without a gate and without warm start, and the log says why, loudly."""
    if path is None:
        return None
    split = {key: config.settings().get(key) for key in _SPLIT_SETTINGS}
    published_settings = published_summary(path).get("settings")
    published_split = {key: (published_settings or {}).get(key) for key in _SPLIT_SETTINGS}
    if published_settings is not None and published_split != split:
        logger.error("the published %s held out other pairs (%s; this run: %s): it may have trained on this run's test "
                     "pairs, so it is no baseline; publishing without a quality gate and without warm start",
                     path.name, published_split, split)
        return None
    try:
        model = Estimator.load(path / "model")
        if model.predicts_ratings:
            return _Published(model, error_totals(model, test, client=client))
        top = model.recommend(config.k, exclude=train, exclude_seen=False, client=client)
        return _Published(model, {"ranking": ranking_metrics(top, test, k=config.k,
                                                             relevance_threshold=config.relevance_threshold,
                                                             catalog_size=len(model.item_ids_), client=client)})
    except (OSError, ValueError, TypeError) as problem:  # TypeError: parameters this dmf does not know
        logger.error("the published %s is no valid baseline (%s); publishing without a quality gate and without "
                     "warm start", path.name, problem)
        return None


class TopK:
    """The top-k recommendations of every user, persisted on the cluster; computed again
    (from the model on the client) when a lost worker took some of them."""

    def __init__(self, model: Estimator, k: int, client):
        self.model, self.k, self.client, self._frame = model, k, client, None

    def frame(self):
        if self._frame is not None and not _lost(self._frame):
            return self._frame
        # the model knows each user's training items and excludes them
        self._frame = persist_with_progress(self.model.recommend(self.k, client=self.client), self.client, "top-k")
        return self._frame


def _lost(frame) -> bool:
    """Whether any persisted partition of ``frame`` is gone (erred or cancelled with a worker)."""
    from distributed import futures_of

    return any(future.status in ("error", "cancelled", "lost") for future in futures_of(frame))
