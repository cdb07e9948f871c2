"""dmf.BPMF against a dense, sequential NumPy Gibbs sampler of the same chain (the same noise
and hyperparameter draws), and the running mean's truncation against dense SVDs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import random_ratings

import dmf
from dmf.random import BPMF_NOISE_STREAM, ITEM_FACTOR_STREAM, USER_FACTOR_STREAM, entity_normals, id_hashes

RANK, ALPHA, SEED = 3, 1.5, 4


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return random_ratings(30, 20, 0.4, seed=8, rank=3, noise=0.3)


def normal_wishart(rows: np.ndarray, generator: np.random.Generator) -> tuple:
    """(m, Λ) from the Normal-Wishart posterior (prior: mean 0, strength 2, scale I, ν₀ = k)."""
    n, k = rows.shape
    mean = rows.mean(axis=0)
    centred = rows - mean
    scale = np.linalg.inv(np.eye(k) + centred.T @ centred + 2.0 * n / (2.0 + n) * np.outer(mean, mean))
    a = np.tril(generator.standard_normal((k, k)), -1)
    a[np.diag_indices(k)] = np.sqrt(generator.chisquare(k + n - np.arange(k)))
    lower = np.linalg.cholesky((scale + scale.T) / 2) @ a
    precision = lower @ lower.T
    m = n * mean / (2.0 + n) + np.linalg.solve(np.linalg.cholesky((2.0 + n) * precision).T,
                                               generator.standard_normal(k))
    return m, precision


def draw(matrix: np.ndarray, observed: np.ndarray, other: np.ndarray, hyper: tuple, noise: np.ndarray) -> np.ndarray:
    m, precision = hyper
    rows = np.empty((len(matrix), other.shape[1]))
    for r in range(len(matrix)):
        seen = observed[r]
        posterior = precision + ALPHA * other[seen].T @ other[seen]
        lower = np.linalg.cholesky(posterior)
        mean = np.linalg.solve(posterior, precision @ m + ALPHA * other[seen].T @ matrix[r, seen])
        rows[r] = mean + np.linalg.solve(lower.T, noise[r])
    return rows


def reference_samples(ratings: pd.DataFrame, sweeps: int) -> tuple:
    """Per sweep, the users' and items' draws of a sequential dense Gibbs sampler."""
    users, items = np.sort(ratings["user"].unique()), np.sort(ratings["item"].unique())
    mu = ratings["rating"].astype(np.float64).mean()
    matrix = np.zeros((len(users), len(items)))
    observed = np.zeros_like(matrix, dtype=bool)
    u, i = np.searchsorted(users, ratings["user"]), np.searchsorted(items, ratings["item"])
    matrix[u, i] = ratings["rating"].to_numpy(np.float64) - mu
    observed[u, i] = True
    hu, hi = id_hashes(users), id_hashes(items)
    p = 0.1 * entity_normals(SEED, USER_FACTOR_STREAM, hu, RANK)
    q = 0.1 * entity_normals(SEED, ITEM_FACTOR_STREAM, hi, RANK)
    samples = []
    for sweep in range(1, sweeps + 1):
        generator = np.random.default_rng([SEED, sweep])
        p = draw(matrix, observed, q, normal_wishart(p, generator),
                 entity_normals(SEED, BPMF_NOISE_STREAM + 2 * sweep, hu, RANK))
        q = draw(matrix.T, observed.T, p, normal_wishart(q, generator),
                 entity_normals(SEED, BPMF_NOISE_STREAM + 2 * sweep + 1, hi, RANK))
        samples.append((p, q))
    return samples, users, items, mu


def best_rank(matrix: np.ndarray, rank: int) -> np.ndarray:
    left, singular, right = np.linalg.svd(matrix)
    return (left[:, :rank] * singular[:rank]) @ right[:rank]


def scores(model) -> np.ndarray:
    return model.user_factors_.astype(np.float64) @ model.item_factors_.astype(np.float64).T


def test_one_sample_is_the_reference_chain(client, ratings):
    samples, users, items, mu = reference_samples(ratings, 4)
    model = dmf.BPMF(rank=RANK, n_samples=1, burn_in=3, alpha=ALPHA, seed=SEED, n_blocks=3).fit(ratings)
    np.testing.assert_array_equal(model.user_ids_, users)
    p, q = samples[-1]
    np.testing.assert_allclose(scores(model), p @ q.T, atol=2e-5)  # a rank-3 product, cut to rank 3: exact
    assert model.model_.global_mean == pytest.approx(mu)
    assert [record["phase"] for record in model.history_] == ["burn-in"] * 3 + ["sample"]


def test_the_mean_of_six_samples_truncated_as_documented(client, ratings):
    """Samples 1-4 averaged and cut to the rank, then samples 5-6 added and cut again."""
    samples, *_ = reference_samples(ratings, 7)
    products = [p @ q.T for p, q in samples[1:]]  # burn-in 1
    mean = best_rank(sum(products[:4]) / 4, RANK)
    mean = best_rank((4 * mean + products[4] + products[5]) / 6, RANK)
    model = dmf.BPMF(rank=RANK, n_samples=6, burn_in=1, alpha=ALPHA, seed=SEED, n_blocks=2).fit(ratings)
    np.testing.assert_allclose(scores(model), mean, atol=5e-5)
    # the posterior mean is not any single sample
    assert np.abs(scores(model) - products[-1]).max() > 0.05


def test_prediction_is_the_mean_plus_the_product(client, ratings):
    model = dmf.BPMF(rank=RANK, n_samples=3, burn_in=1, seed=SEED, clip=False).fit(ratings)
    pairs = ratings.head(15)[["user", "item"]]
    predicted = model.predict(pairs).compute().merge(pairs, on=["user", "item"])
    rows = pd.Index(model.user_ids_).get_indexer(predicted["user"])
    cols = pd.Index(model.item_ids_).get_indexer(predicted["item"])
    expected = model.model_.global_mean + scores(model)[rows, cols]
    np.testing.assert_allclose(predicted["prediction"].to_numpy(np.float64), expected, atol=1e-4)
