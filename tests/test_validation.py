"""fit(..., validation=, patience=): per-epoch validation scores computed on the workers,
against NumPy on the fitted factors; early stopping keeps the best epoch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import random_ratings

import dmf
from dmf.data.splits import holdout_mask


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = random_ratings(60, 40, 0.35, seed=17)
    held_out = holdout_mask(frame, 0.2, 3)
    train, test = frame[~held_out].reset_index(drop=True), frame[held_out].reset_index(drop=True)
    test = pd.concat([test, pd.DataFrame({"user": [-1], "item": [test["item"].iloc[0]], "rating": [3.0]})])
    return train, test.astype({"rating": "float32"}).reset_index(drop=True)


def numpy_rmse(model, test: pd.DataFrame) -> tuple[float, int]:
    """RMSE of the known pairs from the model's arrays, clipped as the model predicts."""
    users, items = pd.Index(model.user_ids_), pd.Index(model.item_ids_)
    u, i = users.get_indexer(test["user"]), items.get_indexer(test["item"])
    known = (u >= 0) & (i >= 0)
    u, i = u[known], i[known]
    predicted = (model.user_factors_[u].astype(np.float64) * model.item_factors_[i]).sum(1)
    predicted += model.global_mean_ + model.user_biases_[u] + model.item_biases_[i]
    predicted = np.clip(predicted, *model.rating_range_)
    return float(np.sqrt(np.mean((test["rating"].to_numpy()[known] - predicted) ** 2))), int(known.sum())


@pytest.mark.parametrize("make", [lambda **kw: dmf.ALS(rank=4, n_blocks=3, **kw),
                                  lambda **kw: dmf.SGD(rank=4, grid=3, learning_rate=0.02, **kw)],
                         ids=["ALS", "SGD"])
def test_validation_rmse_per_epoch_is_that_of_the_epochs_model(client, split, make):
    train, test = split
    model = make(max_iter=3).fit(train, validation=test)
    assert [r["validation_pairs"] for r in model.history_] == [len(test) - 1] * 3  # the unknown user left out
    for epoch in (1, 2, 3):
        expected, _ = numpy_rmse(make(max_iter=epoch).fit(train), test)
        assert model.history_[epoch - 1]["validation_rmse"] == pytest.approx(expected, rel=1e-5)


def test_early_stopping_keeps_the_best_epoch(client, split):
    train, test = split
    # barely regularized: the validation error goes up in epoch 2 (then down again, later)
    params = {"rank": 4, "reg": 0.0, "damping": 0.5, "bias_damping": 0.0}
    model = dmf.ALS(max_iter=30, **params).fit(train, validation=test, patience=1)
    scores = [r["validation_rmse"] for r in model.history_]
    best = int(np.argmin(scores)) + 1
    assert len(scores) == best + 1 < 30  # stopped one epoch after the best
    assert [r["epoch"] for r in model.history_ if r.get("kept")] == [best]
    again = dmf.ALS(max_iter=best, **params).fit(train)
    np.testing.assert_array_equal(model.user_factors_, again.user_factors_)
    np.testing.assert_array_equal(model.item_biases_, again.item_biases_)
    assert numpy_rmse(model, test)[0] == pytest.approx(min(scores), rel=1e-5)


def test_implicit_validation_ranks_like_ranking_metrics(client, split):
    train, test = split
    model = dmf.ImplicitALS(rank=4, max_iter=2, threshold=3).fit(train, validation=test)
    record = model.history_[-1]
    positives = test[(test["rating"] >= 3) & test["user"].isin(train["user"])]
    # the top-10 among the items each user did not train on (its ratings >= 3)
    trained = train[train["rating"] >= 3]
    top = model.recommend(10, exclude=trained, exclude_seen=False)
    metrics = dmf.ranking_metrics(top, positives, k=10, precision_denominator="min")
    assert record["validation_users"] == positives["user"].nunique()
    assert record["validation_precision@10"] == pytest.approx(metrics["precision@k"], rel=1e-9)
    assert record["validation_ndcg@10"] == pytest.approx(metrics["ndcg@k"], rel=1e-9)


def test_validation_mistakes_are_named(client, split):
    train, test = split
    with pytest.raises(ValueError, match="patience needs validation"):
        dmf.ALS(rank=2, max_iter=1).fit(train, patience=2)
    with pytest.raises(ValueError, match="patience must be a positive integer"):
        dmf.ALS(rank=2, max_iter=1).fit(train, validation=test, patience=0)
    with pytest.raises(ValueError, match="SVD has no epochs"):
        dmf.SVD(rank=2).fit(train, validation=test)
