"""Per-block half-step solves and the factor tables they exchange (no Dask inside).

A :class:`FactorTable` holds the factors and biases of a contiguous range of rows;
:func:`solve_user_block` / :func:`solve_item_block` solve one rating block against the
other side's tables (the names the dashboard shows). The training loop that schedules
these on the cluster is :mod:`dmf.engine.trainer`.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from dataclasses import dataclass

import numpy as np

from dmf.engine.kernels import RatingBlock, SolveOptions, aligned_empty_float32, cg_solve_ratings, seeded_normals, solve_rows

#: Rows of initial factors computed at a time (same values as one piece). At rank 64 the
#: temporaries are 64 KB: in cache, and under glibc's mmap threshold. In a Dask worker (its
#: nanny sets MALLOC_TRIM_THRESHOLD_) every larger temporary is mapped and faulted in anew:
#: 69 k rows x 64 took 0.11 s in chunks of 128 rows, 0.33 s in chunks of 512 or more.
_INITIAL_CHUNK = 128
#: The other side's Gram matrix per model and side (implicit fold-in needs YᵀY; computing it
#: for 26.7 k × 64 factors takes longer than the fold-in itself).
_GRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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

    def fold_in(self, model, side: str, block: RatingBlock) -> FactorTable:
        """The rows of ``block`` (new ``side`` rows) solved exactly (Cholesky, the point a
        half-step converges to) against ``model``'s fixed other side."""
        other_factors = model.item_factors if side == "users" else model.user_factors
        other_biases = model.item_biases if side == "users" else model.user_biases
        gram = None
        if self.implicit:  # YᵀY of the model's other side, computed once per model
            grams = _GRAMS.setdefault(model, {})
            gram = grams.get(side)
            if gram is None:
                gram = grams[side] = gram_of(other_factors)
        exact = dataclasses.replace(self, solver="cholesky")
        return solve_block(block, FactorTable(other_factors, other_biases, gram=gram), None, model.global_mean, exact,
                           with_loss=False)

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

    def __sizeof__(self) -> int:  # what Dask counts for memory and transfers (dask.sizeof)
        return 128 + sum(a.nbytes for a in (self.factors, self.biases, self.gram) if a is not None)


def initial_factors(id_hashes: np.ndarray, rank: int, seed: int, stream: int, nonnegative: bool = False) -> np.ndarray:
    """Initial factors (float32, (n, rank)): N(0, 1/rank) per entry (absolute values when
    ``nonnegative``), a function of the seed and each id only."""
    id_hashes = np.asarray(id_hashes, dtype=np.uint64)
    out = np.empty((len(id_hashes), rank), dtype=np.float32)
    for start in range(0, len(id_hashes), _INITIAL_CHUNK):
        factors = seeded_normals(seed, stream, id_hashes[start : start + _INITIAL_CHUNK], rank) / math.sqrt(rank)
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


def add_summaries(summaries: list) -> tuple[float, int, int, np.ndarray | None]:
    """Add :func:`table_summary` results of several blocks (Gram matrices summed)."""
    return (sum(s[0] for s in summaries), sum(s[1] for s in summaries), sum(s[2] for s in summaries),
            _sum_grams([s[3] for s in summaries]))


def table_summary(table: FactorTable) -> tuple[float, int, int, np.ndarray | None]:
    """What the client needs of a block table each epoch: (loss, count, non-finite count, Gram)."""
    return table.loss, table.count, table.n_nonfinite, table.gram


def initial_block_table(id_hashes: np.ndarray, start: int, objective: Objective, seed: int, stream: int,
                        known: tuple | None, std: float | None = None) -> FactorTable:
    """The initial table of one block (rows ``start ..``): seeded factors and zero biases,
    overwritten by ``known = (positions, factors, biases or None)`` rows (warm start), with
    its Gram matrix when the objective is implicit. Computed on the worker that keeps it.
    ``std`` scales the seeded factors to that standard deviation (default ``1/sqrt(rank)``)."""
    factors = initial_factors(id_hashes, objective.rank, seed, stream, objective.nonnegative)
    if std is not None:
        factors *= np.float32(std * math.sqrt(objective.rank))
    biases = np.zeros(len(id_hashes), dtype=np.float32) if objective.use_biases else None
    if known is not None:
        positions, known_factors, known_biases = known
        factors[positions] = known_factors
        if biases is not None and known_biases is not None:
            biases[positions] = known_biases
    return FactorTable(factors, biases, gram=gram_of(factors) if objective.implicit else None, start=start)


def warm_rows(ids, warm, side: str, rank: int) -> tuple | None:
    """Warm start of one side: per id of ``ids`` (a vocabulary), whether the warm model has it
    and its row there, with the warm model's factors and biases of that side; None without a
    warm model."""
    if warm is None:
        return None
    known_ids, factors, biases = ((warm.user_ids, warm.user_factors, warm.user_biases) if side == "users"
                                  else (warm.item_ids, warm.item_factors, warm.item_biases))
    if factors.shape[1] != rank:
        raise ValueError(f"warm start model has rank {factors.shape[1]}, this fit has rank {rank}")
    position = known_ids.index_of(ids.ids)
    return position >= 0, position, factors, biases


def known_rows(warm: tuple | None, lo: int, hi: int) -> tuple | None:
    """The ``known`` argument of :func:`initial_block_table` for rows ``lo .. hi-1``."""
    if warm is None:
        return None
    found, position, factors, biases = warm[0][lo:hi], warm[1][lo:hi], warm[2], warm[3]
    position = position[found]
    return np.flatnonzero(found), factors[position], None if biases is None else biases[position]
