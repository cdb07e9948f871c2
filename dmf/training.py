"""Blocked ALS training loop on Dask: the functional core behind :class:`dmf.ALS`.

One epoch = two half-steps. The user half-step solves every user block against the item
factors; the item half-step does the same the other way round. A half-step's result is one
:class:`FactorTable` per block, left on the worker that solved it: every task of the next
half-step depends on all of them (a worker fetches each remote block table once; each task
joins them into its own copy), and the block's own table of the last epoch (the
conjugate-gradient start) stays local. Per epoch: 2·n_blocks solves and 2·n_blocks tiny summaries, nothing else.

Epochs are submitted one ahead of the one being waited for, so the workers never idle
while the client reads an epoch's summary; the client drops every table it no longer needs,
so the graph never grows. Every ``checkpoint_every`` epochs (10, Spark's default
checkpoint interval) and after the last one the tables are copied to the client: a lost
worker costs at most that many epochs, redone from the copy (or from the seed).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf import _dask
from dmf._random import entity_normals
from dmf.blocks import block_bounds, build_rating_blocks
from dmf.columns import ITEM, RATING, USER
from dmf.kernels import RatingBlock, SolveOptions, aligned_empty_float32, cg_solve_ratings, solve_rows
from dmf.vocabulary import IdVocabulary

logger = logging.getLogger(__name__)

USER_STREAM, ITEM_STREAM = 1, 2
#: Rows of initial factors computed at a time (same values as one piece). At rank 64 the
#: temporaries are 64 KB: in cache, and under glibc's mmap threshold. In a Dask worker (its
#: nanny sets MALLOC_TRIM_THRESHOLD_) every larger temporary is mapped and faulted in anew:
#: 69 k rows x 64 took 0.11 s in chunks of 128 rows, 0.33 s in chunks of 512 or more.
_INITIAL_CHUNK = 128

#: Errors by which the cluster reports that work was lost with a worker.
WORKER_FAILURES = _dask.WORKER_FAILURES


@dataclass(frozen=True)
class Objective:
    """What each half-step minimizes; the parameters of :class:`dmf.ALS` that shape a solve.

    Explicit feedback (``implicit=False``): squared error on the ratings with penalty
    ``reg·n_u + damping`` on factors and ``bias_reg·n_u + bias_damping`` on biases. Implicit feedback
    (Hu, Koren, Volinsky 2008): preference ``p = [r > 0]`` with confidence ``c = 1 + alpha·|r|``
    over all pairs, penalty ``reg`` (not weighted by counts).
    """

    rank: int
    reg: float
    bias_reg: float = 0.0
    damping: float = 0.0
    bias_damping: float = 0.0
    use_biases: bool = True
    implicit: bool = False
    alpha: float = 1.0
    solver: str = "cholesky"
    cg_steps: int = 3
    nonnegative: bool = False

    def solve_options(self, base_gram: np.ndarray | None) -> SolveOptions:
        width = self.rank + int(self.use_biases)
        if self.implicit:
            reg, damping = np.zeros(width), np.full(width, self.reg)
        else:
            reg, damping = np.full(width, self.reg), np.full(width, self.damping)
            if self.use_biases:
                reg[self.rank], damping[self.rank] = self.bias_reg, self.bias_damping
        return SolveOptions(reg, damping, base_gram, self.solver, self.cg_steps, self.nonnegative,
                            free_last=self.use_biases)


@dataclass
class FactorTable:
    """Factors and biases of a range of rows, with the training loss of their ratings.

    ``factors`` is float32 (n, rank); ``biases`` float32 (n,) or None when biases are off.
    ``loss`` and ``count`` cover the ratings of these rows under the factors that produced
    them (explicit: squared error; implicit: the observed part of the weighted loss);
    ``n_nonfinite`` counts NaN/inf entries; ``gram`` is ``factorsᵀ·factors`` (float64) when
    the objective needs it; ``start`` is the global index of the first row.
    """

    factors: np.ndarray
    biases: np.ndarray | None
    loss: float = 0.0
    count: int = 0
    n_nonfinite: int = 0
    gram: np.ndarray | None = None
    start: int = 0


@dataclass
class TrainingResult:
    user_ids: IdVocabulary
    item_ids: IdVocabulary
    users: FactorTable
    items: FactorTable
    global_mean: float
    n_ratings: int
    n_blocks: int
    rating_range: tuple[float, float]
    history: list[dict] = field(default_factory=list)


def initial_factors(id_hashes: np.ndarray, rank: int, seed: int, stream: int, nonnegative: bool = False) -> np.ndarray:
    """Initial factors (float32, (n, rank)): N(0, 1/rank) per entry (absolute values when
    ``nonnegative``), a function of the seed and each id only."""
    id_hashes = np.asarray(id_hashes, dtype=np.uint64)
    out = np.empty((len(id_hashes), rank), dtype=np.float32)
    for start in range(0, len(id_hashes), _INITIAL_CHUNK):
        factors = entity_normals(seed, stream, id_hashes[start : start + _INITIAL_CHUNK], rank) / math.sqrt(rank)
        out[start : start + _INITIAL_CHUNK] = np.abs(factors) if nonnegative else factors
    return out


def solve_block(
    block: RatingBlock,
    other: FactorTable,
    previous: FactorTable | None,
    global_mean: float,
    objective: Objective,
    with_loss: bool = True,
) -> FactorTable:
    """Solve one block's rows against the other side's fixed table.

    ``previous`` is a table of this side from the last epoch that covers the block's rows
    (the conjugate-gradient start), or None. ``with_loss`` also computes the training loss
    of the block's ratings. The result covers the block's rows, with its Gram matrix when
    the objective is implicit. ``solver="cg"`` runs the compiled kernel, which computes
    targets and loss from the ratings itself; the other solvers go through :func:`solve_rows`.
    """
    rank = objective.rank
    with_biases = objective.use_biases and not objective.implicit
    start = _starting_point(block, previous, with_biases)
    options = objective.solve_options(other.gram if objective.implicit else None)
    if objective.solver == "cg" and not objective.nonnegative:
        solution, loss = cg_solve_ratings(
            block, other.factors, options, np.zeros((block.n_rows, rank + with_biases)) if start is None else start,
            implicit=objective.implicit, alpha=objective.alpha, offset=global_mean if with_biases else 0.0,
            other_biases=other.biases if with_biases else None, append_ones=with_biases, with_loss=with_loss,
        )
    else:
        solution, loss = _solve_with_arrays(block, other, start, global_mean, objective, options, with_biases, with_loss)
    factors = solution[:, :rank].astype(np.float32)
    biases = solution[:, rank].astype(np.float32) if with_biases else None
    nonfinite = int((~np.isfinite(factors)).sum()) + (int((~np.isfinite(biases)).sum()) if biases is not None else 0)
    return FactorTable(factors, biases, loss, block.nnz, nonfinite, gram_of(factors) if objective.implicit else None,
                       block.start)


def _starting_point(block: RatingBlock, previous: FactorTable | None, with_biases: bool) -> np.ndarray | None:
    """The block's rows of ``previous`` (float64, with the bias column when ``with_biases``), or None."""
    if previous is None:
        return None
    rows = slice(block.start - previous.start, block.start - previous.start + block.n_rows)
    start = previous.factors[rows].astype(np.float64)
    return np.hstack([start, previous.biases[rows, None]]) if with_biases else start


def _solve_with_arrays(block, other, start, global_mean, objective, options, with_biases, with_loss):
    """(solution, loss) by :func:`solve_rows`: per-rating target and weight arrays, the loss
    from the returned scores (the exact, nonnegative and NumPy-CG solvers)."""
    values = block.values.astype(np.float64)
    # Scores of the block's ratings under the new rows, filled by the solver (loss only).
    scores = np.empty(block.nnz) if with_loss else None
    if objective.implicit:
        confidence = 1.0 + objective.alpha * np.abs(values)
        preference = (values > 0).astype(np.float64)
        solution = solve_rows(block, other.factors, confidence * preference, options, weights=confidence - 1.0,
                              initial=start, scores=scores)
        # Σ over observed pairs of c·(p − s)² − s²; the unobserved part, Σ over all pairs
        # of s², is trace(XᵀX·YᵀY) and is added from the two tables' Gram matrices.
        loss = float(np.dot(confidence, (preference - scores) ** 2) - np.dot(scores, scores)) if with_loss else 0.0
    else:
        other_bias = other.biases[block.cols].astype(np.float64) if with_biases else 0.0
        targets = values - global_mean - other_bias if with_biases else values
        solution = solve_rows(block, other.factors, targets, options, append_ones=with_biases, initial=start,
                              scores=scores)
        # targets − scores = rating − (μ + b_other + b_row + p·q): the training error
        loss = float(np.sum((targets - scores) ** 2)) if with_loss else 0.0
    return solution, loss


def solve_user_block(block, other_tables, previous, global_mean, objective, with_loss) -> FactorTable:
    """User half-step on one block against the item tables (named for the dashboard)."""
    return solve_block(block, _joined_other(other_tables, objective), previous, global_mean, objective, with_loss)


def solve_item_block(block, other_tables, previous, global_mean, objective, with_loss) -> FactorTable:
    """Item half-step on one block against the user tables (named for the dashboard)."""
    return solve_block(block, _joined_other(other_tables, objective), previous, global_mean, objective, with_loss)


def _joined_other(tables: list[FactorTable], objective: Objective) -> FactorTable:
    """The other side's block tables joined; for implicit feedback with the Gram matrix of the
    joined factors, computed in one piece so that it does not depend on the block layout (a
    sum of the blocks' Gram matrices would, by float64 rounding)."""
    other = join_tables(tables)
    if objective.implicit:
        other.gram = gram_of(other.factors)
    return other


def gram_of(factors: np.ndarray) -> np.ndarray:
    """``factorsᵀ·factors`` in float64."""
    as_float64 = factors.astype(np.float64)
    return as_float64.T @ as_float64


def join_tables(tables: list[FactorTable]) -> FactorTable:
    """The block tables of one side, in block order, as one new table: factors copied into a
    64-byte aligned array (what the compiled solver gathers from), Gram matrices summed (the
    training loss uses them), losses and counts added."""
    factors = aligned_empty_float32((sum(len(t.factors) for t in tables), tables[0].factors.shape[1]))
    np.concatenate([t.factors for t in tables], out=factors)
    biases = None if tables[0].biases is None else np.concatenate([t.biases for t in tables])
    return FactorTable(factors, biases, sum(t.loss for t in tables), sum(t.count for t in tables),
                       sum(t.n_nonfinite for t in tables), _sum_grams([t.gram for t in tables]), tables[0].start)


def _sum_grams(grams: list) -> np.ndarray | None:
    """The sum of the blocks' Gram matrices, or None when any is missing."""
    return None if any(g is None for g in grams) else sum(grams[1:], grams[0].copy())


def table_summary(table: FactorTable) -> tuple[float, int, int, np.ndarray | None]:
    """What the client needs of a block table each epoch: (loss, count, non-finite count, Gram)."""
    return table.loss, table.count, table.n_nonfinite, table.gram


def partition_ids_and_stats(part: pd.DataFrame) -> tuple:
    """A partition's distinct user ids, distinct item ids and ratings' (sum, count, min, max)."""
    values = part[RATING].to_numpy(dtype=np.float64)
    stats = (float(values.sum()), len(values), float(values.min()), float(values.max())) if len(values) else (0.0, 0, np.inf, -np.inf)
    return pd.unique(part[USER].to_numpy()), pd.unique(part[ITEM].to_numpy()), stats


def merge_ids_and_stats(parts: list) -> tuple:
    """Merge :func:`partition_ids_and_stats` results (of partitions, or of earlier merges)."""
    users = pd.unique(np.concatenate([p[0] for p in parts]))
    items = pd.unique(np.concatenate([p[1] for p in parts]))
    stats = [p[2] for p in parts]
    return users, items, (sum(s[0] for s in stats), sum(s[1] for s in stats), min(s[2] for s in stats),
                          max(s[3] for s in stats))


def ids_and_stats(ratings: dd.DataFrame, fan_in: int = 16):
    """Delayed (user ids, item ids, (sum, count, min, max)) of ``ratings``: one task per
    partition, merged in a tree of ``fan_in``."""
    level = [dask.delayed(partition_ids_and_stats, pure=True)(part) for part in ratings.to_delayed()]
    merge = dask.delayed(merge_ids_and_stats, pure=True)
    while len(level) > 1:
        level = [merge(level[i : i + fan_in]) for i in range(0, len(level), fan_in)]
    return level[0]  # a Dask DataFrame has at least one partition


def fit_als(
    ratings: dd.DataFrame,
    objective: Objective,
    *,
    max_iter: int,
    seed: int,
    n_blocks: int | None,
    client=None,
    warm_start: TrainingResult | None = None,
    max_recoveries: int = 3,
    checkpoint_every: int = 10,
) -> TrainingResult:
    """Factor ``ratings`` (canonical columns, validated) with blocked ALS.

    ``warm_start`` seeds the factors (and biases) of users and items it knows; others start
    from the seed as usual. When a worker dies and takes data with it, training resumes
    from the last checkpoint (the factors copied to the client every ``checkpoint_every``
    epochs, like Spark's checkpoints) on rebuilt blocks, at most ``max_recoveries`` times;
    the result is the same as without the failure.
    """
    trainer = BlockedALSTrainer(ratings, objective, seed=seed, n_blocks=n_blocks, client=client, warm_start=warm_start,
                                max_iter=max_iter, checkpoint_every=checkpoint_every)
    recoveries = 0
    try:
        while trainer.epoch < max_iter:
            try:
                trainer.train_epoch()
            except WORKER_FAILURES as failure:
                recoveries += 1
                if recoveries > max_recoveries:
                    raise
                logger.warning(
                    "epoch %d lost data on a failed worker (%s: %s); rebuilding blocks, resuming from epoch %d",
                    trainer.epoch + 1, type(failure).__name__, failure, trainer.checkpoint["epoch"],
                )
                trainer.recover()
        return trainer.result()
    finally:
        trainer.close()  # nothing stays on the cluster, whether the fit ends or fails


@dataclass
class _Epoch:
    """A submitted epoch: its block tables and block summaries (futures on a cluster, values
    without one)."""

    number: int
    users: list
    items: list
    summaries: list


class BlockedALSTrainer:
    """The ALS training state on a cluster; :meth:`train_epoch` completes one epoch.

    ``max_iter`` bounds how far ahead epochs are submitted.
    """

    def __init__(self, ratings: dd.DataFrame, objective: Objective, *, seed: int, n_blocks: int | None,
                 client=None, warm_start: TrainingResult | None = None, max_iter: int | None = None,
                 checkpoint_every: int = 10):
        self.client = _dask.resolve_client(client)
        self.objective = objective
        self.n_blocks = n_blocks or _dask.total_threads(self.client)
        self.max_iter = max_iter
        self.checkpoint_every = max(1, checkpoint_every)
        self.ratings = ratings
        # one pass over the ratings for the vocabularies and the rating statistics
        ((user_unique, item_unique, (total, count, low, high)),) = _dask.compute([ids_and_stats(ratings)], self.client)
        self.user_ids = IdVocabulary(user_unique)
        self.item_ids = IdVocabulary(item_unique)
        self.n_ratings = count
        if count == 0:
            raise ValueError("no ratings to train on: the ratings table is empty (after any threshold)")
        self.global_mean = total / count
        self.rating_range = (low, high)
        self.seed = seed
        self.workers = _worker_slots(self.client)
        self._build_blocks()
        # Conjugate gradient starts from the previous epoch's rows of the side it solves.
        self.keeps_users = objective.solver == "cg"
        self._warm = {} if warm_start is None else {
            "users": _warm_rows(self.user_ids, warm_start.user_ids, warm_start.users, objective.rank),
            "items": _warm_rows(self.item_ids, warm_start.item_ids, warm_start.items, objective.rank),
        }
        # epoch 0: the initial tables, recomputed from the seed (and warm start) when needed
        self.checkpoint = {"epoch": 0, "users": None, "items": None, "history": []}
        self._restore_checkpoint()

    def _build_blocks(self) -> None:
        """Submit the partition of the ratings into user and item blocks, kept on the workers
        (block ``b`` of either side on the worker of slot ``b``, see :meth:`_on_worker`). Not
        waited for: the first epoch is submitted behind it."""
        user_blocks, item_blocks = build_rating_blocks(
            self.ratings, _dask.broadcast(self.user_ids, self.client), _dask.broadcast(self.item_ids, self.client),
            len(self.user_ids), len(self.item_ids), self.n_blocks, placement=self._on_worker,
        )
        blocks = self._submit(user_blocks + item_blocks)
        self.user_blocks, self.item_blocks = blocks[: len(user_blocks)], blocks[len(user_blocks) :]
        logger.info(
            "blocking %d ratings of %d users x %d items into %d user and %d item blocks",
            self.n_ratings, len(self.user_ids), len(self.item_ids), len(self.user_blocks), len(self.item_blocks),
        )

    def _on_worker(self, block: int | None):
        """Annotation context: tasks built inside go to the worker of slot ``block mod n_slots``
        (one slot per worker thread, interleaved across workers; another worker takes them
        only when that one is gone); no preference for None or without a cluster."""
        if block is None or not self.workers:
            return contextlib.nullcontext()
        return dask.annotate(workers=[self.workers[block % len(self.workers)]], allow_other_workers=True)

    def _initial_tables(self, side: str) -> list:
        """Submitted initial tables of ``side``, one per block, each computed where its block lives."""
        ids, stream = (self.user_ids, USER_STREAM) if side == "users" else (self.item_ids, ITEM_STREAM)
        hashes = ids.id_hashes()
        bounds = block_bounds(len(ids), self.n_blocks)
        warm = self._warm.get(side)
        initial = dask.delayed(initial_block_table, pure=True)
        # A scattered root: the scheduler forgets released tasks once their scattered roots
        # are gone (it cannot recompute them), so the lineage of the epochs does not pile up.
        root = _dask.broadcast(stream, self.client)
        tables = []
        for b in range(len(bounds) - 1):
            lo, hi = int(bounds[b]), int(bounds[b + 1])
            known = None
            if warm is not None:
                found, position, known_table = warm[0][lo:hi], warm[1][lo:hi], warm[2]
                position = position[found]
                known = (np.flatnonzero(found), known_table.factors[position],
                         None if known_table.biases is None else known_table.biases[position])
            with self._on_worker(b):
                tables.append(initial(hashes[lo:hi], lo, self.objective, self.seed, root, known))
        return self._submit(tables)

    def _submit(self, delayed_objects: list) -> list:
        """Futures of ``delayed_objects`` on a cluster (not waited for); their values without one."""
        if self.client is not None:
            return self.client.compute(delayed_objects)
        return list(dask.compute(*delayed_objects))

    def _restore_checkpoint(self) -> None:
        """Continue from the checkpoint: its tables (one per side), or the initial tables."""
        self.epoch = self.checkpoint["epoch"]
        self.history = list(self.checkpoint["history"])
        if self.checkpoint["items"] is None:
            self._latest_users = self._initial_tables("users") if self.keeps_users else None
            self._latest_items = self._initial_tables("items")
        else:
            users = self.checkpoint["users"]
            self._latest_users = [_dask.broadcast(users, self.client)] if self.keeps_users else None
            self._latest_items = [_dask.broadcast(self.checkpoint["items"], self.client)]
        self._pending: list[_Epoch] = []
        self._last_done = time.perf_counter()

    def _submit_epoch(self) -> None:
        """Submit the epoch after the last submitted one: user solves, item solves, summaries."""
        number = (self._pending[-1].number if self._pending else self.epoch) + 1
        objective, mean = self.objective, self.global_mean
        solve_users = dask.delayed(solve_user_block, pure=False)
        solve_items = dask.delayed(solve_item_block, pure=False)
        summarize = dask.delayed(table_summary, pure=False)
        previous_users = self._latest_users if self.keeps_users else None
        previous_items = self._latest_items if self.keeps_users else None
        users, items = [], []
        for b, block in enumerate(self.user_blocks):
            with self._on_worker(b):
                users.append(solve_users(block, self._latest_items, _covering(previous_users, b), mean, objective, False))
        for b, block in enumerate(self.item_blocks):
            with self._on_worker(b):
                items.append(solve_items(block, users, _covering(previous_items, b), mean, objective, True))
        results = self._submit(users + items + [summarize(table) for table in users + items])
        n_users, n_items = len(users), len(items)
        epoch = _Epoch(number, results[:n_users], results[n_users : n_users + n_items], results[n_users + n_items :])
        self._pending.append(epoch)
        self._latest_users, self._latest_items = epoch.users, epoch.items

    def train_epoch(self) -> dict:
        """Complete the next epoch (submitting it, and the one after, if not yet submitted);
        returns and logs the epoch's record."""
        if self.user_blocks is None:
            raise RuntimeError("this trainer was closed (after a divergence, or at the end of fit_als)")
        if not self._pending:
            self._submit_epoch()
        if self.client is not None and (self.max_iter is None or self._pending[-1].number < self.max_iter):
            self._submit_epoch()  # one ahead: the workers go on while the client reads this epoch
        epoch = self._pending.pop(0)
        summaries = self.client.gather(epoch.summaries) if self.client is not None else epoch.summaries
        epoch.summaries = []  # released: only the tables of the last epoch done are kept
        n_users = len(epoch.users)
        user_summary, item_summary = _add_summaries(summaries[:n_users]), _add_summaries(summaries[n_users:])
        for side, summary in (("user", user_summary), ("item", item_summary)):
            if summary[2]:
                self.close()
                raise FloatingPointError(
                    f"ALS diverged: {summary[2]} non-finite {side} factors in iteration {epoch.number}; "
                    "increase reg or check the ratings for extreme values"
                )
        loss, count = item_summary[0], item_summary[1]
        if self.objective.implicit:
            name, value = "train_loss", (loss + float(np.sum(user_summary[3] * item_summary[3]))) / count
        else:
            name, value = "train_rmse", math.sqrt(loss / count)
        now = time.perf_counter()
        # epoch 1's seconds include building the blocks (submitted just before it)
        record = {"epoch": epoch.number, name: value, "seconds": now - self._last_done}
        self._last_done = now
        self.epoch = epoch.number
        self.history.append(record)
        self._done = epoch
        if self.epoch % self.checkpoint_every == 0 or self.epoch == self.max_iter:
            self._save_checkpoint(epoch)
        logger.info("epoch %d %s=%.5f seconds=%.2f", epoch.number, name, value, record["seconds"])
        return record

    def _save_checkpoint(self, epoch: _Epoch) -> None:
        """Copy the epoch's tables to the client (joined per side)."""
        tables = self.client.gather(epoch.users + epoch.items) if self.client is not None else epoch.users + epoch.items
        n_users = len(epoch.users)
        self.checkpoint = {
            "epoch": epoch.number,
            "users": join_tables(tables[:n_users]),
            "items": join_tables(tables[n_users:]),
            "history": list(self.history),
        }

    def close(self) -> None:
        """Release everything this trainer holds on the cluster (blocks, tables, submitted
        epochs); the trainer cannot be used afterwards."""
        self._pending.clear()
        self._latest_users = self._latest_items = self._done = None
        self.user_blocks = self.item_blocks = None

    def recover(self) -> None:
        """Rebuild lost state after a worker failure: blocks from the source, factors from the checkpoint."""
        self._pending.clear()
        self.workers = _worker_slots(self.client)
        self._build_blocks()
        self._restore_checkpoint()

    def result(self) -> TrainingResult:
        if self.checkpoint["epoch"] != self.epoch or self.checkpoint["items"] is None:
            done = self._done if self.epoch else _Epoch(0, self._latest_users or self._initial_tables("users"),
                                                        self._latest_items, [])
            self._save_checkpoint(done)
        return TrainingResult(
            self.user_ids, self.item_ids, self.checkpoint["users"], self.checkpoint["items"], self.global_mean,
            self.n_ratings, len(self.user_blocks), self.rating_range, self.history,
        )


def _worker_slots(client) -> list[str]:
    """Worker addresses, one entry per thread, interleaved (a, b, a, b, a for 3 + 2 threads)."""
    if client is None:
        return []
    threads = dict(client.nthreads())  # every worker (scheduler_info may list only a few)
    return [address for round_ in range(max(threads.values(), default=0)) for address in sorted(threads)
            if threads[address] > round_]


def _covering(tables: list | None, block: int):
    """The table of ``tables`` (one per block, or one for all) that covers block ``block``."""
    if tables is None:
        return None
    return tables[block] if len(tables) > 1 else tables[0]


def _add_summaries(summaries: list) -> tuple[float, int, int, np.ndarray | None]:
    return (sum(s[0] for s in summaries), sum(s[1] for s in summaries), sum(s[2] for s in summaries),
            _sum_grams([s[3] for s in summaries]))


def initial_block_table(id_hashes: np.ndarray, start: int, objective: Objective, seed: int, stream: int,
                        known: tuple | None) -> FactorTable:
    """The initial table of one block (rows ``start ..``): seeded factors and zero biases,
    overwritten by ``known = (positions, factors, biases or None)`` rows (warm start), with
    its Gram matrix when the objective is implicit. Computed on the worker that keeps it."""
    factors = initial_factors(id_hashes, objective.rank, seed, stream, objective.nonnegative)
    biases = np.zeros(len(id_hashes), dtype=np.float32) if objective.use_biases else None
    if known is not None:
        positions, known_factors, known_biases = known
        factors[positions] = known_factors
        if biases is not None and known_biases is not None:
            biases[positions] = known_biases
    return FactorTable(factors, biases, gram=gram_of(factors) if objective.implicit else None, start=start)


def _warm_rows(ids: IdVocabulary, known_ids: IdVocabulary, known: FactorTable, rank: int) -> tuple:
    """Warm start of one side: per id of ``ids``, whether ``known`` has it (bool) and its row
    there; and ``known`` itself."""
    if known.factors.shape[1] != rank:
        raise ValueError(f"warm start model has rank {known.factors.shape[1]}, this fit has rank {rank}")
    position = known_ids.index_of(ids.ids)
    return position >= 0, position, known
