"""Validation during a fit: held-out pairs blocked once like the training users, scored on the
workers after every epoch against that epoch's factor tables (no pass over the source data).

Explicit feedback records ``validation_rmse`` (and ``validation_mae``): the predictions are
the model's (global mean and biases, clipped to the training range when ``clip``). Implicit
feedback records ``validation_ndcg@k``: each validation user's top-k among the items it did
not train on, against its validation items (all relevant). Pairs with a user or item the
training data lacks are left out and counted (``validation_pairs`` says how many count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf import scheduler
from dmf.columns import ITEM, RATING, USER
from dmf.engine.blocks import rows_to_csr, split_rows
from dmf.engine.layout import BlockLayout

#: Users scored at a time by the ranking validation (a 512 × n_items score matrix).
_RANKING_CHUNK = 512


@dataclass(frozen=True)
class ValidationSpec:
    """What a fit validates on: held-out ``pairs`` (canonical columns), whether predictions are
    clipped to the training range (as the estimator scores), the ranking cutoff ``k`` for
    implicit feedback, and ``patience``: stop after that many epochs without a better
    validation score and keep the best epoch's factors (None: run every epoch, keep the last)."""

    pairs: dd.DataFrame
    clip: bool = False
    patience: int | None = None
    k: int = 10
    #: Score by ranking (NDCG@k, precision@k) rather than by rating error; None: by ranking
    #: exactly when the model's scores only rank (implicit feedback).
    ranking: bool | None = None
    #: Score every epoch (a validation curve), or only the last (a search without early stopping).
    every_epoch: bool = True
    #: The metric early stopping watches (``"rmse"``, ``"mae"``, ``"ndcg@10"``, …); None:
    #: RMSE, or NDCG@k when ranking.
    watch: str | None = None

    def wanted(self, epoch: int, max_iter: int | None) -> bool:
        """Whether epoch ``epoch`` is scored."""
        return self.every_epoch or self.patience is not None or epoch == max_iter

    def build(self, trainer, ranking: bool) -> Validation:
        ranking = ranking if self.ranking is None else self.ranking
        """The blocked validation of a trainer (its vocabularies, user layout and placement),
        shared by the fits on the same prepared ratings (a search fold)."""
        prepared = getattr(trainer, "prepared", None)
        key = ("validation", self.pairs._name, ranking, self.k, self.clip, self.watch)
        if prepared is not None and key in prepared.cache:
            return prepared.cache[key]
        built = Validation(self.pairs, trainer.user_ids, trainer.item_ids, trainer.user_layout, trainer.placement,
                           trainer.client, ranking=ranking, k=self.k,
                           clip_range=trainer.rating_range if self.clip else None, watch=self.watch)
        if prepared is not None:
            prepared.cache[key] = built
        return built


@dataclass(frozen=True)
class ValidationBlock:
    """Validation pairs of one user block: CSR rows (local users) of global item indices."""

    indptr: np.ndarray
    items: np.ndarray
    values: np.ndarray


def split_validation(part: pd.DataFrame, user_ids, item_ids, user_bounds: np.ndarray) -> tuple:
    """A partition of validation pairs as one piece per user block (known ids only) and the
    count of pairs left out as the last element."""
    users = user_ids.index_of(part[USER].to_numpy())
    items = item_ids.index_of(part[ITEM].to_numpy())
    known = (users >= 0) & (items >= 0)
    values = part[RATING].to_numpy(dtype=np.float32)[known] if RATING in part.columns else None
    return split_rows(users[known], items[known], values, user_bounds) + (int((~known).sum()),)


def assemble_validation(pieces: list, n_rows: int) -> ValidationBlock:
    rows = np.concatenate([p[0] for p in pieces]) if pieces else np.empty(0, np.int32)
    cols = np.concatenate([p[1] for p in pieces]) if pieces else np.empty(0, np.int32)
    values = np.concatenate([p[2] for p in pieces]) if pieces else np.empty(0, np.float32)
    indptr, cols, values = rows_to_csr(rows, cols, values, n_rows)
    return ValidationBlock(indptr, cols, values)


def _joined(tables: list) -> tuple[np.ndarray, np.ndarray | None]:
    factors = np.concatenate([t.factors for t in tables])
    biases = None if tables[0].biases is None else np.concatenate([t.biases for t in tables])
    return factors, biases


def validation_errors(block: ValidationBlock, users, item_tables: list, mean: float, clip_range) -> tuple:
    """(Σ squared error, Σ absolute error, count) of a block's validation pairs."""
    item_factors, item_biases = _joined(item_tables)
    rows = np.repeat(np.arange(len(block.indptr) - 1), np.diff(block.indptr))
    predicted = np.einsum("ij,ij->i", users.factors[rows].astype(np.float64), item_factors[block.items].astype(np.float64))
    if users.biases is not None:
        predicted += mean + users.biases[rows] + item_biases[block.items]
    if clip_range is not None:
        predicted = np.clip(predicted, *clip_range)
    errors = block.values - predicted
    return float(np.dot(errors, errors)), float(np.abs(errors).sum()), len(errors)


def validation_ranking(block: ValidationBlock, train_block, users, item_tables: list, k: int) -> tuple:
    """(Σ NDCG@k, Σ precision@k with min(k, n) as denominator, users) of a block's validation users."""
    item_factors, item_biases = _joined(item_tables)
    counts = np.diff(block.indptr)
    wanted = np.flatnonzero(counts)
    ndcg = precision = 0.0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for start in range(0, len(wanted), _RANKING_CHUNK):
        rows = wanted[start : start + _RANKING_CHUNK]
        scores = users.factors[rows] @ item_factors.T
        if users.biases is not None:  # the model's own scores: μ is the same for every item
            scores += users.biases[rows, None] + item_biases[None, :]
        for position, row in enumerate(rows):
            scores[position, train_block.cols[train_block.indptr[row] : train_block.indptr[row + 1]]] = -np.inf
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        for position, row in enumerate(rows):
            relevant = block.items[block.indptr[row] : block.indptr[row + 1]]
            hits = np.isin(top[position], relevant)
            ideal = discounts[: min(k, len(relevant))].sum()
            ndcg += float(discounts[: len(hits)][hits].sum() / ideal)
            precision += float(hits.sum() / min(k, len(relevant)))
    return ndcg, precision, len(wanted)


class Validation:
    """Validation pairs blocked by the training user layout, on the workers; :meth:`score`
    scores one epoch's tables."""

    def __init__(self, pairs: dd.DataFrame, user_ids, item_ids, user_layout: BlockLayout, placement, client, *,
                 ranking: bool, k: int = 10, clip_range=None, watch: str | None = None):
        self.placement, self.ranking, self.k, self.clip_range, self.watch = placement, ranking, k, clip_range, watch
        bounds = user_layout.bounds
        n_blocks = len(bounds) - 1
        split = dask.delayed(split_validation, nout=n_blocks + 1, pure=True)
        pieces = [split(part, scheduler.broadcast(user_ids, client), scheduler.broadcast(item_ids, client), bounds)
                  for part in pairs.to_delayed()]
        assemble = dask.delayed(assemble_validation, pure=True)
        blocks = []
        for b, lo, hi in user_layout:
            with placement.on_worker(b):
                blocks.append(assemble([piece[b] for piece in pieces], hi - lo))
        left_out = dask.delayed(sum, pure=True)([piece[n_blocks] for piece in pieces])
        submitted = placement.submit(blocks + [left_out])
        self.blocks, self.left_out = submitted[:-1], submitted[-1]

    def score(self, user_tables: list, item_tables: list, mean: float, train_user_blocks: list | None = None) -> dict:
        """The validation record of one epoch (computed on the workers, summed here)."""
        if self.ranking:
            run = dask.delayed(validation_ranking, pure=False)
            tasks = []
            for b, (block, users) in enumerate(zip(self.blocks, user_tables)):
                with self.placement.on_worker(b):
                    tasks.append(run(block, train_user_blocks[b], users, item_tables, self.k))
            sums = self.placement.gather(self.placement.submit(tasks))
            n = self._counted(sum(s[2] for s in sums), "users")
            return {f"validation_ndcg@{self.k}": sum(s[0] for s in sums) / n if n else math.nan,
                    f"validation_precision@{self.k}": sum(s[1] for s in sums) / n if n else math.nan,
                    "validation_users": n}
        run = dask.delayed(validation_errors, pure=False)
        tasks = []
        for b, (block, users) in enumerate(zip(self.blocks, user_tables)):
            with self.placement.on_worker(b):
                tasks.append(run(block, users, item_tables, mean, self.clip_range))
        sums = self.placement.gather(self.placement.submit(tasks))
        n = self._counted(sum(s[2] for s in sums), "pairs")
        return {"validation_rmse": math.sqrt(sum(s[0] for s in sums) / n) if n else math.nan,
                "validation_mae": sum(s[1] for s in sums) / n if n else math.nan, "validation_pairs": n}

    def _counted(self, n: int, what: str) -> int:
        """``n``, or a ``ValueError`` when nothing could be scored (a NaN score would pass silently)."""
        if n == 0:
            left_out = self.placement.gather([self.left_out])[0]
            raise ValueError(f"the validation set has no {what} to score: none of its pairs has a user and an item "
                             f"the training ratings know ({left_out} pairs left out)")
        return n

    @property
    def metric(self) -> tuple[str, bool]:
        """(name of the record that early stopping watches, whether higher is better)."""
        name = self.watch or (f"ndcg@{self.k}" if self.ranking else "rmse")
        return f"validation_{name}", name.startswith(("ndcg", "precision"))


def mean_of(objective, global_mean: float) -> float:
    """The offset of predictions: the global mean with biases, else 0."""
    return global_mean if getattr(objective, "use_biases", False) and not getattr(objective, "implicit", False) else 0.0


def mark_kept(history: list[dict], epoch: int) -> list[dict]:
    """The history with ``"kept": True`` on the record of the epoch whose factors the model holds."""
    return [{**record, "kept": True} if record["epoch"] == epoch else record for record in history]
