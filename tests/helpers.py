"""Test data and independent dense NumPy references (no dmf code in the references)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def random_ratings(n_users: int, n_items: int, density: float, seed: int, *, rank: int = 3, noise: float = 0.3,
                   user_prefix: str | None = None) -> pd.DataFrame:
    """Ratings on about ``density`` of a users × items grid, every user and item rated once at least."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    mask[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    users, items = np.nonzero(mask)
    p = rng.normal(size=(n_users, rank))
    q = rng.normal(size=(n_items, rank))
    values = 3.0 + 0.5 * (p[users] * q[items]).sum(1) + rng.normal(0, noise, len(users))
    user_ids = users * 7 + 3 if user_prefix is None else np.array([f"{user_prefix}{u}" for u in users], dtype=object)
    frame = pd.DataFrame({"user": user_ids, "item": items * 11 + 5, "rating": values.astype("float32")})
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def dense_als(frame: pd.DataFrame, item_start: np.ndarray, *, reg: float, bias_reg: float, damping: float,
              bias_damping: float,
              iterations: int, biases: bool) -> dict:
    """Textbook ALS-WR on a dense matrix, one np.linalg.solve per row, float64 throughout
    (factors rounded to float32 after each half-step, as a model stores them).

    ``item_start`` holds the initial item factors in sorted item-id order.
    """
    users = np.sort(frame["user"].unique())
    items = np.sort(frame["item"].unique())
    u = np.searchsorted(users, frame["user"].to_numpy())
    i = np.searchsorted(items, frame["item"].to_numpy())
    ratings = np.zeros((len(users), len(items)))
    observed = np.zeros_like(ratings, dtype=bool)
    ratings[u, i] = frame["rating"].to_numpy(dtype=np.float64)
    observed[u, i] = True
    mean = ratings[observed].mean() if biases else 0.0
    rank = item_start.shape[1]
    item_factors = item_start.astype(np.float64)
    item_bias = np.zeros(len(items))
    user_factors = np.zeros((len(users), rank))
    user_bias = np.zeros(len(users))

    def half_step(matrix, mask, other_factors, other_bias):
        factors = np.zeros((matrix.shape[0], rank))
        bias = np.zeros(matrix.shape[0])
        for row in range(matrix.shape[0]):
            cols = np.flatnonzero(mask[row])
            n = len(cols)
            design = other_factors[cols]
            target = matrix[row, cols] - (mean + other_bias[cols] if biases else 0.0)
            penalty = [reg * n + damping] * rank
            if biases:
                design = np.hstack([design, np.ones((n, 1))])
                penalty.append(bias_reg * n + bias_damping)
            solution = np.linalg.solve(design.T @ design + np.diag(penalty), design.T @ target)
            factors[row] = solution[:rank]
            bias[row] = solution[rank] if biases else 0.0
        return factors.astype(np.float32).astype(np.float64), bias.astype(np.float32).astype(np.float64)

    for _ in range(iterations):
        user_factors, user_bias = half_step(ratings, observed, item_factors, item_bias)
        item_factors, item_bias = half_step(ratings.T, observed.T, user_factors, user_bias)
    return {"users": users, "items": items, "user_factors": user_factors, "item_factors": item_factors,
            "user_bias": user_bias, "item_bias": item_bias, "mean": mean}


def brute_force_top_k(scores: np.ndarray, seen: np.ndarray, k: int) -> list[list[int]]:
    """Per row: columns sorted by (-score, column), seen columns removed, first k."""
    out = []
    for row in range(scores.shape[0]):
        order = np.lexsort((np.arange(scores.shape[1]), -scores[row]))
        out.append([c for c in order if not seen[row, c]][:k])
    return out


def dense_implicit_als(frame: pd.DataFrame, item_start: np.ndarray, *, alpha: float, reg: float,
                       iterations: int) -> dict:
    """Hu-Koren-Volinsky ALS on the dense matrix: every row solves over all columns with
    confidence 1 + alpha·r (r = 0 when unobserved) and preference [r > 0]; no Gram trick."""
    users = np.sort(frame["user"].unique())
    items = np.sort(frame["item"].unique())
    ratings = np.zeros((len(users), len(items)))
    ratings[np.searchsorted(users, frame["user"]), np.searchsorted(items, frame["item"])] = frame["rating"]
    rank = item_start.shape[1]

    def half_step(matrix, other):
        solved = np.zeros((matrix.shape[0], rank))
        for row in range(matrix.shape[0]):
            confidence = 1 + alpha * np.abs(matrix[row])
            gram = (other * confidence[:, None]).T @ other + reg * np.eye(rank)
            solved[row] = np.linalg.solve(gram, other.T @ (confidence * (matrix[row] > 0)))
        return solved.astype(np.float32).astype(np.float64)

    item_factors = item_start.astype(np.float64)
    for _ in range(iterations):
        user_factors = half_step(ratings, item_factors)
        item_factors = half_step(ratings.T, user_factors)
    return {"users": users, "items": items, "user_factors": user_factors, "item_factors": item_factors}


def ml100k_fold(ml100k, number: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """GroupLens' own split ``u<number>.base`` / ``u<number>.test`` of ml-100k (pandas)."""
    read = lambda name: pd.read_csv(ml100k / name, sep="\t", names=["user", "item", "rating", "timestamp"])  # noqa: E731
    return read(f"u{number}.base"), read(f"u{number}.test")
