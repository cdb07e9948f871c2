"""Truncated SVD of the rating matrix (PureSVD, Cremonesi et al. 2010) by randomized subspace
iteration (Halko, Martinsson, Tropp 2011) over the blocked layout: the functional core behind
:class:`dmf.SVD`; :func:`fit_svd` returns a :class:`~dmf.model.FittedModel`.

``A`` is the users × items matrix of the ratings, missing entries 0 (with ``center``, the
observed entries minus their mean μ). With ``l = rank + oversample`` columns:

1. ``Y = A·Ω`` for a seeded Gaussian ``Ω`` (items × l), then ``Q = orth(Y)``;
2. ``n_iter`` times: ``Q' = orth(Aᵀ·Q)``, ``Q = orth(A·Q')`` (power iterations, each
   re-orthonormalized, so the subspace converges to the top singular vectors);
3. ``Bᵀ = Aᵀ·Q`` (items × l); the eigen-decomposition of ``B·Bᵀ`` (l × l) gives the top
   singular values ``s`` and ``V = Bᵀ·U/s``: the item factors are the ``rank`` leading right
   singular vectors;
4. user factors ``P = A·V``: the projection of each user's row, so ``P·Vᵀ = A·V·Vᵀ`` is
   PureSVD's score and a new user is folded in by the same projection (no retraining).

Each product is one task per block (user blocks for ``A·X``, item blocks for ``Aᵀ·X``): the
block's CSR ratings times the other side's panel; only the l-column panels move.
``orth`` is CholeskyQR2: the panel's Gram matrix (summed on the client from per-grain Gram
matrices, in grain order, so the sum does not depend on the blocks), a Cholesky factor,
the panel times its inverse, twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import dask
import dask.dataframe as dd
import numpy as np
import scipy.linalg
import scipy.sparse

from dmf import scheduler
from dmf.engine.blocks import seen_pattern
from dmf.engine.kernels import RatingBlock, seeded_normals
from dmf.engine.layout import BlockLayout
from dmf.engine.placement import Placement
from dmf.engine.prepared import prepare_ratings
from dmf.engine.solve import FactorTable
from dmf.model.fitted import FittedModel, SeenItems
from dmf.random import SVD_TEST_STREAM

logger = logging.getLogger(__name__)

#: Rows of each side are cut into at most this many grains (see :class:`BlockLayout`).
GRAINS = 64


@dataclass(frozen=True)
class Projection:
    """How an SVD model folds in new rows (the ``objective`` of :mod:`dmf.engine.foldin`):
    a user is the projection of its (centred) ratings onto the item factors; an item, the
    least-squares fit of its ratings by the user factors (the same as training gives)."""

    rank: int
    center: bool

    def fold_in(self, model: FittedModel, side: str, block: RatingBlock) -> FactorTable:
        offset = model.global_mean if self.center else 0.0
        if side == "users":
            factors = multiply(block, [model.item_factors.astype(np.float64)], offset)
        else:
            users = model.user_factors.astype(np.float64)
            gram = users.T @ users
            rhs = multiply(block, [users], offset)
            factors = scipy.linalg.lstsq(gram, rhs.T)[0].T if len(rhs) else rhs
        factors = factors.astype(np.float32)
        biases = np.zeros(len(factors), np.float32) if self.center else None
        return FactorTable(factors, biases, n_nonfinite=int(np.count_nonzero(~np.isfinite(factors))))


def multiply(block: RatingBlock, panels: list[np.ndarray], offset: float) -> np.ndarray:
    """The block's ratings (minus ``offset``) as a sparse matrix times the joined ``panels``
    (the other side's rows in order): float64 (block rows, panel width). Each row's result
    depends on that row alone."""
    panel = panels[0] if len(panels) == 1 else np.concatenate(panels)
    matrix = scipy.sparse.csr_matrix((block.values.astype(np.float64) - offset, block.cols, block.indptr),
                                     shape=(block.n_rows, len(panel)))
    return np.asarray(matrix @ panel)


def grain_grams(panel: np.ndarray, start: int, grain_bounds: np.ndarray) -> list[np.ndarray]:
    """``Xᵀ·X`` of every grain inside the panel (rows ``start ..``), in grain order."""
    stop = start + len(panel)
    inside = grain_bounds[(grain_bounds >= start) & (grain_bounds <= stop)]
    grams = []
    for lo, hi in zip(inside[:-1], inside[1:]):
        rows = panel[lo - start : hi - start]
        grams.append(rows.T @ rows)
    return grams


def times(panel: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return panel @ matrix


def test_panel(hashes: np.ndarray, seed: int, width: int) -> np.ndarray:
    """Rows of the seeded Gaussian test matrix Ω (a function of the seed and each id)."""
    return seeded_normals(seed, SVD_TEST_STREAM, hashes, width)


def fit_svd(ratings: dd.DataFrame, *, rank: int, oversample: int, n_iter: int, center: bool, seed: int,
            n_blocks: int | None, client=None, estimator: str = "SVD", params: dict | None = None) -> FittedModel:
    """Truncated SVD of ``ratings`` (canonical columns, validated); see the module docstring."""
    client = scheduler.resolve_client(client)
    started = time.perf_counter()
    placement = Placement(client)
    prepared = prepare_ratings(ratings, n_blocks, client, placement, grains=GRAINS)
    user_ids, item_ids, mean, (low, high) = (prepared.user_ids, prepared.item_ids, prepared.global_mean,
                                             prepared.rating_range)
    users, items = prepared.user_layout, prepared.item_layout
    sweep = _Sweep(placement, prepared.user_blocks, prepared.item_blocks, users, items, mean if center else 0.0)
    width = max(1, min(rank + oversample, len(user_ids), len(item_ids)))
    panel = dask.delayed(test_panel, pure=True)
    hashes = item_ids.id_hashes()
    omega = placement.submit([panel(hashes[lo:hi], seed, width) for _, lo, hi in items])
    history = []
    q_users = sweep.orthonormal("users", sweep.product("users", omega))
    history.append({"epoch": 0, "seconds": time.perf_counter() - started})
    for iteration in range(1, n_iter + 1):
        q_items = sweep.orthonormal("items", sweep.product("items", q_users))
        q_users = sweep.orthonormal("users", sweep.product("users", q_items))
        history.append({"epoch": iteration, "seconds": time.perf_counter() - started - sum(h["seconds"] for h in history)})
        logger.info("subspace iteration %d of %d seconds=%.2f", iteration, n_iter, history[-1]["seconds"])
    b_transposed = sweep.product("items", q_users)
    gram = sweep.gram("items", b_transposed)
    eigenvalues, vectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1][: min(rank, width)]
    singular = np.sqrt(np.clip(eigenvalues[order], 0.0, None))
    kept = singular > singular[0] * 1e-10 if len(singular) and singular[0] > 0 else np.zeros(len(order), bool)
    mapping = np.zeros((width, rank))
    mapping[:, : len(order)] = np.where(kept, vectors[:, order] / np.where(kept, singular, 1.0), 0.0)
    item_panels = sweep.apply(b_transposed, mapping)
    user_panels = sweep.product("users", item_panels)
    seen_parts = placement.submit([dask.delayed(seen_pattern, pure=True)(block) for block in sweep.user_blocks])
    item_factors, user_factors = (np.concatenate(placement.gather(panels)).astype(np.float32)
                                  for panels in (item_panels, user_panels))
    seen = SeenItems.concatenate(placement.gather(seen_parts))
    if not (np.isfinite(user_factors).all() and np.isfinite(item_factors).all()):
        raise FloatingPointError("SVD produced non-finite factors; check the ratings for extreme values")
    history[-1]["singular_values"] = [float(v) for v in singular]
    return FittedModel(
        estimator=estimator, params=dict(params or {}), user_ids=user_ids, item_ids=item_ids,
        user_factors=user_factors, item_factors=item_factors,
        user_biases=np.zeros(len(user_ids), np.float32) if center else None,
        item_biases=np.zeros(len(item_ids), np.float32) if center else None,
        global_mean=float(mean), rating_range=(float(low), float(high)), n_ratings=prepared.n_ratings,
        n_blocks=users.n_blocks, history=history, seen=seen,
    )


class _Sweep:
    """The block-parallel operations of one fit: products with the ratings, Gram matrices,
    CholeskyQR2; panels stay on the workers as futures (values without a cluster)."""

    def __init__(self, placement: Placement, user_blocks: list, item_blocks: list, users: BlockLayout,
                 items: BlockLayout, offset: float):
        self.placement, self.user_blocks, self.item_blocks = placement, user_blocks, item_blocks
        self.layouts = {"users": users, "items": items}
        self.offset = offset

    def product(self, side: str, other_panels: list) -> list:
        """Panels of ``A·X`` (side "users", X on items) or ``Aᵀ·X`` (side "items"), per block."""
        blocks = self.user_blocks if side == "users" else self.item_blocks
        run = dask.delayed(multiply, pure=True)
        tasks = []
        for b, block in enumerate(blocks):
            with self.placement.on_worker(b):
                tasks.append(run(block, other_panels, self.offset))
        return self.placement.submit(tasks)

    def gram(self, side: str, panels: list) -> np.ndarray:
        """``Xᵀ·X`` of the panels, summed over grains in grain order."""
        layout = self.layouts[side]
        run = dask.delayed(grain_grams, pure=True)
        tasks = []
        for (b, lo, _), panel in zip(layout, panels):
            with self.placement.on_worker(b):
                tasks.append(run(panel, lo, layout.grain_bounds))
        grams = [gram for block in self.placement.gather(self.placement.submit(tasks)) for gram in block]
        total = grams[0].copy()
        for gram in grams[1:]:
            total += gram
        return total

    def apply(self, panels: list, matrix: np.ndarray) -> list:
        run = dask.delayed(times, pure=True)
        tasks = []
        for b, panel in enumerate(panels):
            with self.placement.on_worker(b):
                tasks.append(run(panel, matrix))
        return self.placement.submit(tasks)

    def orthonormal(self, side: str, panels: list) -> list:
        """CholeskyQR2 of the panels: orthonormal columns spanning the same space."""
        for _ in range(2):
            gram = self.gram(side, panels)
            # a tiny shift keeps the factorization defined when the panel is rank deficient
            shift = 1e-12 * max(float(np.trace(gram)), 1e-300) / len(gram)
            lower = np.linalg.cholesky(gram + shift * np.eye(len(gram)))
            panels = self.apply(panels, scipy.linalg.solve_triangular(lower, np.eye(len(gram)), lower=True).T)
        return panels


