"""Blocked ALS training loop on Dask: the functional core behind :class:`dmf.ALS` and
:class:`dmf.ImplicitALS`; :func:`fit_als` returns a :class:`~dmf.model.FittedModel`.

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

import logging
import math
import time
from dataclasses import dataclass

import dask
import dask.dataframe as dd
import numpy as np

from dmf import scheduler
from dmf.engine.blocks import seen_pattern
from dmf.engine.kernels import kernels_compiled
from dmf.engine.placement import Gathering, Placement, dropped, fitted_model, gathered_seen, restore_best, train_epochs
from dmf.engine.prepared import PreparedRatings, prepare_ratings
from dmf.engine.routing import routes_chosen, solve_routed_block, take_rows, whole_side_gram
from dmf.engine.solve import (
    Objective,
    add_summaries,
    initial_block_table,
    join_tables,
    known_rows,
    solve_item_block,
    solve_user_block,
    table_summary,
    warm_rows,
)
from dmf.engine.validation import ValidationSpec, mean_of
from dmf.engine.warmup import compile_once
from dmf.model.fitted import FittedModel, SeenItems
from dmf.random import ITEM_FACTOR_STREAM, USER_FACTOR_STREAM

logger = logging.getLogger(__name__)

#: Errors by which the cluster reports that work was lost with a worker.
WORKER_FAILURES = scheduler.WORKER_FAILURES


def fit_als(
    ratings: dd.DataFrame,
    objective: Objective,
    *,
    max_iter: int,
    seed: int,
    n_blocks: int | None,
    client=None,
    warm_start: FittedModel | None = None,
    max_recoveries: int = 3,
    checkpoint_every: int = 10,
    estimator: str = "ALS",
    params: dict | None = None,
    validation: ValidationSpec | None = None,
    exchange: str = "auto",
) -> FittedModel:
    """Factor ``ratings`` (canonical columns, validated) with blocked ALS.

    Returns the fitted model, labelled with ``estimator`` and its ``params``, with the
    training interactions (``seen``). ``warm_start`` seeds the factors (and biases) of users and items it knows; others start
    from the seed as usual. When a worker dies and takes data with it, training resumes
    from the last checkpoint (the factors copied to the client every ``checkpoint_every``
    epochs, like Spark's checkpoints) on rebuilt blocks, at most ``max_recoveries`` times;
    the result is the same as without the failure. ``exchange`` chooses how the solves receive
    the other side's factors (``"all"``, ``"routed"``, ``"auto"``: see :mod:`dmf.engine.routing`);
    the factors are the same either way.
    """
    client = scheduler.resolve_client(client)
    if client is not None:
        compile_once(client, objective)
    elif not kernels_compiled():
        logger.info("compiling dmf's kernels: the first fit of an installation spends a few seconds more in epoch 1 "
                    "(numba caches them on disk)")
    trainer = BlockedALSTrainer(ratings, objective, seed=seed, n_blocks=n_blocks, client=client, warm_start=warm_start,
                                max_iter=max_iter, checkpoint_every=checkpoint_every, validation=validation,
                                exchange=exchange)
    if trainer.routes is not None:
        logger.info("exchanging factors by routes: each solve receives only the rows its block references")
    return train_epochs(trainer, max_iter, max_recoveries, estimator, params)


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

    def __init__(self, ratings: dd.DataFrame | PreparedRatings, objective: Objective, *, seed: int,
                 n_blocks: int | None,
                 client=None, warm_start: FittedModel | None = None, max_iter: int | None = None,
                 checkpoint_every: int = 10, validation: ValidationSpec | None = None, exchange: str = "auto"):
        self.client = scheduler.resolve_client(client)
        self.objective = objective
        self.exchange = exchange
        self.max_iter = max_iter
        self.checkpoint_every = max(1, checkpoint_every)
        self.seed = seed
        self.placement = Placement(self.client)
        self._use(ratings if isinstance(ratings, PreparedRatings) else
                  prepare_ratings(ratings, n_blocks, self.client, self.placement))
        self.validation_spec, self._best = validation, None
        self.validation = None if validation is None else validation.build(self, ranking=objective.implicit)
        # Conjugate gradient starts from the previous epoch's rows of the side it solves.
        self.keeps_users = objective.solver == "cg"
        self._warm = {side: warm_rows(ids, warm_start, side, objective.rank)
                      for side, ids in (("users", self.user_ids), ("items", self.item_ids))}
        # epoch 0: the initial tables, recomputed from the seed (and warm start) when needed
        self.checkpoint = {"epoch": 0, "users": None, "items": None, "history": []}
        self._seen_gathering: Gathering | None = None
        self._restore_checkpoint()

    def _use(self, prepared: PreparedRatings) -> None:
        """Train on ``prepared`` ratings (its blocks: block ``b`` of either side on the worker of
        slot ``b``, see :class:`Placement`; submitted, the first epoch is submitted behind them)."""
        self.prepared = prepared
        self.user_ids, self.item_ids = prepared.user_ids, prepared.item_ids
        self.n_ratings, self.global_mean, self.rating_range = prepared.n_ratings, prepared.global_mean, prepared.rating_range
        self.user_layout, self.item_layout = prepared.user_layout, prepared.item_layout
        self.user_blocks, self.item_blocks = list(prepared.user_blocks), list(prepared.item_blocks)
        routed = self.client is not None and routes_chosen(self.exchange, len(self.user_ids), len(self.item_ids),
                                                           self.objective.rank)
        self.routes = prepared.routes(self.placement) if routed else None

    def _initial_tables(self, side: str) -> list:
        """Submitted initial tables of ``side``, one per block, each computed where its block lives."""
        ids, layout, stream = ((self.user_ids, self.user_layout, USER_FACTOR_STREAM) if side == "users"
                               else (self.item_ids, self.item_layout, ITEM_FACTOR_STREAM))
        hashes = ids.id_hashes()
        warm = self._warm.get(side)
        initial = dask.delayed(initial_block_table, pure=True)
        # A scattered root: the scheduler forgets released tasks once their scattered roots
        # are gone (it cannot recompute them), so the lineage of the epochs does not pile up.
        root = scheduler.broadcast(stream, self.client)
        tables = []
        for b, lo, hi in layout:
            with self.placement.on_worker(b):
                tables.append(initial(hashes[lo:hi], lo, self.objective, self.seed, root, known_rows(warm, lo, hi)))
        return self.placement.submit(tables)

    def _restore_checkpoint(self) -> None:
        """Continue from the checkpoint: its tables (one per side), or the initial tables."""
        self.epoch = self.checkpoint["epoch"]
        self.history = list(self.checkpoint["history"])
        if self.checkpoint["items"] is None:
            self._latest_users = self._initial_tables("users") if self.keeps_users else None
            self._latest_items = self._initial_tables("items")
        else:
            users = self.checkpoint["users"]
            self._latest_users = [scheduler.broadcast(users, self.client)] if self.keeps_users else None
            self._latest_items = [scheduler.broadcast(self.checkpoint["items"], self.client)]
        self._pending: list[_Epoch] = []
        self._last_done = time.perf_counter()

    def _submit_epoch(self) -> None:
        """Submit the epoch after the last submitted one: user solves, item solves, summaries."""
        number = (self._pending[-1].number if self._pending else self.epoch) + 1
        summarize = dask.delayed(table_summary, pure=False)
        previous_users = self._latest_users if self.keeps_users else None
        previous_items = self._latest_items if self.keeps_users else None
        users = self._half_step("users", self._latest_items, previous_users)
        items = self._half_step("items", users, previous_items)
        results = self.placement.submit(users + items + [summarize(table) for table in users + items])
        n_users, n_items = len(users), len(items)
        epoch = _Epoch(number, results[:n_users], results[n_users : n_users + n_items], results[n_users + n_items :])
        self._pending.append(epoch)
        self._latest_users, self._latest_items = epoch.users, epoch.items

    def _half_step(self, side: str, other_tables: list, previous: list | None) -> list:
        """Delayed tables of ``side``, one per block (block ``b`` on the worker of slot ``b``),
        solved against ``other_tables``; the item half-step also computes the training loss.

        All-to-all, block ``b``'s solve joins every table of the other side. Routed, it solves
        its compact block against the pieces routed to it (:meth:`_routed`). A whole-side table
        (restored from a checkpoint) is not routed: every block gets it.
        """
        if self.routes is None or len(other_tables) == 1:
            solve = dask.delayed(solve_user_block if side == "users" else solve_item_block, pure=False)
            blocks = self.user_blocks if side == "users" else self.item_blocks
            others = [other_tables] * len(blocks)
        else:
            solve = dask.delayed(solve_routed_block, pure=False)
            blocks, others = self._routed(side, other_tables)
        tables = []
        for b, block in enumerate(blocks):
            with self.placement.on_worker(b):
                tables.append(solve(block, others[b], _covering(previous, b), self.global_mean, self.objective,
                                    side == "items"))
        return tables

    def _routed(self, side: str, other_tables: list) -> tuple[list, list]:
        """The compact blocks of ``side`` and, per block, ``(its pieces of other_tables, YᵀY of
        the whole other side or None)`` (:mod:`dmf.engine.routing`); piece ``c`` is cut on
        the worker of source block ``c``."""
        compact, rows_for = (self.routes[0], self.routes[3]) if side == "users" else (self.routes[2], self.routes[1])
        take = dask.delayed(take_rows, pure=False)
        gram = dask.delayed(whole_side_gram, pure=False)(other_tables) if self.objective.implicit else None
        routed = []
        for b in range(len(compact)):
            pieces = []
            for c, table in enumerate(other_tables):
                with self.placement.on_worker(c):
                    pieces.append(take(table, rows_for[c][b]))
            routed.append((pieces, gram))
        return compact, routed

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
        summaries = self.placement.gather(epoch.summaries)
        epoch.summaries = []  # released: only the tables of the last epoch done are kept
        n_users = len(epoch.users)
        user_summary, item_summary = add_summaries(summaries[:n_users]), add_summaries(summaries[n_users:])
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
        if self.validation is not None and self.validation_spec.wanted(epoch.number, self.max_iter):
            record.update(self.validation.score(epoch.users, epoch.items, mean_of(self.objective, self.global_mean),
                                                self.user_blocks))
        self._last_done = time.perf_counter()
        self.epoch = epoch.number
        self.history.append(record)
        self._done = epoch
        if self._seen_gathering is None and self.client is not None and "seen" not in self.prepared.cache:
            self._seen_gathering = self.placement.gathering(self._seen_parts())
        if self.epoch % self.checkpoint_every == 0 or self.epoch == self.max_iter:
            self._save_checkpoint(epoch)
        logger.info("epoch %d %s=%.5f seconds=%.2f", epoch.number, name, value, record["seconds"])
        return record

    def _save_checkpoint(self, epoch: _Epoch) -> None:
        """Copy the epoch's tables to the client (joined per side)."""
        tables = self.placement.gather(epoch.users + epoch.items)
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
        self._seen_gathering = dropped(self._seen_gathering)

    def recover(self) -> None:
        """Rebuild lost state after a worker failure: blocks from the source, factors from the checkpoint."""
        self._pending.clear()
        self._seen_gathering = dropped(self._seen_gathering)  # it may wait for blocks lost with the worker
        self.placement.refresh()
        self._use(self.prepared.rebuild(self.placement))
        if self.validation_spec is not None:
            self.validation = self.validation_spec.build(self, ranking=self.objective.implicit)
        self._restore_checkpoint()

    def keep_best(self) -> None:
        """Copy the last completed epoch's tables to the client as the best (early stopping)."""
        self._save_checkpoint(self._done)
        self._best = dict(self.checkpoint)

    def result(self, estimator: str = "ALS", params: dict | None = None) -> FittedModel:
        """The fitted model of the last completed epoch (or of the best one, with a validation),
        with the training interactions. What may fail with a lost worker (the gathers) comes
        before anything changes the trainer's state, so the recovery starts from a clean one."""
        seen = self._seen()
        if not restore_best(self) and (self.checkpoint["epoch"] != self.epoch or self.checkpoint["items"] is None):
            done = self._done if self.epoch else _Epoch(0, self._latest_users or self._initial_tables("users"),
                                                        self._latest_items, [])
            self._save_checkpoint(done)
        return fitted_model(self, estimator, params, self.user_layout.n_blocks, seen)

    def _seen_parts(self) -> list:
        """Submitted (row pointers, items) of every user block (values without a cluster)."""
        pattern = dask.delayed(seen_pattern, pure=True)
        return self.placement.submit([pattern(block) for block in self.user_blocks])

    def _seen(self) -> SeenItems:
        """The user blocks' (row, item) pattern gathered into one CSR over all users: from the
        gather started after epoch 1, or now (no cluster, no epoch, or that gather failed)."""
        if "seen" in self.prepared.cache:  # another fit on the same blocks gathered them
            return self.prepared.cache["seen"]
        seen = self.prepared.cache["seen"] = gathered_seen(self._seen_gathering, self._seen_parts, self.placement)
        return seen


def _covering(tables: list | None, block: int):
    """The table of ``tables`` (one per block, or one for all) that covers block ``block``."""
    if tables is None:
        return None
    return tables[block] if len(tables) > 1 else tables[0]
