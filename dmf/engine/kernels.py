"""Per-block numerical kernels: plain NumPy/SciPy functions of arrays, no Dask inside.

A *rating block* holds the ratings of a contiguous range of rows (users, or items) in CSR
form; ``cols`` index the other side's factor matrix. The ALS half-step solves, for every
row ``u`` of the block, the regularized normal equations

    (X_uᵀ X_u + λ·n_u·I) x_u = X_uᵀ y_u

where ``X_u`` stacks the other side's factors of the rows' rated entities (with a column of
ones appended when biases are learned), ``y_u`` the targets (rating minus global mean and
the other side's biases), and ``n_u`` the row's rating count (weighted-λ, ALS-WR).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack, solve_triangular
from scipy.optimize import nnls

from dmf.engine._compiled import (  # noqa: F401 - top_k_of_products is re-exported for the stages
    EXPLICIT,
    GIVEN,
    IMPLICIT,
    IMPLICIT_LOSS,
    NO_LOSS,
    SQUARED_LOSS,
    cg_solve_rows,
    rating_scores,
    top_k_of_products,
)
from dmf.engine._compiled_random import entity_uniforms
from dmf.random import box_muller, entity_keys

#: Padded row lengths: rows are batched with others of the same padded length. The ladder
#: depends on a row's count only, so a row's arithmetic is the same in any block layout.
_LENGTH_LADDER = np.unique(
    np.concatenate([np.arange(1, 17), np.ceil(16 * 1.25 ** np.arange(1, 80)).astype(np.int64)])
)
#: Bytes of gathered factors per batch (float64).
_BATCH_BYTES = 64 * 2**20
#: Empty arrays: "none" for the compiled solver's optional float32 and float64 inputs.
_NO_VALUES = np.empty(0, dtype=np.float32)
_NO_WEIGHTS = np.empty(0, dtype=np.float64)


@dataclass(frozen=True)
class RatingBlock:
    """Ratings of rows ``start .. start + n_rows - 1`` in CSR form.

    Attributes
    ----------
    start : int
        Global index of the block's first row.
    indptr : ndarray of int64, shape (n_rows + 1,)
        Row ``r``'s ratings are ``cols[indptr[r]:indptr[r + 1]]``, sorted by column.
    cols : ndarray of int32, shape (nnz,)
        Global indices into the other side's factors.
    values : ndarray of float32, shape (nnz,)
        Ratings.
    """

    start: int
    indptr: np.ndarray
    cols: np.ndarray
    values: np.ndarray

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def __sizeof__(self) -> int:  # what Dask counts for memory and transfers (dask.sizeof)
        return 128 + self.indptr.nbytes + self.cols.nbytes + self.values.nbytes

    @property
    def nnz(self) -> int:
        return len(self.cols)

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row_of_rating(self) -> np.ndarray:
        """Local row index (int64) of every rating."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), self.counts)


def padded_lengths(counts: np.ndarray) -> np.ndarray:
    """The batch length of rows with ``counts`` ratings (smallest ladder value >= count)."""
    position = np.searchsorted(_LENGTH_LADDER, counts, side="left")
    if position.size and position.max() >= len(_LENGTH_LADDER):
        raise ValueError(f"a row has {counts.max()} ratings, more than the supported {_LENGTH_LADDER[-1]}")
    return _LENGTH_LADDER[position]


@dataclass(frozen=True)
class SolveOptions:
    """How :func:`solve_rows` regularizes and solves each row's system.

    Row ``u`` with ``n_u`` ratings solves ``(base_gram + Σ w·x xᵀ + diag(reg·n_u + damping)) z = Σ t·x``
    where ``x`` runs over the gathered rows of the other side, ``w`` the rating weights and
    ``t`` the targets.

    Attributes
    ----------
    reg, damping : ndarray of float64, shape (width,)
        Per-coordinate penalty per rating and count-independent penalty.
    base_gram : ndarray (width, width) or None
        Added to every row's Gram matrix (implicit feedback: YᵀY of all other-side rows).
    solver : {"cholesky", "cg", "cg-numpy"}
        Exact Cholesky, or ``cg_steps`` conjugate-gradient steps from ``initial``: compiled
        (``"cg"``), or the same iteration in batched NumPy (``"cg-numpy"``, the reference the
        tests hold the compiled solver to).
    nonnegative : bool
        Constrain the solution to be >= 0 (NNLS per row), except the last coordinate when
        ``free_last`` (a bias).
    """

    reg: np.ndarray
    damping: np.ndarray
    base_gram: np.ndarray | None = None
    solver: str = "cholesky"
    cg_steps: int = 3
    nonnegative: bool = False
    free_last: bool = False


def solve_rows(
    block: RatingBlock,
    other_factors: np.ndarray,
    targets: np.ndarray,
    options: SolveOptions,
    *,
    append_ones: bool = False,
    weights: np.ndarray | None = None,
    initial: np.ndarray | None = None,
    scores: np.ndarray | None = None,
) -> np.ndarray:
    """Solve every row's regularized normal equations (see :class:`SolveOptions`).

    Parameters
    ----------
    block
        The rows to solve.
    other_factors : ndarray, shape (n_other, k)
        The fixed side's factors.
    targets : ndarray of float64, shape (block.nnz,)
        Right-hand side weight per rating.
    options
        Penalties and solver.
    append_ones
        Append a column of ones to ``other_factors`` (the solution's last coordinate is then
        the row's bias).
    weights : ndarray of float64, shape (block.nnz,), optional
        Weight of each rating's outer product in the Gram matrix (default 1).
    initial : ndarray, shape (block.n_rows, width), optional
        Starting point of the conjugate-gradient solver (default zeros).
    scores : ndarray of float64, shape (block.nnz,), optional
        Output: the score ``x_u · z_u`` of every rating under the solution (``x_u`` the
        rating's other-side row, with the appended one), for the training loss. The
        compiled solver fills it while the row's data is still in cache.

    Returns
    -------
    ndarray of float64, shape (block.n_rows, k + append_ones)
        Rows without ratings are zero.
    """
    n_other, rank = other_factors.shape
    width = rank + int(append_ones)
    if options.solver == "cg" and not options.nonnegative:
        solution = np.zeros((block.n_rows, width)) if initial is None else initial.astype(np.float64)
        _compiled_cg(block, other_factors, options, solution, GIVEN, append_ones,
                     targets=np.ascontiguousarray(targets, dtype=np.float64),
                     weights=_NO_WEIGHTS if weights is None else np.ascontiguousarray(weights, dtype=np.float64),
                     scores=_NO_WEIGHTS if scores is None else scores)
        return solution
    # One extra all-zero row: padding positions gather it and contribute nothing.
    design = np.zeros((n_other + 1, width), dtype=np.float64)
    design[:n_other, :rank] = other_factors
    if append_ones:
        design[:n_other, rank] = 1.0
    solution = np.zeros((block.n_rows, width), dtype=np.float64)
    counts = block.counts
    lengths = padded_lengths(counts)
    for length in np.unique(lengths[counts > 0]):
        rows = np.flatnonzero((lengths == length) & (counts > 0))
        batch = max(1, _BATCH_BYTES // (int(length) * width * 8))
        for begin in range(0, len(rows), batch):
            chunk = rows[begin : begin + batch]
            start = None if initial is None else initial[chunk].astype(np.float64)
            solution[chunk] = _solve_batch(block, design, targets, weights, chunk, int(length), options, start)
    if scores is not None:
        scores[:] = block_scores(block, solution, design)
    return solution


#: Alignment of the factor tables the compiled solver gathers from: rank-64 float32 rows
#: are 256 bytes, four whole cache lines each when the table starts on a 64-byte boundary
#: (measured: the item half-step of an ml-20m-sized block 20 % faster than unaligned).
_ALIGNMENT = 64


def aligned_float32(array: np.ndarray) -> np.ndarray:
    """``array`` as a C-contiguous float32 array starting on a 64-byte boundary (a copy only
    when it is not one already)."""
    if array.dtype == np.float32 and array.flags.c_contiguous and array.ctypes.data % _ALIGNMENT == 0:
        return array
    out = aligned_empty_float32(array.shape)
    out[...] = array
    return out


def aligned_empty_float32(shape: tuple) -> np.ndarray:
    """An uninitialized C-contiguous float32 array starting on a 64-byte boundary."""
    size = int(np.prod(shape))
    raw = np.empty(size * 4 + _ALIGNMENT, dtype=np.uint8)
    offset = -raw.ctypes.data % _ALIGNMENT
    return raw[offset : offset + size * 4].view(np.float32).reshape(shape)


def gathered_rows(block: RatingBlock, design: np.ndarray, targets: np.ndarray, rows: np.ndarray, length: int,
                  weights: np.ndarray | None = None) -> tuple:
    """The other-side rows of ``rows``' ratings, padded to ``length`` with the all-zero last row
    of ``design``: ``(gathered (m, L, width), Σ target·x per row (m, width), weights (m, L) or None)``."""
    counts = block.counts[rows]
    offsets = np.arange(length)
    valid = offsets[None, :] < counts[:, None]
    positions = np.where(valid, block.indptr[rows][:, None] + offsets[None, :], 0)
    gathered = design[np.where(valid, block.cols[positions], len(design) - 1)]  # (m, L, width)
    rhs_values = np.where(valid, targets[positions], 0.0)  # (m, L)
    row_weights = None if weights is None else np.where(valid, weights[positions], 0.0)
    rhs = np.matmul(gathered.transpose(0, 2, 1), rhs_values[:, :, None])[:, :, 0]  # (m, width)
    return gathered, rhs, row_weights


def _solve_batch(block, design, targets, weights, rows, length, options, initial) -> np.ndarray:
    counts = block.counts[rows]
    gathered, rhs, row_weights = gathered_rows(block, design, targets, rows, length, weights)
    penalty = counts[:, None] * options.reg[None, :] + options.damping[None, :]  # (m, width)
    if options.solver == "cg-numpy" and not options.nonnegative:
        start = np.zeros_like(rhs) if initial is None else initial
        return conjugate_gradient(gathered, row_weights, options.base_gram, penalty, rhs, start, options.cg_steps)
    weighted = gathered if row_weights is None else gathered * row_weights[:, :, None]
    gram = np.matmul(weighted.transpose(0, 2, 1), gathered)  # (m, width, width)
    if options.base_gram is not None:
        gram += options.base_gram[None, :, :]
    diagonal = np.arange(gram.shape[1])
    gram[:, diagonal, diagonal] += penalty
    if options.nonnegative:
        return solve_nonnegative(gram, rhs, free_last=options.free_last)
    return solve_spd(gram, rhs)


def conjugate_gradient(gathered, row_weights, base_gram, penalty, rhs, start, steps: int) -> np.ndarray:
    """``steps`` conjugate-gradient iterations for a batch of rows, never forming their Gram
    matrices (Takács et al. 2011; as in ``implicit``).

    The operator of row ``u`` is ``v ↦ base_gram·v + X_uᵀ(w_u ⊙ X_u v) + penalty_u ⊙ v``.
    """

    def apply(vectors):
        projected = np.matmul(gathered, vectors[:, :, None])[:, :, 0]  # (m, L)
        if row_weights is not None:
            projected = projected * row_weights
        out = np.matmul(gathered.transpose(0, 2, 1), projected[:, :, None])[:, :, 0]
        if base_gram is not None:
            out += vectors @ base_gram
        return out + penalty * vectors

    x = start.copy()
    residual = rhs - apply(x)
    direction = residual.copy()
    residual_norm = np.einsum("ij,ij->i", residual, residual)
    for _ in range(steps):
        if not residual_norm.any():
            break
        image = apply(direction)
        curvature = np.einsum("ij,ij->i", direction, image)
        step = np.divide(residual_norm, curvature, out=np.zeros_like(residual_norm), where=curvature > 0)
        x += step[:, None] * direction
        residual -= step[:, None] * image
        new_norm = np.einsum("ij,ij->i", residual, residual)
        ratio = np.divide(new_norm, residual_norm, out=np.zeros_like(new_norm), where=residual_norm > 0)
        direction = residual + ratio[:, None] * direction
        residual_norm = new_norm
    return x


def solve_nonnegative(gram: np.ndarray, rhs: np.ndarray, *, free_last: bool = False) -> np.ndarray:
    """Minimize ``½zᵀGz − hᵀz`` subject to ``z >= 0`` per system (Lawson–Hanson NNLS on the
    Cholesky factor: ``‖Lᵀz − L⁻¹h‖²``). With ``free_last`` the last coordinate (a bias) is
    unconstrained, written as the difference of two nonnegative variables."""
    out = np.empty_like(rhs)
    for row in range(len(gram)):
        system, target = gram[row], rhs[row]
        if free_last:
            system, target = _split_last(system, target)
        lower = np.linalg.cholesky(system)
        solution, _ = nnls(lower.T, solve_triangular(lower, target, lower=True), maxiter=50 * len(target))
        out[row] = solution[:-2].tolist() + [solution[-2] - solution[-1]] if free_last else solution
    return out


def _split_last(system: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rewrite the last variable b as b⁺ − b⁻ (both >= 0); a tiny ridge keeps the system definite."""
    width = len(target)
    expand = np.zeros((width, width + 1))
    expand[: width, : width] = np.eye(width)
    expand[width - 1, width] = -1.0
    split = expand.T @ system @ expand
    ridge = 1e-9 * np.trace(system) / width
    split[width - 1 :, width - 1 :] += ridge * np.eye(2)
    return split, expand.T @ target


def solve_spd(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve a stack of symmetric positive definite systems by Cholesky (LAPACK ``dposv``).

    One LAPACK call per system: measured at 21 µs per 65×65 system, against 34 µs for
    NumPy's batched LU ``np.linalg.solve`` and 80 µs for batched Cholesky plus two batched
    triangular solves (5,000 systems, one thread).
    """
    out = np.empty_like(rhs)
    for row in range(len(gram)):
        _, x, info = lapack.dposv(gram[row], rhs[row], lower=1, overwrite_a=1, overwrite_b=0)
        if info != 0:
            raise np.linalg.LinAlgError(f"normal equations of a row are not positive definite (info={info})")
        out[row] = x
    return out


def kernels_compiled() -> bool:
    """Whether numba's on-disk cache holds dmf's compiled kernels (after the first fit of an
    installation, each process loads them instead of compiling for several seconds)."""
    from pathlib import Path

    from dmf.engine import _compiled

    return any((Path(_compiled.__file__).parent / "__pycache__").glob("_compiled.cg_solve_rows-*.nbi"))


def seeded_normals(seed: int, stream: int, hashes: np.ndarray, width: int) -> np.ndarray:
    """:func:`dmf.random.entity_normals`, bit for bit, with the uniforms drawn by a compiled
    kernel: 1.7x faster for a block's initial factors (0.12 against 0.20 s for 69 k rows of
    rank 64; NumPy's ``log`` and ``cos`` are most of what remains)."""
    return box_muller(*entity_uniforms(entity_keys(seed, stream, hashes), width))


def block_scores(block: RatingBlock, row_factors: np.ndarray, col_factors: np.ndarray) -> np.ndarray:
    """Model score ``row · col`` (float64) of every rating of ``block``; ``row_factors`` are the
    block's own rows."""
    return rating_scores(block.indptr, block.cols, row_factors, col_factors)


def cg_solve_ratings(
    block: RatingBlock,
    other_factors: np.ndarray,
    options: SolveOptions,
    initial: np.ndarray,
    *,
    implicit: bool,
    alpha: float = 1.0,
    offset: float = 0.0,
    other_biases: np.ndarray | None = None,
    append_ones: bool = False,
    with_loss: bool = False,
) -> tuple[np.ndarray, float]:
    """The compiled CG solve of :func:`solve_rows` with the targets, weights and training loss
    computed from the block's ratings inside the kernel (no per-rating arrays in between).

    Explicit: target ``rating − offset − other_biases[col]``, weight 1, loss Σ (target − score)².
    Implicit: confidence ``c = 1 + alpha·|rating|``, target ``c·[rating > 0]``, weight ``c − 1``,
    loss the observed part Σ c·(p − score)² − score². ``initial`` (float64, (n_rows, width))
    is overwritten with the solution. Returns (solution, loss; 0.0 without ``with_loss``).
    """
    loss = _compiled_cg(
        block, other_factors, options, initial, IMPLICIT if implicit else EXPLICIT, append_ones, values=block.values,
        offset=offset, alpha=alpha,
        other_biases=_NO_VALUES if other_biases is None else np.ascontiguousarray(other_biases, dtype=np.float32),
        loss_kind=NO_LOSS if not with_loss else (IMPLICIT_LOSS if implicit else SQUARED_LOSS),
    )
    return initial, loss


def _compiled_cg(block, other_factors, options, solution, mode, append_ones, *, targets=_NO_WEIGHTS,
                 weights=_NO_WEIGHTS, values=_NO_VALUES, offset=0.0, other_biases=_NO_VALUES, alpha=0.0,
                 scores=_NO_WEIGHTS, loss_kind=NO_LOSS) -> float:
    """:func:`dmf._compiled.cg_solve_rows` on ``block`` in place on ``solution``; returns the loss."""
    base_gram = np.zeros((0, 0)) if options.base_gram is None else np.ascontiguousarray(options.base_gram)
    return float(cg_solve_rows(block.indptr, block.cols, mode, targets, weights, values, float(offset), other_biases,
                               float(alpha), aligned_float32(other_factors), append_ones, base_gram, options.reg,
                               options.damping, solution, int(options.cg_steps), scores, loss_kind))
