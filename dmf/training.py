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
from dmf.kernels import RatingBlock, predict_ratings, solve_rows
from dmf.vocabulary import IdVocabulary

logger = logging.getLogger(__name__)

USER_STREAM, ITEM_STREAM = 1, 2

#: Errors by which the cluster reports that work was lost with a worker.
WORKER_FAILURES = _dask.WORKER_FAILURES


@dataclass
class FactorTable:
    """Factors and biases of a range of rows, with the training error of their ratings.

    ``factors`` is float32 (n, rank); ``biases`` float32 (n,) or None when biases are off.
    ``squared_error`` and ``count`` cover the ratings of these rows under the factors that
    produced them; ``n_nonfinite`` counts NaN/inf entries.
    """

    factors: np.ndarray
    biases: np.ndarray | None
    squared_error: float = 0.0
    count: int = 0
    n_nonfinite: int = 0


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


def initial_factors(id_hashes: np.ndarray, rank: int, seed: int, stream: int) -> np.ndarray:
    """Initial factors (float32, (n, rank)): N(0, 1/rank) per entry, a function of seed and id."""
    return (entity_normals(seed, stream, id_hashes, rank) / math.sqrt(rank)).astype(np.float32)


def solve_block(
    block: RatingBlock, other: FactorTable, global_mean: float, reg: float, bias_reg: float, damping: float, use_biases: bool
) -> FactorTable:
    """Solve one block's rows against the other side's fixed factors (exact, Cholesky)."""
    rank = other.factors.shape[1]
    penalties = np.full(rank + int(use_biases), reg)
    damping = np.full_like(penalties, damping)
    if use_biases:
        penalties[rank], damping[rank] = bias_reg, 0.0
    values = block.values.astype(np.float64)
    other_bias = other.biases[block.cols].astype(np.float64) if use_biases else 0.0
    targets = values - global_mean - other_bias if use_biases else values
    solution = solve_rows(block, other.factors, targets, penalties, append_ones=use_biases, damping=damping)
    factors = solution[:, :rank].astype(np.float32)
    biases = solution[:, rank].astype(np.float32) if use_biases else None
    rows = block.row_of_rating()
    offset = global_mean + biases[rows] + other_bias if use_biases else 0.0
    errors = values - predict_ratings(factors, other.factors, rows, block.cols, offset)
    nonfinite = int((~np.isfinite(factors)).sum()) + (int((~np.isfinite(biases)).sum()) if use_biases else 0)
    return FactorTable(factors, biases, float(np.dot(errors, errors)), len(errors), nonfinite)


def solve_user_block(*args) -> FactorTable:
    """User half-step on one block (named for the dashboard)."""
    return solve_block(*args)


def solve_item_block(*args) -> FactorTable:
    """Item half-step on one block (named for the dashboard)."""
    return solve_block(*args)


def assemble_factor_table(tables: list[FactorTable]) -> FactorTable:
    """Concatenate block tables in block order into the side's full table."""
    biases = None if tables[0].biases is None else np.concatenate([t.biases for t in tables])
    return FactorTable(
        np.concatenate([t.factors for t in tables]),
        biases,
        sum(t.squared_error for t in tables),
        sum(t.count for t in tables),
        sum(t.n_nonfinite for t in tables),
    )


def table_summary(table: FactorTable) -> tuple[float, int, int]:
    return table.squared_error, table.count, table.n_nonfinite


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
    *,
    rank: int,
    reg: float,
    bias_reg: float,
    damping: float,
    max_iter: int,
    seed: int,
    n_blocks: int | None,
    use_biases: bool,
    client=None,
    warm_start: TrainingResult | None = None,
    max_recoveries: int = 3,
) -> TrainingResult:
    """Factor ``ratings`` (canonical columns, validated) with blocked ALS-WR.

    Parameters are those of :class:`dmf.ALS`. ``warm_start`` seeds the item factors (and
    biases) of items it knows; other items start from the seed as usual. When a worker dies
    and takes data with it, the epoch is redone from the last epoch's item factors (kept on
    the client, like Spark's checkpoints) on rebuilt blocks, at most ``max_recoveries``
    times; the result is the same as without the failure.
    """
    trainer = BlockedALSTrainer(
        ratings, rank=rank, reg=reg, bias_reg=bias_reg, damping=damping, seed=seed,
        n_blocks=n_blocks, use_biases=use_biases, client=client, warm_start=warm_start,
    )
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

    def __init__(self, ratings: dd.DataFrame, *, rank, reg, bias_reg, damping, seed, n_blocks, use_biases,
                 client=None, warm_start: TrainingResult | None = None):
        self.client = _dask.resolve_client(client)
        self.n_blocks = n_blocks or 2 * _dask.total_threads(self.client)
        self.ratings = ratings
        user_unique, item_unique = _dask.compute(
            [ratings[USER].drop_duplicates(), ratings[ITEM].drop_duplicates()], self.client
        )
        self.user_ids = IdVocabulary(user_unique.to_numpy())
        self.item_ids = IdVocabulary(item_unique.to_numpy())
        self._build_blocks()
        stats = _dask.compute([dask.delayed(block_rating_stats)(b) for b in self.user_blocks], self.client)
        self.n_ratings = sum(s[1] for s in stats)
        self.global_mean = sum(s[0] for s in stats) / self.n_ratings
        self.rating_range = (min(s[2] for s in stats), max(s[3] for s in stats))
        self.settings = (self.global_mean, reg, bias_reg, damping, use_biases)
        self.checkpoint = _initial_items(self.item_ids, rank, seed, use_biases, warm_start)
        self.item_table = _dask.broadcast(self.checkpoint, self.client)
        self.user_table = None
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

    def train_epoch(self) -> dict:
        """Solve all users, then all items; returns and logs the epoch's record."""
        started = time.perf_counter()
        epoch = self.epoch + 1
        solve_users = dask.delayed(solve_user_block, pure=False)
        solve_items = dask.delayed(solve_item_block, pure=False)
        assemble = dask.delayed(assemble_factor_table, pure=False)
        summarize = dask.delayed(table_summary, pure=True)
        # The previous tables stay referenced until the new ones are in memory: the cluster
        # releases a key as soon as the client drops its last reference.
        new_users = assemble([solve_users(b, self.item_table, *self.settings) for b in self.user_blocks])
        new_items = assemble([solve_items(b, new_users, *self.settings) for b in self.item_blocks])
        user_table, item_table = _dask.persist([new_users, new_items], self.client)
        user_summary, item_summary, checkpoint = _dask.compute(
            [summarize(user_table), summarize(item_table), item_table], self.client
        )
        for side, summary in (("user", user_summary), ("item", item_summary)):
            if summary[2]:
                raise FloatingPointError(
                    f"ALS diverged: {summary[2]} non-finite {side} factors in iteration {epoch}; "
                    "increase reg or check the ratings for extreme values"
                )
        self.user_table, self.item_table, self.checkpoint, self.epoch = user_table, item_table, checkpoint, epoch
        squared_error, count, _ = item_summary
        record = {"epoch": epoch, "train_rmse": math.sqrt(squared_error / count), "seconds": time.perf_counter() - started}
        self.history.append(record)
        logger.info("epoch %d train_rmse=%.5f seconds=%.2f", epoch, record["train_rmse"], record["seconds"])
        return record

    def recover(self) -> None:
        """Rebuild lost state after a worker failure: blocks from the source, items from the checkpoint."""
        self._build_blocks()
        self.item_table = _dask.broadcast(self.checkpoint, self.client)

    def result(self) -> TrainingResult:
        (users,) = _dask.compute([self.user_table], self.client)
        return TrainingResult(
            self.user_ids, self.item_ids, users, self.checkpoint, self.global_mean, self.n_ratings,
            len(self.user_blocks), self.rating_range, self.history,
        )


def _initial_items(item_ids: IdVocabulary, rank, seed, use_biases, warm_start) -> FactorTable:
    factors = initial_factors(item_ids.id_hashes(), rank, seed, ITEM_STREAM)
    biases = np.zeros(len(item_ids), dtype=np.float32) if use_biases else None
    if warm_start is not None:
        known = warm_start.item_ids.index_of(item_ids.ids)
        found = known >= 0
        if warm_start.items.factors.shape[1] != rank:
            raise ValueError(
                f"warm start model has rank {warm_start.items.factors.shape[1]}, this fit has rank {rank}"
            )
        factors[found] = warm_start.items.factors[known[found]]
        if use_biases and warm_start.items.biases is not None:
            biases[found] = warm_start.items.biases[known[found]]
    return FactorTable(factors, biases)
