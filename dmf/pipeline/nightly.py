"""One idempotent nightly retraining run: ingest → split → warm-started fit → evaluate →
quality gate → top-k → atomic publish of ``models/v{N}`` and switch of ``models/current``.

A run whose snapshot (file names and contents) and settings equal those the current version
was published from does nothing (status ``unchanged``), so rerunning a night is harmless.

Layout under the run's home directory::

    home/
      nightly.lock            held (flock) while a run is active
      last-run.json           summary of the latest run, published or refused
      models/
        v1/ v2/ ...           model/ (dmf.ALS directory), recommendations/ (Parquet), summary.json
        current -> vN         symlink, switched atomically after vN is complete
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dmf.data.ratings import read_ratings
from dmf.data.splits import random_split
from dmf.estimators import ALS
from dmf.pipeline.options import PipelineRefused, Timer, versions
from dmf.scheduler import persist_with_progress, retry_on_worker_loss
from dmf.stages.metrics import error_totals
from dmf.stages.ranking import ranking_metrics
from dmf.storage import atomic_directory, fsync_directory, write_json_atomic

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"^v(\d+)$")


@dataclass
class NightlyConfig:
    """What a nightly run reads, trains and keeps.

    ``tolerance``: publish only if the new RMSE ≤ published model's RMSE + tolerance, both
    on this run's test set. ``keep``: published versions kept (the current one always is).
    """

    snapshot: Path
    home: Path
    params: dict = field(default_factory=dict)
    test_fraction: float = 0.1
    split_seed: int = 0
    tolerance: float = 0.005
    keep: int = 3
    k: int = 10
    relevance_threshold: float | None = 4.0
    duplicates: str = "latest"
    force: bool = False

    def settings(self) -> dict:
        """Everything but the paths and ``force``: what, besides the snapshot, shapes a run's output."""
        return {"params": self.params, "test_fraction": self.test_fraction, "split_seed": self.split_seed,
                "tolerance": self.tolerance, "keep": self.keep, "k": self.k,
                "relevance_threshold": self.relevance_threshold, "duplicates": self.duplicates}


def run_fingerprint(config: NightlyConfig) -> str:
    """SHA-256 of the snapshot's files (relative names and contents, in name order) and the run's
    settings: equal fingerprints mean a rerun would publish the same thing again."""
    digest = hashlib.sha256(json.dumps(config.settings(), sort_keys=True, default=str).encode())
    snapshot = Path(config.snapshot)
    files = sorted(p for p in snapshot.rglob("*") if p.is_file()) if snapshot.is_dir() else [snapshot]
    for path in files:
        digest.update(str(path.relative_to(snapshot) if snapshot.is_dir() else path.name).encode() + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _published_fingerprint(version_path: Path) -> str | None:
    try:
        return json.loads((version_path / "summary.json").read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None


class RunLocked(RuntimeError):
    """Another nightly run holds the lock."""


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; released by the kernel if the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # never through a symbolic link: the lock file is truncated and written
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise RunLocked(f"lock {path} is a symbolic link; refusing to follow it (remove it)") from None
        raise
    with os.fdopen(descriptor, "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES):
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise RunLocked(f"another nightly run is active (lock {path} held by pid {holder}); not starting") from None
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()


def models_dir(home: Path) -> Path:
    return home / "models"


def current_version(home: Path) -> Path | None:
    """The published version ``current`` points to, or None."""
    link = models_dir(home) / "current"
    if not link.is_symlink():
        return None
    return models_dir(home) / os.readlink(link)


def published_versions(home: Path) -> list[int]:
    directory = models_dir(home)
    if not directory.exists():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _VERSION.match(p.name)) and p.is_dir())


def switch_current(home: Path, version: str) -> None:
    """Point ``models/current`` at ``version`` atomically (symlink + rename)."""
    temporary = models_dir(home) / f".current.tmp-{os.getpid()}"
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    os.symlink(version, temporary)
    os.replace(temporary, models_dir(home) / "current")
    fsync_directory(models_dir(home))


def prune_versions(home: Path, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` versions, never the current one; return the deleted."""
    current = current_version(home)
    deleted = []
    for number in published_versions(home)[: -max(keep, 1)]:
        path = models_dir(home) / f"v{number}"
        if current is not None and path.resolve() == current.resolve():
            continue
        if path.is_symlink():
            path.unlink()  # a version linked in from elsewhere: drop the link, not its target
        else:
            shutil.rmtree(path)
        deleted.append(path.name)
    return deleted


def remove_stale_staging(home: Path) -> list[str]:
    """Delete what a killed run left behind: half-written hidden ``.v*`` and ``.current``
    entries, and complete versions newer than ``current`` that never became current (a run
    killed between publishing and the switch); they must not count toward ``keep``."""
    directory = models_dir(home)
    if not directory.exists():
        return []
    current = current_version(home)
    current_number = int(_VERSION.match(current.name).group(1)) if current is not None else 0
    never_current = [directory / f"v{n}" for n in published_versions(home) if n > current_number]
    stale = [p for p in directory.iterdir() if p.name.startswith((".v", ".current"))] + never_current
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return [p.name for p in stale]


def run_nightly(config: NightlyConfig, client, *, lock_held: bool = False) -> dict:
    """One nightly run; returns its summary. Raises :class:`PipelineRefused` at the gate.

    ``lock_held``: the caller already holds ``HOME/nightly.lock`` (the pipeline takes it
    before it starts a cluster). A run that fails records ``status: failed`` and the error
    in ``last-run.json``.
    """
    lock = contextlib.nullcontext() if lock_held else exclusive_lock(config.home / "nightly.lock")
    with lock:
        try:
            return _run_locked(config, client)
        except PipelineRefused:
            raise
        except Exception as error:
            write_json_atomic(config.home / "last-run.json", {
                "status": "failed", "error": f"{type(error).__name__}: {error}", "snapshot": str(config.snapshot),
                "versions": versions(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            raise


def _run_locked(config: NightlyConfig, client) -> dict:
    timer = Timer()
    logger.info("nightly run %d holds %s", os.getpid(), config.home / "nightly.lock")
    stale = remove_stale_staging(config.home)
    if stale:
        logger.warning("removed %s left by an interrupted run", ", ".join(stale))
    fingerprint = run_fingerprint(config)
    published_path = current_version(config.home)
    if not config.force and published_path is not None and _published_fingerprint(published_path) == fingerprint:
        report = {"status": "unchanged", "current": published_path.name, "fingerprint": fingerprint,
                  "snapshot": str(config.snapshot), "versions": versions(), "seconds": timer.seconds}
        write_json_atomic(config.home / "last-run.json", report)
        logger.info("snapshot and settings unchanged since %s; nothing to do", published_path.name)
        return report
    with timer("ingest"):
        ratings = read_ratings(config.snapshot, duplicates=config.duplicates)
        ratings = client.persist(ratings)
        n_ratings = int(ratings.shape[0].compute())
    # a pair's side depends on (split seed, user, item) only: it stays on its side as the
    # snapshot grows, so a published model never trained on today's test pairs
    train, test = random_split(ratings, config.test_fraction, config.split_seed)
    published = _load_published(published_path, test, client)
    rank = config.params.get("rank", ALS().rank)
    warm_start = published.model if published is not None and published.rank == rank else None
    with timer("fit"):
        model = ALS(**config.params).fit(train, client=client, validate=False, warm_start=warm_start)
    with timer("evaluate"):
        metrics = error_totals(model, test, client=client)
        published_metrics = published.metrics if published is not None else None
    with timer("recommend"):
        top_k = _TopK(model, config.k, client)
        ranking = retry_on_worker_loss(
            lambda: ranking_metrics(top_k.frame(), test, k=config.k, relevance_threshold=config.relevance_threshold,
                                    catalog_size=len(model.item_ids_), client=client),
            "top-k and ranking metrics", client)
    metrics = {**metrics, "ranking": ranking}
    report = {
        "snapshot": str(config.snapshot),
        "rows": {"ratings": n_ratings, "train": model.n_ratings_, "test": metrics["count"]},
        "params": model.get_params(),
        "warm_start": str(published_path) if warm_start is not None else None,
        "metrics": metrics,
        "published_metrics": published_metrics,
        "history": model.history_,
        "settings": config.settings(),
        "fingerprint": fingerprint,
        "versions": versions(),
    }
    if published_metrics is not None and metrics["rmse"] > published_metrics["rmse"] + config.tolerance:
        report.update(status="refused", seconds=timer.seconds, current=published_path.name)
        write_json_atomic(config.home / "last-run.json", report)
        raise PipelineRefused(
            f"quality gate: test RMSE {metrics['rmse']:.4f} is worse than the published "
            f"{published_path.name}'s {published_metrics['rmse']:.4f} by more than {config.tolerance}; "
            f"{published_path.name} stays current"
        )
    version = f"v{(published_versions(config.home) or [0])[-1] + 1}"
    logger.info("publishing %s", version)
    with timer("publish"), atomic_directory(models_dir(config.home) / version) as staging:
        model.save(staging / "model")
        retry_on_worker_loss(lambda: top_k.frame().to_parquet(staging / "recommendations", write_index=False),
                             "writing the recommendations", client)
        report.update(status="published", version=version)
        write_json_atomic(staging / "summary.json", {**report, "seconds": timer.seconds})
    switch_current(config.home, version)
    report["pruned"] = prune_versions(config.home, config.keep)
    report["seconds"] = timer.seconds
    write_json_atomic(config.home / "last-run.json", report)
    logger.info("published %s; current -> %s", version, version)
    return report


class _Published:
    """The current version's model and its metrics on this run's test pairs."""

    def __init__(self, model: ALS, metrics: dict):
        self.model, self.metrics, self.rank = model, metrics, model.rank


def _load_published(path: Path | None, test, client) -> _Published | None:
    """The published model, evaluated on this run's test pairs; None when there is none or
    when it cannot serve as a baseline (damaged files, NaN factors): then the new model is
    published without a gate, and the log says why, loudly."""
    if path is None:
        return None
    try:
        model = ALS.load(path / "model")
        return _Published(model, error_totals(model, test, client=client))
    except (OSError, ValueError) as problem:
        logger.error("the published %s is no valid baseline (%s); publishing without a quality gate and without "
                     "warm start", path.name, problem)
        return None


class _TopK:
    """The top-k recommendations of every user, persisted on the cluster; computed again
    (from the model on the client) when a lost worker took some of them."""

    def __init__(self, model: ALS, k: int, client):
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
