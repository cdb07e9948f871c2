"""The one place dmf talks to the Dask scheduler: client resolution, broadcast, persist, progress."""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import dask
from distributed import Client, default_client, futures_of, wait
from distributed.client import FuturesCancelledError
from distributed.comm.core import CommClosedError
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.diagnostics.progressbar import ProgressBar
from distributed.scheduler import KilledWorker
from distributed.utils import LoopRunner

from dmf import progress

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Exceptions by which the cluster reports that work or data was lost with a worker.
WORKER_FAILURES = (
    FuturesCancelledError,
    KilledWorker,
    CommClosedError,
    concurrent.futures.CancelledError,
    asyncio.CancelledError,
)


class SchedulerLost(RuntimeError):
    """The client lost its scheduler: no retry can help; restart the scheduler and rerun."""


def check_scheduler(client: Client | None, failure: BaseException, grace: float = 2.0) -> None:
    """Raise :class:`SchedulerLost` (from ``failure``) when ``client`` is no longer connected to
    its scheduler, so that a lost scheduler is not mistaken for a lost worker. The client may
    notice a closed connection a moment after the failure: its status is watched for up to
    ``grace`` seconds (only on this failure path)."""
    if client is None:
        return
    deadline = time.monotonic() + grace
    while client.status == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    if client.status != "running":
        address = getattr(client.scheduler, "address", None) or "the scheduler"
        raise SchedulerLost(f"lost the connection to the scheduler at {address} (client status {client.status!r}); "
                            "the work cannot continue: restart the scheduler and run again") from failure


def retry_on_worker_loss(run: Callable[[], T], what: str, client: Client | None, attempts: int = 3) -> T:
    """``run()``, run again (at most ``attempts`` times in all) when a worker dies and takes data
    with it. ``run`` must build its graph anew each time: values it broadcast are gone with
    the worker (a scattered value has no lineage to recompute it from)."""
    for attempt in range(1, attempts + 1):
        try:
            return run()
        except WORKER_FAILURES as failure:
            check_scheduler(client, failure)
            if attempt == attempts:
                raise
            logger.warning("%s lost data on a failed worker (%s: %s); running it again (attempt %d of %d)",
                           what, type(failure).__name__, failure, attempt + 1, attempts)
    raise AssertionError("unreachable")


#: glibc allocator settings for dmf's workers. Dask's nanny starts workers with
#: ``MALLOC_TRIM_THRESHOLD_=65536``, which also pins glibc's mmap threshold at 128 KiB: every
#: array over 128 KiB is then a fresh mapping whose pages fault in on first touch, and a
#: block split ran 2.5x slower than in a plain process (50 against 19.5 ms for 857 k ratings).
#: With these thresholds arrays up to 32 MiB reuse the heap and up to 128 MiB of freed heap is
#: kept per arena (19.8 ms). ``DMF_TUNE_ALLOCATOR=0`` on the client leaves Dask's settings.
#: Registered by :func:`tune_workers`, which every training loop calls (through its
#: :class:`~dmf.engine.placement.Placement`).
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 128 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def tune_allocator() -> bool:
    """Set :data:`MMAP_THRESHOLD` and :data:`TRIM_THRESHOLD` in this process (glibc's
    ``mallopt``); False where that is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


class AllocatorPlugin(WorkerPlugin):
    """Runs :func:`tune_allocator` on every worker, present and future (a replacement too)."""

    name = "dmf-allocator"

    def setup(self, worker) -> None:
        tune_allocator()


#: Schedulers whose workers :func:`tune_workers` has set up (once per client process).
_TUNED: set[str] = set()


def tune_workers(client: Client | None) -> None:
    """Register :class:`AllocatorPlugin` on ``client``'s cluster, once per scheduler (unless
    ``DMF_TUNE_ALLOCATOR=0``); nothing without a cluster."""
    if client is None or os.environ.get("DMF_TUNE_ALLOCATOR", "1") == "0":
        return
    address = getattr(client.scheduler, "address", None)
    if address not in _TUNED:
        client.register_plugin(AllocatorPlugin())
        _TUNED.add(address)


def resolve_client(client: Client | None = None) -> Client | None:
    """``client`` if given, else the current distributed client, else ``None`` (local scheduler)."""
    if client is not None:
        return client
    try:
        return default_client()
    except ValueError:
        return None


def total_threads(client: Client | None) -> int:
    """Worker threads of the cluster, or local CPUs without a cluster."""
    if client is None:
        return os.cpu_count() or 1
    return max(1, sum(client.nthreads().values()))


def broadcast(value: Any, client: Client | None) -> Any:
    """Make ``value`` one key of the graph that every task can depend on.

    On a cluster the value is scattered once to one worker (no ``broadcast=True``: the Active
    Memory Manager would undo the replicas, dask/dask#11148); each worker fetches it once,
    when its first task needs it. Without a cluster it is wrapped as a single delayed value.
    """
    if client is not None:
        # in a list, so that a tuple, list or dict is scattered as one value, not element-wise
        return client.scatter([value], hash=False)[0]
    return dask.delayed(value, traverse=False)


def persist(collections: list, client: Client | None) -> list:
    """Persist delayed objects and wait until they are in memory."""
    if client is not None:
        persisted = client.persist(collections)
        wait(persisted)
        return persisted
    return list(dask.persist(*collections))


def wait_with_progress(futures: list, what: str) -> None:
    """Wait for ``futures``; while a terminal shows progress (:mod:`dmf.progress`), the bar of
    stage ``what`` counts the tasks they depend on, as the scheduler reports them."""
    if progress.live() and futures:
        _StageBar(futures, what)  # returns when the tasks are done (or one failed)
    wait(futures)


class _StageBar(ProgressBar):
    """The scheduler's count of done tasks, drawn as a :mod:`dmf.progress` bar."""

    def __init__(self, futures: list, what: str):
        self.what = what
        runner = LoopRunner()
        super().__init__(futures, None, "200ms", True)
        runner.run_sync(self.listen)

    def _draw_bar(self, remaining: int, all: int, **kwargs) -> None:  # noqa: A002 - distributed's name
        progress.advance(self.what, all - remaining, all)

    def _draw_stop(self, **kwargs) -> None:
        progress.advance(self.what, 1, 1)


def persist_with_progress(collection, client: Client | None, what: str):
    """Persist a collection on the cluster and wait for it: a bar on a terminal, one line in a
    log (``what: N partitions in S s``)."""
    if client is None:
        return dask.persist(collection)[0]
    started = time.perf_counter()
    persisted = client.persist(collection)
    futures = futures_of(persisted)
    wait_with_progress(futures, what)
    logger.info("%s: %d partitions in %.1f s", what, len(futures), time.perf_counter() - started)
    return persisted


def compute(collections: list, client: Client | None, what: str | None = None) -> list:
    """Compute collections and bring their (small) results to the client; with ``what``, a
    terminal shows the stage's progress while it runs."""
    if client is not None and what is not None and progress.live():
        results = client.compute(collections)  # futures, and values that were not collections
        wait_with_progress(futures_of(results), what)
        return client.gather(results)
    if client is not None:
        return client.compute(collections, sync=True)
    return list(dask.compute(*collections))
