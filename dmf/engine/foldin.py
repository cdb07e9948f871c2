"""Fold-in: the factors (and bias) of new or changed rows against a model's fixed other side.

A folded-in row solves the objective of a training half-step exactly: the same squared
error (or implicit confidence-weighted loss with the Gram trick), the same weighted-λ
penalties, the same biases, the same nonnegativity. A model trained with ``solver="cg"``
takes a few conjugate-gradient steps per epoch towards that solution; fold-in solves it
outright (Cholesky, :meth:`Objective.fold_in`), which is what the half-step converges to;
an SVD model folds in by projection (:class:`dmf.engine.svd.Projection`). Plain NumPy on arrays, no
Dask: the estimators run it locally for a few rows and per partition for many.
"""

from __future__ import annotations

import numpy as np

from dmf.engine.blocks import rows_to_csr
from dmf.engine.kernels import RatingBlock
from dmf.engine.solve import FactorTable, Objective
from dmf.model.fitted import FittedModel


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
    indices of the other side) against ``model``'s fixed other side, by the training
    objective's own rule (``objective.fold_in``: the exact half-step for ALS and SGD, the
    projection for SVD)."""
    if side not in ("users", "items"):
        raise ValueError(f"side must be 'users' or 'items', got {side!r}")
    return objective.fold_in(model, side, block)
