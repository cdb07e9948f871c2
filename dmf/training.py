"""Blocked ALS training loop on Dask: the functional core behind :class:`dmf.ALS`.

One epoch = two half-steps. The user half-step solves every user block against the item
factor table, which is a single graph key that each worker fetches once; the item half-step
does the same the other way round. Each epoch persists the two new tables, waits, and drops
the previous ones, so the graph never grows: 2·n_blocks + 4 tasks per epoch.
"""

from __future__ import annotations

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
from dmf.blocks import build_blocks
from dmf.columns import ITEM, ITEM_INDEX, RATING, USER, USER_INDEX
from dmf.kernels import RatingBlock, SolveOptions, solve_rows
from dmf.vocabulary import IdVocabulary

logger = logging.getLogger(__name__)

USER_STREAM, ITEM_STREAM = 1, 2

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
    the objective needs it.
    """

    factors: np.ndarray
    biases: np.ndarray | None
    loss: float = 0.0
    count: int = 0
    n_nonfinite: int = 0
    gram: np.ndarray | None = None


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
    factors = entity_normals(seed, stream, id_hashes, rank) / math.sqrt(rank)
    return (np.abs(factors) if nonnegative else factors).astype(np.float32)


def solve_block(
    block: RatingBlock,
    other: FactorTable,
    previous: FactorTable | None,
    global_mean: float,
    objective: Objective,
    with_loss: bool = True,
) -> FactorTable:
    """Solve one block's rows against the other side's fixed table.

    ``previous`` is this side's table of the last epoch (the conjugate-gradient start), or
    None. ``with_loss`` also computes the training loss of the block's ratings.
    """
    rank = objective.rank
    values = block.values.astype(np.float64)
    initial = None
    if previous is not None:
        initial = previous.factors[block.start : block.start + block.n_rows]
    # Scores of the block's ratings under the new rows, filled by the solver (loss only).
    scores = np.empty(block.nnz) if with_loss else None
    if objective.implicit:
        confidence = 1.0 + objective.alpha * np.abs(values)
        preference = (values > 0).astype(np.float64)
        solution = solve_rows(block, other.factors, confidence * preference, objective.solve_options(other.gram),
                              weights=confidence - 1.0, initial=initial, scores=scores)
        factors, biases = solution.astype(np.float32), None
        loss = 0.0
        if with_loss:
            # Σ over observed pairs of c·(p − s)² − s²; the unobserved part, Σ over all pairs
            # of s², is trace(XᵀX·YᵀY) and is added from the two tables' Gram matrices.
            loss = float(np.dot(confidence, (preference - scores) ** 2) - np.dot(scores, scores))
    else:
        other_bias = other.biases[block.cols].astype(np.float64) if objective.use_biases else 0.0
        targets = values - global_mean - other_bias if objective.use_biases else values
        if initial is not None and objective.use_biases:
            initial = np.hstack([initial, previous.biases[block.start : block.start + block.n_rows, None]])
        solution = solve_rows(block, other.factors, targets, objective.solve_options(None),
                              append_ones=objective.use_biases, initial=initial, scores=scores)
        factors = solution[:, :rank].astype(np.float32)
        biases = solution[:, rank].astype(np.float32) if objective.use_biases else None
        # targets − scores = rating − (μ + b_other + b_row + p·q): the training error
        loss = float(np.sum((targets - scores) ** 2)) if with_loss else 0.0
    nonfinite = int((~np.isfinite(factors)).sum()) + (int((~np.isfinite(biases)).sum()) if biases is not None else 0)
    return FactorTable(factors, biases, loss, len(values), nonfinite)


def solve_user_block(*args) -> FactorTable:
    """User half-step on one block (named for the dashboard)."""
    return solve_block(*args)


def solve_item_block(*args) -> FactorTable:
    """Item half-step on one block (named for the dashboard)."""
    return solve_block(*args)


def assemble_factor_table(tables: list[FactorTable], with_gram: bool = False) -> FactorTable:
    """Concatenate block tables in block order into the side's full table (with its Gram
    matrix, computed once here and shared by every row of the next half-step)."""
    factors = np.concatenate([t.factors for t in tables])
    biases = None if tables[0].biases is None else np.concatenate([t.biases for t in tables])
    gram = None
    if with_gram:
        as_float64 = factors.astype(np.float64)
        gram = as_float64.T @ as_float64
    return FactorTable(
        factors, biases, sum(t.loss for t in tables), sum(t.count for t in tables),
        sum(t.n_nonfinite for t in tables), gram,
    )


def table_summary(table: FactorTable) -> tuple[float, int, int, np.ndarray | None]:
    return table.loss, table.count, table.n_nonfinite, table.gram


def block_rating_stats(block: RatingBlock) -> tuple[float, int, float, float]:
    """(sum, count, min, max) of a block's ratings."""
    if block.nnz == 0:
        return 0.0, 0, np.inf, -np.inf
    values = block.values.astype(np.float64)
    return float(values.sum()), block.nnz, float(values.min()), float(values.max())


def index_ratings(ratings: dd.DataFrame, user_ids, item_ids) -> dd.DataFrame:
    """Replace ids by vocabulary indices (-1 when unknown); keeps the rating column."""
    meta = pd.DataFrame(
        {USER_INDEX: pd.Series([], dtype="int64"), ITEM_INDEX: pd.Series([], dtype="int64"),
         RATING: pd.Series([], dtype="float32")}
    )
    return ratings.map_partitions(_index_partition, user_ids, item_ids, meta=meta)


def _index_partition(part: pd.DataFrame, user_ids: IdVocabulary, item_ids: IdVocabulary) -> pd.DataFrame:
    return pd.DataFrame(
        {
            USER_INDEX: user_ids.index_of(part[USER]),
            ITEM_INDEX: item_ids.index_of(part[ITEM]),
            RATING: part[RATING].to_numpy(dtype=np.float32),
        }
    )


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
) -> TrainingResult:
    """Factor ``ratings`` (canonical columns, validated) with blocked ALS.

    ``warm_start`` seeds the factors (and biases) of users and items it knows; others start
    from the seed as usual. When a worker dies and takes data with it, the epoch is redone
    from the last epoch's factors (kept on the client, like Spark's checkpoints) on rebuilt
    blocks, at most ``max_recoveries`` times; the result is the same as without the failure.
    """
    trainer = BlockedALSTrainer(ratings, objective, seed=seed, n_blocks=n_blocks, client=client, warm_start=warm_start)
    recoveries = 0
    while trainer.epoch < max_iter:
        try:
            trainer.train_epoch()
        except WORKER_FAILURES as failure:
            recoveries += 1
            if recoveries > max_recoveries:
                raise
            logger.warning(
                "epoch %d lost data on a failed worker (%s: %s); rebuilding blocks, resuming from epoch %d",
                trainer.epoch + 1, type(failure).__name__, failure, trainer.epoch,
            )
            trainer.recover()
    return trainer.result()


class BlockedALSTrainer:
    """The ALS training state on a cluster; :meth:`train_epoch` runs one epoch."""

    def __init__(self, ratings: dd.DataFrame, objective: Objective, *, seed: int, n_blocks: int | None,
                 client=None, warm_start: TrainingResult | None = None):
        self.client = _dask.resolve_client(client)
        self.objective = objective
        self.n_blocks = n_blocks or 2 * _dask.total_threads(self.client)
        self.ratings = ratings
        user_unique, item_unique = _dask.compute(
            # a tree reduction (split_out=1): 3x faster than the default shuffle on 18 M ratings
            [ratings[USER].drop_duplicates(split_out=1), ratings[ITEM].drop_duplicates(split_out=1)], self.client
        )
        self.user_ids = IdVocabulary(user_unique.to_numpy())
        self.item_ids = IdVocabulary(item_unique.to_numpy())
        self._build_blocks()
        stats = _dask.compute([dask.delayed(block_rating_stats)(b) for b in self.user_blocks], self.client)
        self.n_ratings = sum(s[1] for s in stats)
        self.global_mean = sum(s[0] for s in stats) / self.n_ratings
        self.rating_range = (min(s[2] for s in stats), max(s[3] for s in stats))
        # Conjugate gradient starts from the previous epoch's rows of the side it solves.
        self.keeps_users = objective.solver == "cg"
        users = _initial_table(self.user_ids, objective, seed, USER_STREAM, warm_start and warm_start.user_ids,
                               warm_start and warm_start.users)
        items = _initial_table(self.item_ids, objective, seed, ITEM_STREAM, warm_start and warm_start.item_ids,
                               warm_start and warm_start.items)
        self.checkpoint = {"users": users if self.keeps_users else None, "items": items}
        self._restore_checkpoint()
        self.epoch = 0
        self.history: list[dict] = []

    def _build_blocks(self) -> None:
        """Partition the ratings into user and item blocks and persist them on the workers."""
        started = time.perf_counter()
        indexed = index_ratings(
            self.ratings, _dask.broadcast(self.user_ids, self.client), _dask.broadcast(self.item_ids, self.client)
        )
        user_blocks = build_blocks(indexed, USER_INDEX, ITEM_INDEX, RATING, len(self.user_ids), self.n_blocks, "user")
        item_blocks = build_blocks(indexed, ITEM_INDEX, USER_INDEX, RATING, len(self.item_ids), self.n_blocks, "item")
        blocks = _dask.persist(user_blocks + item_blocks, self.client)
        self.user_blocks, self.item_blocks = blocks[: len(user_blocks)], blocks[len(user_blocks) :]
        logger.info(
            "blocked ratings of %d users x %d items into %d user and %d item blocks in %.1f s",
            len(self.user_ids), len(self.item_ids), len(self.user_blocks), len(self.item_blocks),
            time.perf_counter() - started,
        )

    def _restore_checkpoint(self) -> None:
        items = self.checkpoint["items"]
        if self.objective.implicit and items.gram is None:
            items = assemble_factor_table([items], with_gram=True)
        self.item_table = _dask.broadcast(items, self.client)
        users = self.checkpoint["users"]
        self.user_table = None if users is None else _dask.broadcast(users, self.client)

    def train_epoch(self) -> dict:
        """Solve all users, then all items; returns and logs the epoch's record."""
        started = time.perf_counter()
        epoch = self.epoch + 1
        objective, implicit = self.objective, self.objective.implicit
        solve_users = dask.delayed(solve_user_block, pure=False)
        solve_items = dask.delayed(solve_item_block, pure=False)
        assemble = dask.delayed(assemble_factor_table, pure=False)
        summarize = dask.delayed(table_summary, pure=True)
        previous_users = self.user_table if self.keeps_users else None
        previous_items = self.item_table if self.keeps_users else None
        # The previous tables stay referenced until the new ones are in memory: the cluster
        # releases a key as soon as the client drops its last reference.
        new_users = assemble(
            [solve_users(b, self.item_table, previous_users, self.global_mean, objective, False)
             for b in self.user_blocks],
            implicit,
        )
        new_items = assemble(
            [solve_items(b, new_users, previous_items, self.global_mean, objective) for b in self.item_blocks],
            implicit,
        )
        user_table, item_table = _dask.persist([new_users, new_items], self.client)
        wanted = [summarize(user_table), summarize(item_table), item_table]
        if self.keeps_users:
            wanted.append(user_table)
        user_summary, item_summary, *checkpoint = _dask.compute(wanted, self.client)
        for side, summary in (("user", user_summary), ("item", item_summary)):
            if summary[2]:
                raise FloatingPointError(
                    f"ALS diverged: {summary[2]} non-finite {side} factors in iteration {epoch}; "
                    "increase reg or check the ratings for extreme values"
                )
        self.user_table, self.item_table, self.epoch = user_table, item_table, epoch
        self.checkpoint = {"items": checkpoint[0], "users": checkpoint[1] if self.keeps_users else None}
        loss, count = item_summary[0], item_summary[1]
        if implicit:
            name, value = "train_loss", (loss + float(np.sum(user_summary[3] * item_summary[3]))) / count
        else:
            name, value = "train_rmse", math.sqrt(loss / count)
        record = {"epoch": epoch, name: value, "seconds": time.perf_counter() - started}
        self.history.append(record)
        logger.info("epoch %d %s=%.5f seconds=%.2f", epoch, name, value, record["seconds"])
        return record

    def recover(self) -> None:
        """Rebuild lost state after a worker failure: blocks from the source, factors from the checkpoint."""
        self._build_blocks()
        self._restore_checkpoint()

    def result(self) -> TrainingResult:
        users = self.checkpoint["users"]
        if users is None:
            (users,) = _dask.compute([self.user_table], self.client)
        return TrainingResult(
            self.user_ids, self.item_ids, users, self.checkpoint["items"], self.global_mean, self.n_ratings,
            len(self.user_blocks), self.rating_range, self.history,
        )


def _initial_table(ids: IdVocabulary, objective: Objective, seed: int, stream: int,
                   known_ids: IdVocabulary | None, known: FactorTable | None) -> FactorTable:
    """Seeded factors (zero biases), overwritten by ``known`` rows for ids it has (warm start)."""
    factors = initial_factors(ids.id_hashes(), objective.rank, seed, stream, objective.nonnegative)
    biases = np.zeros(len(ids), dtype=np.float32) if objective.use_biases else None
    if known is not None:
        if known.factors.shape[1] != objective.rank:
            raise ValueError(f"warm start model has rank {known.factors.shape[1]}, this fit has rank {objective.rank}")
        position = known_ids.index_of(ids.ids)
        found = position >= 0
        factors[found] = known.factors[position[found]]
        if biases is not None and known.biases is not None:
            biases[found] = known.biases[position[found]]
    return FactorTable(factors, biases)
