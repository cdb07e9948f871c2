"""Fold-in: the factors (and bias) of new or changed rows against a model's fixed other side.

A folded-in row solves the objective of a training half-step exactly: the same squared
error (or implicit confidence-weighted loss with the Gram trick), the same weighted-λ
penalties, the same biases, the same nonnegativity. A model trained with ``solver="cg"``
takes a few conjugate-gradient steps per epoch towards that solution; fold-in solves it
outright (Cholesky), which is what the half-step converges to. Plain NumPy on arrays, no
Dask: the estimators run it locally for a few rows and per partition for many.
"""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np

from dmf.engine.blocks import rows_to_csr
from dmf.engine.kernels import RatingBlock
from dmf.engine.solve import FactorTable, Objective, gram_of, solve_block
from dmf.model.fitted import FittedModel

#: The other side's Gram matrix per model and side (implicit fold-in needs YᵀY; computing it
#: for 26.7 k × 64 factors takes longer than the fold-in itself).
_GRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def rating_block(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int) -> RatingBlock:
    """A :class:`RatingBlock` of rows ``0 .. n_rows - 1`` from (row, column, value) triples."""
    indptr, cols, values = rows_to_csr(np.asarray(rows, dtype=np.int32), np.asarray(cols, dtype=np.int32),
                                       np.asarray(values, dtype=np.float32), n_rows)
    repeated = np.flatnonzero((np.diff(cols) == 0) & (np.diff(np.repeat(np.arange(n_rows), np.diff(indptr))) == 0))
    if len(repeated):
        raise ValueError(f"fold-in ratings repeat {len(repeated)} (row, column) pairs; keep one rating per pair")
    return RatingBlock(start=0, indptr=indptr, cols=cols, values=values)


def fold_in_block(model: FittedModel, side: str, block: RatingBlock, objective: Objective) -> FactorTable:
    """Factors (and biases) of the rows of ``block`` (ratings of new ``side`` rows; columns are
    indices of the other side) against ``model``'s fixed other side. An ``objective`` that is
    not an :class:`Objective` folds in by its own ``fold_in(model, side, block)``."""
    if side not in ("users", "items"):
        raise ValueError(f"side must be 'users' or 'items', got {side!r}")
    if not isinstance(objective, Objective):  # a model that folds in by its own rule (SVD's projection)
        return objective.fold_in(model, side, block)
    other_factors = model.item_factors if side == "users" else model.user_factors
    other_biases = model.item_biases if side == "users" else model.user_biases
    gram = None
    if objective.implicit:
        grams = _GRAMS.setdefault(model, {})
        gram = grams.get(side)
        if gram is None:
            gram = grams[side] = gram_of(other_factors)
    exact = dataclasses.replace(objective, solver="cholesky")
    other = FactorTable(other_factors, other_biases, gram=gram)
    return solve_block(block, other, None, model.global_mean, exact, with_loss=False)
