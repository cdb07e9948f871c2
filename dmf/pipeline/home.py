"""The home directory of published versions: the run lock, staging leftovers, the version
directories, the atomic ``models/current`` switch, pruning, the quality gate and publishing.
Shared by the nightly retraining run and the incremental update.

Layout::

    home/
      nightly.lock            held (flock) while a run is active
      last-run.json           summary of the latest run: published, refused, unchanged or failed
      models/
        v1/ v2/ ...           model/ (dmf model directory), recommendations/ (Parquet), summary.json,
                              report.html (charts of the run)
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dmf.pipeline.options import PipelineRefused, Timer, versions
from dmf.pipeline.report import write_report
from dmf.storage import atomic_directory, fsync_directory, write_json_atomic

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"^v(\d+)$")


def snapshot_digests(snapshot: Path) -> dict[str, str]:
    """SHA-256 of every file of a snapshot (a directory, or one file), by relative name."""
    snapshot = Path(snapshot)
    files = sorted(p for p in snapshot.rglob("*") if p.is_file()) if snapshot.is_dir() else [snapshot]
    digests = {}
    for path in files:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digests[str(path.relative_to(snapshot)) if snapshot.is_dir() else path.name] = digest.hexdigest()
    return digests


def fingerprint(digests: dict[str, str], settings: dict) -> str:
    """One SHA-256 of a snapshot's file digests and a run's settings: equal fingerprints mean a
    rerun would publish the same thing again."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, file_digest in sorted(digests.items()):
        digest.update(name.encode() + b"\0" + file_digest.encode())
    return digest.hexdigest()


def published_summary(version_path: Path) -> dict:
    """The summary.json of a published version ({} when it cannot be read)."""
    try:
        return json.loads((version_path / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


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




def run_locked(home: Path, kind: str, snapshot: Path, run: Callable[[], dict], *, lock_held: bool = False) -> dict:
    """``run()`` under ``HOME/nightly.lock`` (unless the caller holds it already), after
    removing what an interrupted run left behind; a run that fails (other than refused at the
    gate) is recorded in ``last-run.json`` with ``status: failed`` and the error."""
    lock = contextlib.nullcontext() if lock_held else exclusive_lock(home / "nightly.lock")
    with lock:
        logger.info("%s run %d holds %s", kind, os.getpid(), home / "nightly.lock")
        try:
            stale = remove_stale_staging(home)
            if stale:
                logger.warning("removed %s left by an interrupted run", ", ".join(stale))
            return run()
        except PipelineRefused:
            raise
        except Exception as error:
            write_json_atomic(home / "last-run.json", {
                "status": "failed", "kind": kind, "error": f"{type(error).__name__}: {error}",
                "snapshot": str(snapshot), "versions": versions(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            raise


def gate_and_publish(home: Path, *, model, write_recommendations: Callable[[Path], None], report: dict,
                     published_path: Path | None, score: tuple[str, float], published_score: float | None,
                     tolerance: float, keep: int, timer: Timer, higher_is_better: bool = False) -> dict:
    """Refuse (:class:`PipelineRefused`, recorded in ``last-run.json``) when the new model's
    ``score = (name, value)`` on the held-out pairs is worse than the published model's by
    more than ``tolerance`` (lower is better: RMSE; ``higher_is_better``: NDCG); otherwise
    write ``models/v{N}`` (model, recommendations, summary) in a staging directory, rename it
    into place, switch ``current`` to it, prune to ``keep`` versions and record the run."""
    name, value = score
    worse = value - published_score if published_score is not None else None
    if worse is not None and (-worse if higher_is_better else worse) > tolerance:
        report.update(status="refused", seconds=timer.seconds, current=published_path.name)
        write_json_atomic(home / "last-run.json", report)
        raise PipelineRefused(
            f"quality gate: test {name} {value:.4f} is worse than the published {published_path.name}'s "
            f"{published_score:.4f} by more than {tolerance}; {published_path.name} stays current"
        )
    version = f"v{(published_versions(home) or [0])[-1] + 1}"
    logger.info("publishing %s", version)
    with timer("publish"), atomic_directory(models_dir(home) / version) as staging:
        model.save(staging / "model")
        write_recommendations(staging / "recommendations")
        report.update(status="published", version=version)
        write_json_atomic(staging / "summary.json", {**report, "seconds": timer.seconds})
        write_report(staging / "report.html", f"dmf {report.get('kind', 'nightly')} run: {version}",
                     {**report, "seconds": timer.seconds})
    switch_current(home, version)
    report["pruned"] = prune_versions(home, keep)
    report["seconds"] = timer.seconds
    write_json_atomic(home / "last-run.json", report)
    logger.info("published %s; current -> %s", version, version)
    return report
