"""An incremental update between nightly retrains: fold in the users whose ratings arrived
in snapshot files the current version was not published from (and the items new to the
model), gate on those users' held-out pairs, and publish a new version through the same
machinery as the nightly run (lock, staging, quality gate, ``models/current`` switch).

It folds in (one exact half-step per changed row against the published model's fixed other
side) instead of retraining, so it runs in seconds; the next nightly retrains everything.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dask.dataframe as dd
import numpy as np

from dmf.columns import ITEM, USER
from dmf.data.ratings import read_ratings
from dmf.estimators import Estimator
from dmf.pipeline.config import NightlyConfig
from dmf.pipeline.home import (
    current_version,
    fingerprint,
    gate_and_publish,
    published_summary,
    run_locked,
    snapshot_digests,
)
from dmf.pipeline.nightly import TopK, held_out_split
from dmf.pipeline.options import Timer, versions
from dmf.scheduler import retry_on_worker_loss
from dmf.stages.metrics import error_totals
from dmf.stages.serving import pair_rows
from dmf.storage import write_json_atomic

logger = logging.getLogger(__name__)


def run_update(config: NightlyConfig, client, *, lock_held: bool = False) -> dict:
    """One incremental update; returns its summary (``status``: ``published`` or
    ``unchanged``). Raises :class:`PipelineRefused` at the gate; a failed run is recorded in
    ``last-run.json``. ``config.params`` and ``config.force`` are not used: the model's
    parameters are the published version's."""
    return run_locked(config.home, "update", config.snapshot, lambda: _update_locked(config, client),
                      lock_held=lock_held)


def _update_locked(config: NightlyConfig, client) -> dict:
    timer = Timer()
    published_path = current_version(config.home)
    if published_path is None:
        raise ValueError(f"{config.home} has no published version to update: run the nightly first")
    summary = published_summary(published_path)
    known = summary.get("snapshot_files")
    if known is None:
        raise ValueError(f"{published_path.name} records no snapshot files (published by an older dmf): run the "
                         "nightly first")
    digests = snapshot_digests(config.snapshot)
    removed = sorted(set(known) - set(digests))
    if removed:
        raise ValueError(f"files were removed from the snapshot since {published_path.name} ({removed[:3]}): "
                         "an update only adds ratings; run the nightly")
    new_files = sorted(name for name, digest in digests.items() if known.get(name) != digest)
    if not new_files:
        report = {"status": "unchanged", "kind": "update", "current": published_path.name,
                  "snapshot": str(config.snapshot), "versions": versions(), "seconds": timer.seconds}
        write_json_atomic(config.home / "last-run.json", report)
        logger.info("no snapshot file is new since %s; nothing to fold in", published_path.name)
        return report
    # the split and ingest settings are the published version's: its held-out pairs stay held out
    settings = summary.get("settings", {})
    split = {name: settings.get(name, getattr(config, name)) for name in ("test_fraction", "split_seed", "duplicates")}
    held_out = Path(settings["test"]) if settings.get("test") else None
    published = Estimator.load(published_path / "model")
    if not published.predicts_ratings:
        raise ValueError(f"{published_path.name} holds an {type(published).__name__} model, whose scores only rank: "
                         "incremental updates are gated on RMSE; the nightly retrains it")
    with timer("ingest"):
        ratings = client.persist(read_ratings(config.snapshot, duplicates=split["duplicates"]))
        fresh = dd.read_parquet([str(config.snapshot / name) for name in new_files])
        affected = np.asarray(fresh[USER].unique().compute())
        new_items = np.setdiff1d(np.asarray(fresh[ITEM].unique().compute()), np.asarray(published.item_ids_))
    train, test = held_out_split(ratings, held_out, split["test_fraction"], split["split_seed"], split["duplicates"],
                                 client)
    with timer("fold-in"):
        # new items first (from the users the model knows), then the users, whose ratings of the
        # new items now count, then the new items again (now also from the new users)
        new_item_ratings = train[train[ITEM].isin(list(new_items))]
        model = published.fold_in(new_item_ratings, side="items", client=client) if len(new_items) else published
        model = model.fold_in(train[train[USER].isin(list(affected))], client=client)
        if len(new_items):
            model = model.fold_in(new_item_ratings, side="items", client=client)
    folded_users = int(np.isin(affected, np.asarray(model.user_ids_)).sum())
    folded_items = int(np.isin(new_items, np.asarray(model.item_ids_)).sum())
    sample = client.persist(test[test[USER].isin(list(affected))])
    with timer("evaluate"):
        if len(sample):
            metrics = error_totals(model, sample, client=client)
            published_metrics = _published_metrics(published, sample, client)
        else:
            logger.warning("the folded-in users have no held-out pairs: publishing without a quality gate")
            metrics, published_metrics = {"rmse": float("nan"), "count": 0}, None
    with timer("recommend"):  # the affected users' held-out pairs were rated too: never recommend them
        model.model_ = model.model_.replace(seen=model.model_.seen.with_pairs(*pair_rows(model.model_, sample, client)))
        top_k = TopK(model, config.k, client)
        top_k.frame()
    settings = {**config.settings(), **split, **({"test": str(held_out)} if held_out is not None else {}),
                "estimator": settings.get("estimator", "als"),
                "params": model.get_params()}
    report = {
        "kind": "update", "base": published_path.name, "snapshot": str(config.snapshot), "new_files": new_files,
        "folded": {"users": folded_users, "items": folded_items},
        "params": model.get_params(), "metrics": metrics, "published_metrics": published_metrics,
        "settings": settings, "snapshot_files": digests,
        # never equal to a nightly's fingerprint: the next nightly retrains what this folded in
        "fingerprint": "update:" + fingerprint(digests, settings), "versions": versions(),
    }
    return gate_and_publish(
        config.home, model=model, report=report, published_path=published_path,
        score=("RMSE", metrics["rmse"]),
        published_score=published_metrics["rmse"] if published_metrics is not None else None,
        tolerance=config.tolerance, keep=config.keep, timer=timer,
        write_recommendations=lambda path: retry_on_worker_loss(
            lambda: top_k.frame().to_parquet(path, write_index=False), "writing the recommendations", client),
    )


def _published_metrics(published: Estimator, sample, client) -> dict | None:
    """The published model's metrics on the same held-out sample (its users were folded in
    from fewer ratings, or were unknown to it: the bias model)."""
    try:
        return error_totals(published, sample, client=client)
    except ValueError as problem:
        logger.error("the published model cannot be scored on the sample (%s); publishing without a gate", problem)
        return None
