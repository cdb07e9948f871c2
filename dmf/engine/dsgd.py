"""Distributed SGD matrix factorization (DSGD, Gemulla et al. 2011): the functional core
behind :class:`dmf.SGD`; :func:`fit_sgd` returns a :class:`~dmf.model.FittedModel`.

The ratings are cut once into a ``d × d`` grid (:mod:`dmf.engine.grid`), kept on the
workers: cell ``(b, c)`` on the worker of user block ``b``. An epoch is ``d`` sub-epochs; a
sub-epoch runs one stratum, the ``d`` cells ``(b, (b + shift) mod d)``, which share no user
and no item, so their SGD passes run in parallel and their result equals a sequential pass
in that order. Each cell task receives its user block's rows (already on that worker) and its
item block's rows, runs the compiled pass and returns both: only the rows a cell touches
travel, nothing is broadcast. The visiting order (within a cell, and of the strata) comes
from the seed, so the same seed and grid give the same factors on any number of workers.

Step size: the *bold driver* (as in DSGD++): after an epoch whose training loss went down
the step grows by 5 %, after one where it went up it halves, so a too large start recovers
without tuning. ``schedule="constant"`` keeps the step fixed (as Surprise's ``SVD``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import dask
import dask.dataframe as dd
import numpy as np

from dmf import scheduler
from dmf.engine._compiled_sgd import sgd_pass
from dmf.engine.grid import assemble_cell, block_counts, seen_of_user_block, split_into_cells, stratum_order
from dmf.engine.layout import BlockLayout
from dmf.engine.placement import Placement, dropped, fitted_model, gathered_seen, restore_best, train_epochs
from dmf.engine.prepared import rating_stats
from dmf.engine.solve import (
    FactorTable,
    add_summaries,
    initial_block_table,
    join_tables,
    known_rows,
    table_summary,
    warm_rows,
)
from dmf.engine.validation import ValidationSpec
from dmf.model.fitted import FittedModel
from dmf.random import ITEM_FACTOR_STREAM, USER_FACTOR_STREAM

logger = logging.getLogger(__name__)

#: Bold driver: the step's factor after an epoch whose loss went down, and after one where it went up.
GROW, SHRINK = 1.05, 0.5


@dataclass(frozen=True)
class SGDObjective:
    """What :class:`dmf.SGD` minimizes and how it steps: squared error on the ratings with
    penalty ``reg·n_u + damping`` on factors and ``bias_reg·n_u + bias_damping`` on biases (the
    loss of :class:`dmf.ALS`), initial factors N(0, init_std²)."""

    rank: int
    learning_rate: float
    reg: float
    bias_reg: float
    damping: float = 0.0
    bias_damping: float = 0.0
    use_biases: bool = True
    init_std: float = 0.1
    schedule: str = "bold-driver"
    # what the shared initial tables read of an objective
    implicit = False
    nonnegative = False


def sgd_cell(cell, users: FactorTable, items: FactorTable, user_counts: np.ndarray, item_counts: np.ndarray,
             mean: float, step: float, objective: SGDObjective, first_of_epoch: bool) -> tuple[FactorTable, FactorTable]:
    """One cell's SGD pass on copies of its user and item rows (named for the dashboard).
    The user table carries the epoch's loss and count so far (reset by the epoch's first cell)."""
    user_factors, item_factors = users.factors.copy(), items.factors.copy()
    user_biases = users.biases.copy() if objective.use_biases else np.zeros(0, np.float32)
    item_biases = items.biases.copy() if objective.use_biases else np.zeros(0, np.float32)
    loss = sgd_pass(cell.users, cell.items, cell.values, user_factors, item_factors, user_biases, item_biases,
                    user_counts, item_counts, float(mean), float(step), float(objective.reg), float(objective.bias_reg),
                    float(objective.damping), float(objective.bias_damping), objective.use_biases)
    earlier_loss, earlier_count = (0.0, 0) if first_of_epoch else (users.loss, users.count)
    nonfinite = int(np.count_nonzero(~np.isfinite(user_factors))) + int(np.count_nonzero(~np.isfinite(item_factors)))
    biases = (user_biases, item_biases) if objective.use_biases else (None, None)
    return (FactorTable(user_factors, biases[0], earlier_loss + loss, earlier_count + len(cell), nonfinite,
                        start=users.start),
            FactorTable(item_factors, biases[1], start=items.start))


def fit_sgd(ratings: dd.DataFrame, objective: SGDObjective, *, max_iter: int, seed: int, grid: int, client=None,
            warm_start: FittedModel | None = None, max_recoveries: int = 3, checkpoint_every: int = 10,
            estimator: str = "SGD", params: dict | None = None, validation: ValidationSpec | None = None) -> FittedModel:
    """Factor ``ratings`` (canonical columns, validated) by DSGD on a ``grid × grid`` grid
    (fewer blocks when there are fewer users or items). ``warm_start``, recovery from a lost
    worker, ``validation`` and the result are as for :func:`dmf.engine.trainer.fit_als`."""
    trainer = DSGDTrainer(ratings, objective, seed=seed, grid=grid, client=client, warm_start=warm_start,
                          max_iter=max_iter, checkpoint_every=checkpoint_every, validation=validation)
    return train_epochs(trainer, max_iter, max_recoveries, estimator, params)


class DSGDTrainer:
    """The DSGD state on a cluster; :meth:`train_epoch` completes one epoch."""

    def __init__(self, ratings: dd.DataFrame, objective: SGDObjective, *, seed: int, grid: int, client=None,
                 warm_start: FittedModel | None = None, max_iter: int | None = None, checkpoint_every: int = 10,
                 validation: ValidationSpec | None = None):
        self.client = scheduler.resolve_client(client)
        self.objective, self.seed, self.max_iter = objective, seed, max_iter
        self.checkpoint_every = max(1, checkpoint_every)
        self.ratings = ratings
        self.user_ids, self.item_ids, self.n_ratings, self.global_mean, self.rating_range = rating_stats(
            ratings, self.client)
        d = max(1, min(int(grid), len(self.user_ids), len(self.item_ids)))
        self.user_layout, self.item_layout = BlockLayout(len(self.user_ids), d), BlockLayout(len(self.item_ids), d)
        self.d = d
        self.placement = Placement(self.client)
        self._warm = warm_start
        self._build_grid()
        self.validation_spec, self._best = validation, None
        if validation is not None and validation.ranking:
            raise ValueError("SGD validates by rating error (validation_rmse), not by ranking")
        self.validation = None if validation is None else validation.build(self, ranking=False)
        self.checkpoint = {"epoch": 0, "users": None, "items": None, "history": [],
                           "step": objective.learning_rate, "loss": math.inf}
        self._restore_checkpoint()
        self._seen_gathering = None

    def _build_grid(self) -> None:
        """Submit the grid's cells, cell ``(b, c)`` on the worker of slot ``b`` (not waited for)."""
        d = self.d
        user_key = scheduler.broadcast(self.user_ids, self.client)
        item_key = scheduler.broadcast(self.item_ids, self.client)
        split = dask.delayed(split_into_cells, nout=d * d, pure=True)
        pieces = [split(part, user_key, item_key, self.user_layout.bounds, self.item_layout.bounds)
                  for part in self.ratings.to_delayed()]
        assemble = dask.delayed(assemble_cell, pure=True)
        cells = []
        for b, user_start, _ in self.user_layout:
            for c, item_start, _ in self.item_layout:
                with self.placement.on_worker(b):
                    cells.append(assemble([piece[b * d + c] for piece in pieces], b, c, user_start, item_start,
                                          len(self.item_ids), self.seed))
        count = dask.delayed(block_counts, pure=True)
        counts = []
        for b, lo, hi in self.user_layout:
            with self.placement.on_worker(b):
                counts.append(count(cells[b * d : (b + 1) * d], "users", hi - lo))
        for c, lo, hi in self.item_layout:
            with self.placement.on_worker(c):
                counts.append(count(cells[c::d], "items", hi - lo))
        submitted = self.placement.submit(cells + counts)
        self.cells, self.user_counts, self.item_counts = (submitted[: d * d], submitted[d * d : d * d + d],
                                                          submitted[d * d + d :])
        logger.info("gridding %d ratings of %d users x %d items into %d x %d cells", self.n_ratings,
                    len(self.user_ids), len(self.item_ids), d, d)

    def _initial_tables(self, side: str) -> list:
        ids, layout, stream = ((self.user_ids, self.user_layout, USER_FACTOR_STREAM) if side == "users"
                               else (self.item_ids, self.item_layout, ITEM_FACTOR_STREAM))
        hashes = ids.id_hashes()
        known = warm_rows(ids, self._warm, side, self.objective.rank)
        initial = dask.delayed(initial_block_table, pure=True)
        # a scattered root, as in the ALS trainer: the lineage of the epochs does not pile up
        stream = scheduler.broadcast(stream, self.client)
        tables = []
        for b, lo, hi in layout:
            with self.placement.on_worker(b):
                tables.append(initial(hashes[lo:hi], lo, self.objective, self.seed, stream, known_rows(known, lo, hi),
                                      std=self.objective.init_std))
        return self.placement.submit(tables)

    def _restore_checkpoint(self) -> None:
        self.epoch, self.history = self.checkpoint["epoch"], list(self.checkpoint["history"])
        self.step, self.last_loss = self.checkpoint["step"], self.checkpoint["loss"]
        if self.checkpoint["users"] is None:
            self.users, self.items = self._initial_tables("users"), self._initial_tables("items")
        else:
            self.users = self.placement.submit([dask.delayed(_rows_of)(self.checkpoint["users"], lo, hi)
                                                for _, lo, hi in self.user_layout])
            self.items = self.placement.submit([dask.delayed(_rows_of)(self.checkpoint["items"], lo, hi)
                                                for _, lo, hi in self.item_layout])
        self._last_done = time.perf_counter()

    def train_epoch(self) -> dict:
        """Run the next epoch's ``d`` strata and adapt the step; returns and logs the record."""
        if self.cells is None:
            raise RuntimeError("this trainer was closed (after a divergence, or at the end of fit_sgd)")
        number, d = self.epoch + 1, self.d
        run = dask.delayed(sgd_cell, nout=2, pure=False)
        users, items = list(self.users), list(self.items)
        for s, shift in enumerate(stratum_order(self.seed, number, d)):
            for b in range(d):
                c = (b + int(shift)) % d
                with self.placement.on_worker(b):
                    users[b], items[c] = run(self.cells[b * d + c], users[b], items[c], self.user_counts[b],
                                             self.item_counts[c], self.global_mean, self.step, self.objective, s == 0)
        summarize = dask.delayed(table_summary, pure=False)
        submitted = self.placement.submit(users + items + [summarize(table) for table in users])
        self.users, self.items = submitted[:d], submitted[d : 2 * d]
        loss, count, nonfinite, _ = add_summaries(self.placement.gather(submitted[2 * d :]))
        if nonfinite or not math.isfinite(loss):
            self.close()
            raise FloatingPointError(f"SGD diverged: {nonfinite} non-finite factors in epoch {number} (step "
                                     f"{self.step:.3g}); lower learning_rate or raise reg")
        now = time.perf_counter()
        record = {"epoch": number, "train_rmse": math.sqrt(loss / count), "learning_rate": self.step,
                  "seconds": now - self._last_done}
        if self.validation is not None and self.validation_spec.wanted(number, self.max_iter):
            record.update(self.validation.score(self.users, self.items, self.global_mean))
        self._last_done = time.perf_counter()
        if self.objective.schedule == "bold-driver":
            self.step *= GROW if loss < self.last_loss else SHRINK
        self.last_loss, self.epoch = loss, number
        self.history.append(record)
        if self._seen_gathering is None and self.client is not None:
            self._seen_gathering = self.placement.gathering(self._seen_parts())
        if self.epoch % self.checkpoint_every == 0 or self.epoch == self.max_iter:
            self._save_checkpoint()
        logger.info("epoch %d train_rmse=%.5f (during the pass) step=%.4g seconds=%.2f", number,
                    record["train_rmse"], record["learning_rate"], record["seconds"])
        return record

    def keep_best(self) -> None:
        """Copy the last completed epoch's tables to the client as the best (early stopping)."""
        self._save_checkpoint()
        self._best = dict(self.checkpoint)

    def _save_checkpoint(self) -> None:
        """Copy the tables of the last epoch to the client."""
        tables = self.placement.gather(self.users + self.items)
        self.checkpoint = {"epoch": self.epoch, "users": join_tables(tables[: self.d]),
                           "items": join_tables(tables[self.d :]), "history": list(self.history),
                           "step": self.step, "loss": self.last_loss}

    def recover(self) -> None:
        """Rebuild the grid after a worker failure and resume from the checkpoint."""
        self.placement.refresh()
        self._seen_gathering = dropped(self._seen_gathering)  # it may wait for cells lost with the worker
        self._build_grid()
        if self.validation_spec is not None:
            self.validation = self.validation_spec.build(self, ranking=False)
        self._restore_checkpoint()

    def close(self) -> None:
        self.users = self.items = self.cells = self.user_counts = self.item_counts = None
        self._seen_gathering = dropped(self._seen_gathering)

    def _seen_parts(self) -> list:
        gather = dask.delayed(seen_of_user_block, pure=True)
        item_starts = [lo for _, lo, _ in self.item_layout]
        parts = []
        for b, lo, hi in self.user_layout:
            with self.placement.on_worker(b):
                parts.append(gather(self.cells[b * self.d : (b + 1) * self.d], hi - lo, item_starts))
        return self.placement.submit(parts)

    def result(self, estimator: str = "SGD", params: dict | None = None) -> FittedModel:
        seen = gathered_seen(self._seen_gathering, self._seen_parts, self.placement)  # may fail: before any change
        if not restore_best(self) and (self.checkpoint["epoch"] != self.epoch or self.checkpoint["users"] is None):
            self._save_checkpoint()
        return fitted_model(self, estimator, params, self.d, seen)


def _rows_of(table: FactorTable, lo: int, hi: int) -> FactorTable:
    """Rows ``lo .. hi-1`` of a joined table, as a block table."""
    return FactorTable(table.factors[lo:hi].copy(), None if table.biases is None else table.biases[lo:hi].copy(),
                       start=lo)
