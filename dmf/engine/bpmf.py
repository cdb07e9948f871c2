"""Bayesian probabilistic matrix factorization (BPMF, Salakhutdinov & Mnih 2008) by Gibbs
sampling on the blocked layout: the functional core behind :class:`dmf.BPMF`;
:func:`fit_bpmf` returns a :class:`~dmf.model.FittedModel`.

The model: ``r = μ + p_u·q_i + ε`` with noise precision ``α``; user rows ``p_u ~ N(m_U,
Λ_U⁻¹)`` and item rows ``q_i ~ N(m_V, Λ_V⁻¹)`` with Normal-Wishart hyperpriors on
``(m, Λ)``. One *sweep* is an ALS epoch that draws instead of solving:

1. ``(m_U, Λ_U)`` from its Normal-Wishart posterior given the current user rows (their
   count, sum and sum of outer products: Gram matrices summed per grain, in grain order,
   so they do not depend on the blocks);
2. every user row, in parallel per user block, from ``N(S·(Λ_U m_U + α Σ_i q_i (r_ui − μ)),
   S)`` with ``S⁻¹ = Λ_U + α Σ_i q_i q_iᵀ``: the ALS solve of that row plus Gaussian noise
   through its Cholesky factor; the noise is a function of (seed, sweep, side, id);
3. the same for the items against the new user rows.

The prediction is the posterior mean of ``μ + p·q`` over the ``n_samples`` sweeps after
``burn_in``. That mean, ``(1/S) Σ_s P_s Q_sᵀ``, is kept on the workers as a product ``U·Vᵀ``
of two panels: every sample appends its rows (``[√((s−1)/s) U, √(1/s) P_s]``), and every
few samples the product is cut back to its ``rank`` leading singular triplets (Gram
matrices of both panels, a small SVD on the client, one product per block). The factors of
the fitted model are that truncated mean: a model of ordinary shape (``μ + p_u·q_i``, biases
0) that every stage can score and serve.
"""

from __future__ import annotations

import logging
import time

import dask
import dask.dataframe as dd
import numpy as np

from dmf import scheduler
from dmf.engine.blocks import seen_pattern
from dmf.engine.kernels import RatingBlock, gathered_rows, padded_lengths, seeded_normals
from dmf.engine.placement import Placement
from dmf.engine.prepared import prepare_ratings
from dmf.engine.svd import GRAINS, grain_grams, times
from dmf.model.fitted import FittedModel, SeenItems
from dmf.random import BPMF_NOISE_STREAM, ITEM_FACTOR_STREAM, USER_FACTOR_STREAM

logger = logging.getLogger(__name__)

#: Samples appended to the running mean between two truncations back to ``rank`` columns.
TRUNCATE_EVERY = 4
#: Normal-Wishart hyperprior: prior mean 0 with this strength (β₀); Wishart scale I, ν₀ = rank.
PRIOR_STRENGTH = 2.0
#: Standard deviation of the initial rows.
INITIAL_SCALE = 0.1
_SIDES = {"users": 0, "items": 1}
_BATCH_ROWS = 4096


def noise_stream(sweep: int, side: str) -> int:
    """The :mod:`dmf.random` stream of the noise of ``side``'s rows in ``sweep``."""
    return BPMF_NOISE_STREAM + 2 * sweep + _SIDES[side]


def sample_rows(block: RatingBlock, other: np.ndarray, offset: float, prior_mean: np.ndarray,
                prior_precision: np.ndarray, alpha: float, noise: np.ndarray) -> np.ndarray:
    """One Gibbs draw of every row of ``block`` (see the module docstring, step 2).

    Parameters
    ----------
    other : ndarray (n_other, k)
        The other side's current rows.
    noise : ndarray (block.n_rows, k)
        Standard normals: the draw is ``mean + L⁻ᵀ·noise`` with ``L Lᵀ`` the row's posterior
        precision.

    Returns
    -------
    ndarray of float64, shape (block.n_rows, k). Each row depends on its own ratings, the
    other side and its noise only (not on the block it is in).
    """
    rank = other.shape[1]
    design = np.zeros((len(other) + 1, rank))
    design[:-1] = other
    targets = block.values.astype(np.float64) - offset
    prior_shift = prior_precision @ prior_mean
    draws = np.empty((block.n_rows, rank))
    counts = block.counts
    lengths = padded_lengths(np.maximum(counts, 1))
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        for begin in range(0, len(rows), _BATCH_ROWS):
            chunk = rows[begin : begin + _BATCH_ROWS]
            gathered, rhs, _ = gathered_rows(block, design, targets, chunk, int(length))
            precision = alpha * np.matmul(gathered.transpose(0, 2, 1), gathered) + prior_precision[None]
            lower = np.linalg.cholesky(precision)
            shifted = alpha * rhs + prior_shift[None]
            # mean = precision⁻¹·shifted through the factor; the noise enters as L⁻ᵀ·z
            half = np.linalg.solve(lower, shifted[:, :, None])
            upper = lower.transpose(0, 2, 1)
            draws[chunk] = np.linalg.solve(upper, half + noise[chunk][:, :, None])[:, :, 0]
    return draws


def sample_hyperparameters(moments: np.ndarray, rank: int, generator: np.random.Generator) -> tuple:
    """``(m, Λ)`` drawn from the Normal-Wishart posterior given the rows' moments: the Gram
    matrix of the rows with a column of ones appended (``[[Σ x xᵀ, Σ x], [Σ xᵀ, n]]``)."""
    count = moments[rank, rank]
    total = moments[:rank, rank]
    mean = total / count
    scatter = moments[:rank, :rank] - count * np.outer(mean, mean)
    scale_inverse = np.eye(rank) + scatter + PRIOR_STRENGTH * count / (PRIOR_STRENGTH + count) * np.outer(mean, mean)
    scale = np.linalg.inv(scale_inverse)
    scale = (scale + scale.T) / 2
    degrees = rank + count
    # Bartlett: Λ = L A Aᵀ Lᵀ with L L ᵀ the scale, A lower triangular (chi and normal draws)
    bartlett = np.tril(generator.standard_normal((rank, rank)), -1)
    bartlett[np.diag_indices(rank)] = np.sqrt(generator.chisquare(degrees - np.arange(rank)))
    factor = np.linalg.cholesky(scale) @ bartlett
    precision = factor @ factor.T
    posterior_mean = count * mean / (PRIOR_STRENGTH + count)
    mean_factor = np.linalg.cholesky((PRIOR_STRENGTH + count) * precision)
    drawn_mean = posterior_mean + np.linalg.solve(mean_factor.T, generator.standard_normal(rank))
    return drawn_mean, precision


def row_noise(hashes: np.ndarray, seed: int, sweep: int, side: str, rank: int) -> np.ndarray:
    return seeded_normals(seed, noise_stream(sweep, side), hashes, rank)


def initial_rows(hashes: np.ndarray, seed: int, stream: int, rank: int) -> np.ndarray:
    return INITIAL_SCALE * seeded_normals(seed, stream, hashes, rank)


def sample_block(block: RatingBlock, others: list, offset: float, hyper: tuple, alpha: float,
                 hashes: np.ndarray, seed: int, sweep: int, side: str) -> np.ndarray:
    """One block's draw (named for the dashboard): :func:`sample_rows` with its noise."""
    other = others[0] if len(others) == 1 else np.concatenate(others)
    noise = row_noise(hashes, seed, sweep, side, other.shape[1])
    return sample_rows(block, other, offset, hyper[0], hyper[1], alpha, noise)


def moment_grams(panel: np.ndarray, start: int, grain_bounds: np.ndarray) -> list[np.ndarray]:
    """Per grain, the Gram matrix of the rows with a column of ones appended."""
    return grain_grams(np.hstack([panel, np.ones((len(panel), 1))]), start, grain_bounds)


def appended(mean_panel: np.ndarray | None, sample: np.ndarray, count: int) -> np.ndarray:
    """The running-mean panel with sample number ``count`` appended (scaled so that the
    product of the two sides' panels is the mean of the samples' products)."""
    new = sample * np.sqrt(1.0 / count)
    return new if mean_panel is None else np.hstack([mean_panel * np.sqrt((count - 1) / count), new])


class _Chain:
    """The block-parallel operations of one Gibbs chain; panels stay on the workers."""

    def __init__(self, placement: Placement, blocks: dict, layouts: dict, hashes: dict, offset: float,
                 alpha: float, seed: int):
        self.placement, self.blocks, self.layouts, self.hashes = placement, blocks, layouts, hashes
        self.offset, self.alpha, self.seed = offset, alpha, seed
        self.current: dict[str, list] = {}

    def _per_block(self, side: str, function, *arguments) -> list:
        run = dask.delayed(function, pure=True)
        tasks = []
        for b, values in enumerate(zip(*arguments)):
            with self.placement.on_worker(b):
                tasks.append(run(*values))
        return self.placement.submit(tasks)

    def initial(self, side: str, rank: int) -> list:
        stream = USER_FACTOR_STREAM if side == "users" else ITEM_FACTOR_STREAM
        count = len(self.blocks[side])
        return self._per_block(side, initial_rows, self.hashes[side], [self.seed] * count, [stream] * count,
                               [rank] * count)

    def gram(self, side: str, panels: list, function=grain_grams) -> np.ndarray:
        """The panels' Gram matrix (``function``: per grain), summed over grains in grain order."""
        layout = self.layouts[side]
        count = len(panels)
        parts = self.placement.gather(self._per_block(side, function, panels, [lo for _, lo, _ in layout],
                                                      [layout.grain_bounds] * count))
        grams = [gram for block in parts for gram in block]
        total = grams[0].copy()
        for gram in grams[1:]:
            total += gram
        return total

    def draw(self, side: str, others: list, rank: int, sweep: int, generator: np.random.Generator) -> list:
        hyper = sample_hyperparameters(self.gram(side, self.current[side], moment_grams), rank, generator)
        count = len(self.blocks[side])
        return self._per_block(side, sample_block, self.blocks[side], [others] * count, [self.offset] * count,
                               [hyper] * count, [self.alpha] * count, self.hashes[side], [self.seed] * count,
                               [sweep] * count, [side] * count)

    def append(self, side: str, means: list | None, samples: list, count: int) -> list:
        return self._per_block(side, appended, means or [None] * len(samples), samples, [count] * len(samples))

    def truncate(self, users: list, items: list, rank: int) -> tuple[list, list]:
        """The running mean ``U·Vᵀ`` cut to its ``rank`` leading singular triplets."""
        bases = []
        for side, panels in (("users", users), ("items", items)):
            eigenvalues, vectors = np.linalg.eigh(self.gram(side, panels))
            kept = eigenvalues > max(eigenvalues.max(), 0.0) * 1e-12
            # panel = (panel · E Λ^-½) (Λ^½ Eᵀ): orthonormal columns times a small factor
            bases.append((vectors[:, kept] / np.sqrt(eigenvalues[kept]), np.sqrt(eigenvalues[kept])[:, None] * vectors[:, kept].T))
        (user_map, user_factor), (item_map, item_factor) = bases
        left, singular, right = np.linalg.svd(user_factor @ item_factor.T)
        keep = min(rank, len(singular))
        root = np.sqrt(singular[:keep])
        user_mapping = np.zeros((user_map.shape[0], rank))
        item_mapping = np.zeros((item_map.shape[0], rank))
        user_mapping[:, :keep] = user_map @ (left[:, :keep] * root)
        item_mapping[:, :keep] = item_map @ (right[:keep].T * root)
        count = len(users), len(items)
        return (self._per_block("users", times, users, [user_mapping] * count[0]),
                self._per_block("items", times, items, [item_mapping] * count[1]))


def fit_bpmf(ratings: dd.DataFrame, *, rank: int, n_samples: int, burn_in: int, alpha: float, seed: int,
             n_blocks: int | None, client=None, estimator: str = "BPMF", params: dict | None = None) -> FittedModel:
    """Gibbs-sample BPMF on ``ratings`` (canonical columns, validated); see the module docstring."""
    client = scheduler.resolve_client(client)
    placement = Placement(client)
    prepared = prepare_ratings(ratings, n_blocks, client, placement, grains=GRAINS)
    users, items = prepared.user_layout, prepared.item_layout
    hashes = {}
    for side, ids, layout in (("users", prepared.user_ids, users), ("items", prepared.item_ids, items)):
        side_hashes = ids.id_hashes()
        hashes[side] = placement.submit([dask.delayed(np.asarray, pure=True)(side_hashes[lo:hi])
                                         for _, lo, hi in layout])
    chain = _Chain(placement, {"users": prepared.user_blocks, "items": prepared.item_blocks},
                   {"users": users, "items": items}, hashes, prepared.global_mean, alpha, seed)
    chain.current = {side: chain.initial(side, rank) for side in ("users", "items")}
    means = {"users": None, "items": None}
    history = []
    for sweep in range(1, burn_in + n_samples + 1):
        started = time.perf_counter()
        generator = np.random.default_rng([seed, sweep])
        chain.current["users"] = chain.draw("users", chain.current["items"], rank, sweep, generator)
        chain.current["items"] = chain.draw("items", chain.current["users"], rank, sweep, generator)
        sample = sweep - burn_in
        if sample >= 1:
            for side in ("users", "items"):
                means[side] = chain.append(side, means[side], chain.current[side], sample)
            if sample % TRUNCATE_EVERY == 0 or sample == n_samples:
                means["users"], means["items"] = chain.truncate(means["users"], means["items"], rank)
        placement.wait(chain.current["items"])  # the sweep's seconds are its own
        history.append({"epoch": sweep, "phase": "sample" if sample >= 1 else "burn-in",
                        "seconds": time.perf_counter() - started})
        logger.info("sweep %d of %d (%s) seconds=%.2f", sweep, burn_in + n_samples, history[-1]["phase"],
                    history[-1]["seconds"])
    seen_parts = placement.submit([dask.delayed(seen_pattern, pure=True)(block) for block in prepared.user_blocks])
    user_factors, item_factors = (np.concatenate(placement.gather(means[side])).astype(np.float32)
                                  for side in ("users", "items"))
    if not (np.isfinite(user_factors).all() and np.isfinite(item_factors).all()):
        raise FloatingPointError("BPMF produced non-finite factors; check the ratings for extreme values")
    low, high = prepared.rating_range
    return FittedModel(
        estimator=estimator, params=dict(params or {}), user_ids=prepared.user_ids, item_ids=prepared.item_ids,
        user_factors=user_factors, item_factors=item_factors,
        user_biases=np.zeros(len(prepared.user_ids), np.float32),
        item_biases=np.zeros(len(prepared.item_ids), np.float32), global_mean=float(prepared.global_mean),
        rating_range=(float(low), float(high)), n_ratings=prepared.n_ratings, n_blocks=users.n_blocks,
        history=history, seen=SeenItems.concatenate(placement.gather(seen_parts)),
    )

