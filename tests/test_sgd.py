"""dmf.SGD (DSGD) against an independent sequential NumPy SGD that visits the ratings in the
same order; its step-size schedule; fold-in of an SGD model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import random_ratings

import dmf
from dmf.data.ids import IdVocabulary
from dmf.engine.grid import assemble_cell, split_into_cells, stratum_order
from dmf.engine.layout import BlockLayout
from dmf.random import ITEM_FACTOR_STREAM, USER_FACTOR_STREAM, entity_normals, id_hashes

PARAMS = {"rank": 4, "max_iter": 6, "seed": 9, "grid": 3, "learning_rate": 0.02, "reg": 0.05, "bias_reg": 0.01,
          "damping": 2.0, "bias_damping": 1.0, "init_std": 0.1}


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return random_ratings(45, 32, 0.3, seed=4)


def visiting_order(frame: pd.DataFrame, seed: int, grid: int) -> tuple:
    """The cells of the grid, in dmf's visiting order, as global (user row, item row, value)."""
    users, items = IdVocabulary(frame["user"].unique()), IdVocabulary(frame["item"].unique())
    d = min(grid, len(users), len(items))
    user_layout, item_layout = BlockLayout(len(users), d), BlockLayout(len(items), d)
    pieces = split_into_cells(frame, users, items, user_layout.bounds, item_layout.bounds)
    cells = {}
    for b, user_start, _ in user_layout:
        for c, item_start, _ in item_layout:
            cell = assemble_cell([pieces[b * d + c]], b, c, user_start, item_start, len(items), seed)
            cells[b, c] = (cell.users + user_start, cell.items + item_start, cell.values.astype(np.float64))
    return users, items, d, cells


def sequential_sgd(frame: pd.DataFrame, *, rank, max_iter, seed, grid, learning_rate, reg, bias_reg, damping,
                   bias_damping, init_std) -> dict:
    """Textbook biased SGD (Koren), float64, one rating at a time, with the bold driver."""
    users, items, d, cells = visiting_order(frame, seed, grid)
    p = entity_normals(seed, USER_FACTOR_STREAM, id_hashes(users.ids), rank) * init_std
    q = entity_normals(seed, ITEM_FACTOR_STREAM, id_hashes(items.ids), rank) * init_std
    bu, bi = np.zeros(len(users)), np.zeros(len(items))
    mean = frame["rating"].astype(np.float64).mean()
    n_u = np.bincount(users.index_of(frame["user"].to_numpy()), minlength=len(users))
    n_i = np.bincount(items.index_of(frame["item"].to_numpy()), minlength=len(items))
    step, last, steps = learning_rate, np.inf, []
    for epoch in range(1, max_iter + 1):
        loss = 0.0
        for shift in stratum_order(seed, epoch, d):
            for b in range(d):
                for u, i, r in zip(*cells[b, (b + shift) % d]):
                    e = r - (mean + bu[u] + bi[i] + p[u] @ q[i])
                    loss += e * e
                    bu[u] += step * (e - (bias_reg + bias_damping / n_u[u]) * bu[u])
                    bi[i] += step * (e - (bias_reg + bias_damping / n_i[i]) * bi[i])
                    p[u], q[i] = (p[u] + step * (e * q[i] - (reg + damping / n_u[u]) * p[u]),
                                  q[i] + step * (e * p[u] - (reg + damping / n_i[i]) * q[i]))
        steps.append(step)
        step *= 1.05 if loss < last else 0.5
        last = loss
    return {"p": p, "q": q, "bu": bu, "bi": bi, "steps": steps}


def test_dsgd_equals_sequential_sgd_in_the_same_order(client, ratings):
    model = dmf.SGD(**PARAMS).fit(ratings)
    reference = sequential_sgd(ratings, **PARAMS)
    # float32 storage against float64: the same trajectory to 1e-4
    np.testing.assert_allclose(model.user_factors_, reference["p"], atol=1e-4)
    np.testing.assert_allclose(model.item_factors_, reference["q"], atol=1e-4)
    np.testing.assert_allclose(model.user_biases_, reference["bu"], atol=1e-4)
    np.testing.assert_allclose(model.item_biases_, reference["bi"], atol=1e-4)
    np.testing.assert_allclose([r["learning_rate"] for r in model.history_], reference["steps"], rtol=1e-12)
    assert model.n_blocks_ == 3


def test_order_differs_between_cells_and_seeds(ratings):
    """The visiting order is shuffled (not the input order, not sorted) and depends on the seed."""
    _, _, _, first = visiting_order(ratings, 1, 1)
    _, _, _, second = visiting_order(ratings, 2, 1)
    assert not np.array_equal(first[0, 0][0], second[0, 0][0])
    assert not np.all(np.diff(first[0, 0][0]) >= 0)


def test_training_loss_decreases_and_a_too_large_step_recovers(client, ratings):
    model = dmf.SGD(rank=4, max_iter=12, grid=2, learning_rate=0.02).fit(ratings)
    losses = [r["train_rmse"] for r in model.history_]
    assert losses[-1] < 0.95 * losses[0]
    assert all(later <= earlier * 1.02 for earlier, later in zip(losses, losses[1:]))
    # a step 20x too large: the bold driver halves it until the loss falls again
    bold = dmf.SGD(rank=4, max_iter=15, grid=2, learning_rate=0.4).fit(ratings)
    steps = [r["learning_rate"] for r in bold.history_]
    assert min(steps) < 0.1 and np.isfinite(bold.user_factors_).all()
    assert bold.history_[-1]["train_rmse"] < bold.history_[0]["train_rmse"]
    constant = dmf.SGD(rank=4, max_iter=3, grid=2, schedule="constant").fit(ratings)
    assert {r["learning_rate"] for r in constant.history_} == {0.01}


def test_divergence_is_reported(client, ratings):
    with pytest.raises(FloatingPointError, match="learning_rate"):
        dmf.SGD(rank=4, max_iter=3, grid=2, learning_rate=50.0, schedule="constant").fit(ratings)


def test_repeated_pairs_are_refused(client, ratings):
    doubled = pd.concat([ratings, ratings.head(3)], ignore_index=True)
    with pytest.raises(ValueError, match=r"repeated \(user, item\) pairs in grid cell"):
        dmf.SGD(rank=2, max_iter=1, grid=2).fit(doubled, validate=False)


def test_fold_in_solves_the_loss_sgd_descends(client, ratings):
    """A new user folded into an SGD model gets the exact minimizer of SGD's loss for that
    row (ridge with reg·n + damping) against the fixed item factors."""
    model = dmf.SGD(**PARAMS).fit(ratings)
    history = ratings[ratings["user"] == ratings["user"].iloc[0]].assign(user=-5)
    folded = model.fold_in(history)
    items = pd.Index(model.item_ids_)
    cols = items.get_indexer(history["item"])
    n = len(cols)
    design = np.hstack([model.item_factors_[cols].astype(np.float64), np.ones((n, 1))])
    target = history["rating"].to_numpy(np.float64) - model.global_mean_ - model.item_biases_[cols]
    penalty = np.diag([PARAMS["reg"] * n + PARAMS["damping"]] * 4 + [PARAMS["bias_reg"] * n + PARAMS["bias_damping"]])
    solution = np.linalg.solve(design.T @ design + penalty, design.T @ target)
    row = pd.Index(folded.user_ids_).get_loc(-5)
    np.testing.assert_allclose(folded.user_factors_[row], solution[:4], atol=2e-5)
    assert folded.user_biases_[row] == pytest.approx(solution[4], abs=2e-5)
