"""Where a fit's tasks run: block ``b`` of any side on the worker of slot ``b``, and how they
are submitted (futures on a cluster, values without one). Shared by the training loops."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time

import dask
import distributed

from dmf import progress, scheduler
from dmf.model.fitted import FittedModel, SeenItems

logger = logging.getLogger(__name__)

#: Background threads bring the training interactions to the client while the epochs run
#: (0.2-0.4 s of transfer at 20 M ratings that the fit would otherwise wait for).
BACKGROUND = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="dmf-seen")


class Gathering:
    """A gather of ``futures`` on a background thread that notices lost workers.

    Futures whose inputs hang under scattered roots on a worker that died can never finish:
    the scheduler has nothing to recompute them from, and a plain gather would wait forever.
    :meth:`result` therefore watches the workers present at the start; when one has left and
    the gather has not finished ``grace`` seconds later, it cancels the futures (which frees
    the thread) and raises ``concurrent.futures.CancelledError``, a worker failure that the
    training loop recovers from by rebuilding the blocks.
    """

    def __init__(self, client, futures: list, workers: set[str]):
        self.client, self.futures, self.workers = client, futures, set(workers)  # the workers to watch
        self.job = BACKGROUND.submit(client.gather, futures)

    def result(self, poll: float = 1.0, grace: float = 5.0) -> list:
        """The values; the workers are checked every ``poll`` seconds while they are awaited
        (one scheduler round trip each)."""
        left_at = None
        while True:
            try:
                return self.job.result(timeout=poll)
            except concurrent.futures.TimeoutError:
                pass
            if left_at is None and not self.workers <= set(self.client.nthreads()):
                left_at = time.monotonic()
            if left_at is not None and time.monotonic() - left_at > grace:
                self.cancel()
                raise concurrent.futures.CancelledError(
                    f"a worker left while gathering {len(self.futures)} results and they did not arrive "
                    f"within {grace:g} s; their inputs were lost with it")

    def cancel(self) -> None:
        """Stop waiting (a no-op once the gather is done)."""
        if not self.job.done():
            self.client.cancel(self.futures)


class Placement:
    """The worker slots of ``client`` (one per worker thread, interleaved across workers, so
    blocks ``0, 1, 2, …`` alternate between workers), or none without a cluster."""

    def __init__(self, client):
        self.client = client
        scheduler.tune_workers(client)  # the workers' allocator, once per scheduler
        self.refresh()

    def refresh(self) -> None:
        """Read the workers again (after a worker was lost)."""
        self.slots = worker_slots(self.client)

    def on_worker(self, block: int | None):
        """Annotation context: tasks built inside go to the worker of slot ``block mod n_slots``
        (another worker takes them only when that one is gone); no preference for None or
        without a cluster."""
        return pinned(self.slots[block % len(self.slots)] if block is not None and self.slots else None)

    def on_partitions(self, frame):
        """``on(p)``: the annotation context for the tasks that read partition ``p`` of ``frame``
        (read the workers once, call it for every pass over the partitions).

        When the partitions are persisted on this cluster, each task goes to the worker holding
        its partition, except a worker's partitions beyond its share (by threads), which go to
        the workers below theirs: left to itself, the scheduler ran all 21 splits of a block
        build on one of two workers holding 11 and 10 partitions, the other idling. Otherwise
        (partitions read by the graph itself) no preference."""
        holders = self._holders(frame)
        if not holders:
            return lambda partition: pinned(None)
        moves = balanced_moves(holders, self.slots)
        return lambda partition: pinned(moves.get(partition, holders[partition]))

    def _holders(self, frame) -> list | None:
        """The worker holding each partition of ``frame``, when all are persisted on this
        cluster (each partition ``p`` computed from persisted partition ``p``); else None."""
        if self.client is None:
            return None
        futures = distributed.futures_of(frame)
        keys = [future.key for future in futures]
        if len(keys) != frame.npartitions or not all(isinstance(k, tuple) and len(k) == 2 for k in keys) \
                or {k[1] for k in keys} != set(range(frame.npartitions)) or len({k[0] for k in keys}) != 1:
            return None
        who_has = self.client.who_has(futures)
        holders = [None] * frame.npartitions
        for key in keys:
            holders[key[1]] = next(iter(who_has.get(key, ())), None)
        return holders if None not in holders else None

    def submit(self, delayed_objects: list) -> list:
        """Futures of ``delayed_objects`` on a cluster (not waited for); their values without one."""
        if self.client is not None:
            return self.client.compute(delayed_objects)
        return list(dask.compute(*delayed_objects))

    def wait(self, futures: list) -> None:
        """Return when the futures are done (at once without a cluster: those are values)."""
        if self.client is not None:
            distributed.wait(futures)

    def gather(self, futures: list) -> list:
        """Values of what :meth:`submit` returned (a worker failure instead of waiting forever
        when a worker left with their inputs: see :class:`Gathering`)."""
        return self.gathering(futures).result() if self.client is not None else list(futures)

    def gathering(self, futures: list) -> Gathering:
        """A :class:`Gathering` of ``futures`` that watches this placement's workers."""
        return Gathering(self.client, futures, set(self.slots))


def dropped(gathering: Gathering | None) -> None:
    """Cancel ``gathering`` if it still waits (a trainer's background gather of blocks it is
    about to rebuild or release); None, for the trainer to store."""
    if gathering is not None:
        gathering.cancel()


def pinned(worker: str | None):
    """Annotation context: tasks built inside go to ``worker`` (another worker takes them only
    when that one is gone); no preference for None."""
    if worker is None:
        return contextlib.nullcontext()
    return dask.annotate(workers=[worker], allow_other_workers=True)


def balanced_moves(holders: list[str], slots: list[str]) -> dict[int, str]:
    """``{partition: worker}`` for the partitions to move so that every worker of ``slots``
    (one entry per thread) holds at most its share, ``ceil(n × threads / all threads)``: a
    worker's partitions beyond its share, last first, go to the worker furthest below its own."""
    if not slots:
        return {}
    threads = {worker: slots.count(worker) for worker in slots}
    share = {worker: -(-len(holders) * n // len(slots)) for worker, n in threads.items()}
    load = {worker: 0 for worker in threads}
    excess = []
    for partition, holder in enumerate(holders):
        if holder in load and load[holder] < share[holder]:
            load[holder] += 1
        else:
            excess.append(partition)
    moves = {}
    for partition in excess:
        target = min(load, key=lambda worker: (load[worker] / threads[worker], worker))
        load[target] += 1
        if target != holders[partition]:
            moves[partition] = target
    return moves


def worker_slots(client) -> list[str]:
    """Worker addresses, one entry per thread, interleaved (a, b, a, b, a for 3 + 2 threads)."""
    if client is None:
        return []
    threads = dict(client.nthreads())  # every worker (scheduler_info may list only a few)
    return [address for round_ in range(max(threads.values(), default=0)) for address in sorted(threads)
            if threads[address] > round_]


def train_epochs(trainer, max_iter: int, max_recoveries: int, estimator: str, params: dict | None):
    """Run ``trainer`` to ``max_iter`` epochs and return its fitted model; release what it
    holds on the cluster whether that succeeds or fails.

    With a validation (``trainer.validation``, built from a ``ValidationSpec``), every epoch
    record carries its validation score; with ``patience``, the best epoch is kept
    (``trainer.keep_best()``), training stops after that many epochs without a better score
    and the model holds the best epoch's factors (its history record says ``"kept": True``).

    A trainer has ``epoch``, ``train_epoch()``, ``checkpoint["epoch"]``, ``recover()`` (rebuild
    blocks, resume from the checkpoint), ``result(estimator, params)`` and ``close()``. When a
    worker dies and takes data with it, training resumes from the checkpoint, at most
    ``max_recoveries`` times; the result is the same as without the failure.
    """
    recoveries = 0
    patience = trainer.validation_spec.patience if trainer.validation_spec is not None else None
    stopping = _EarlyStopping(patience) if patience is not None else None
    try:
        while True:
            try:
                while trainer.epoch < max_iter:
                    progress.advance("fit", trainer.epoch, max_iter, "epochs")
                    record = trainer.train_epoch()
                    if stopping is not None and stopping.should_stop(trainer, record):
                        break
                return trainer.result(estimator, params or {})
            except scheduler.WORKER_FAILURES as failure:
                scheduler.check_scheduler(trainer.client, failure)
                recoveries += 1
                if recoveries > max_recoveries:
                    raise
                what = f"epoch {trainer.epoch + 1}" if trainer.epoch < max_iter else "gathering the model"
                logger.warning(
                    "%s lost data on a failed worker (%s: %s); rebuilding blocks, resuming from epoch %d",
                    what, type(failure).__name__, failure, trainer.checkpoint["epoch"],
                )
                try:
                    trainer.recover()
                except scheduler.WORKER_FAILURES as again:
                    scheduler.check_scheduler(trainer.client, again)
                    raise
                if stopping is not None:
                    stopping.resumed_at(trainer.epoch)
    finally:
        progress.advance("fit", max_iter, max_iter, "epochs")
        trainer.close()  # nothing stays on the cluster, whether the fit ends or fails


class _EarlyStopping:
    """The best validation score so far and the epochs since; the trainer keeps the best
    epoch's tables on the client (``keep_best``), so they survive a lost worker."""

    def __init__(self, patience: int):
        self.patience, self.best, self.best_epoch, self.since = patience, None, 0, 0

    def should_stop(self, trainer, record: dict) -> bool:
        if record["epoch"] <= self.best_epoch:  # an epoch replayed after a recovery: known already
            return False
        name, higher = trainer.validation.metric
        score = record[name]
        if self.best is None or (score > self.best if higher else score < self.best):
            self.best, self.best_epoch, self.since = score, record["epoch"], 0
            trainer.keep_best()
            return False
        self.since += 1
        if self.since >= self.patience:
            logger.info("early stop after epoch %d: %s has not improved for %d epochs (best %.5f in epoch %d)",
                        record["epoch"], name, self.since, self.best, self.best_epoch)
            return True
        return False

    def resumed_at(self, epoch: int) -> None:
        """Training went back to ``epoch`` (a checkpoint): count the epochs since the best from there."""
        self.since = max(0, epoch - self.best_epoch)


def gathered_seen(gathering: Gathering | None, submit_parts, placement: Placement) -> SeenItems:
    """The training interactions from per-user-block ``(row pointers, items)`` parts: those of
    the background gather ``gathering``, or gathered now from ``submit_parts()`` when there
    is none or it failed. Raises a worker failure when the blocks themselves were lost (the
    training loop then rebuilds them and asks again)."""
    if placement.client is None:
        return SeenItems.concatenate(submit_parts())  # values
    if gathering is not None:
        try:
            return SeenItems.concatenate(gathering.result())
        except scheduler.WORKER_FAILURES:  # gather them again from the blocks as they are now
            pass
    return SeenItems.concatenate(placement.gathering(submit_parts()).result())


def fitted_model(trainer, estimator: str, params: dict | None, n_blocks: int, seen: SeenItems) -> FittedModel:
    """The model of a trainer's checkpoint (its joined ``users``/``items`` tables), history,
    vocabularies and rating statistics."""
    users, items = trainer.checkpoint["users"], trainer.checkpoint["items"]
    return FittedModel(
        estimator=estimator, params=dict(params or {}), user_ids=trainer.user_ids, item_ids=trainer.item_ids,
        user_factors=users.factors, item_factors=items.factors, user_biases=users.biases,
        item_biases=items.biases, global_mean=float(trainer.global_mean),
        rating_range=(float(trainer.rating_range[0]), float(trainer.rating_range[1])),
        n_ratings=int(trainer.n_ratings), n_blocks=n_blocks, history=list(trainer.history), seen=seen,
    )


def restore_best(trainer) -> bool:
    """Make the kept best epoch (early stopping) the trainer's checkpoint, marking its history
    record; whether there was one other than the last epoch."""
    best = trainer._best
    if best is None or best["epoch"] == trainer.epoch:
        return False
    from dmf.engine.validation import mark_kept

    trainer.checkpoint = {**best, "history": list(trainer.history)}
    trainer.history = mark_kept(trainer.history, best["epoch"])
    return True
