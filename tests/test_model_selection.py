"""dmf.model_selection: the search's shared blocks give the scores of independent fits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import random_ratings

import dmf
from dmf.model_selection import Holdout, KFold, PerUser, grid_search, random_search


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return random_ratings(70, 45, 0.3, seed=33)


def test_folds_partition_the_ratings(client, ratings):
    folds = KFold(3, seed=1).split(dmf.read_ratings(ratings))
    tests = [test.compute() for _, test in folds]
    assert sum(len(t) for t in tests) == len(ratings)
    pairs = [set(zip(t["user"], t["item"])) for t in tests]
    assert not (pairs[0] & pairs[1]) and not (pairs[1] & pairs[2])
    train, test = folds[1]
    assert len(train.compute()) + len(tests[1]) == len(ratings)
    (per_user_train, per_user_test), = PerUser(test_count=2, seed=0).split(dmf.read_ratings(ratings))
    counts = per_user_test.compute().groupby("user").size()
    assert (counts <= 2).all() and len(per_user_train.compute()) + counts.sum() == len(ratings)


def test_search_scores_equal_independent_fits(client, ratings):
    grid = {"rank": [3, 5], "reg": [0.05, 0.2]}
    base = dmf.ALS(max_iter=3, n_blocks=2)
    search = grid_search(base, grid, ratings, splits=KFold(2, seed=4), parallelism=2)
    assert len(search.table) == 8 and set(search.table["fold"]) == {0, 1}
    folds = KFold(2, seed=4).split(dmf.read_ratings(ratings))
    for fold, (train, test) in enumerate(folds):
        train, test = train.compute(), test.compute()
        for rank in grid["rank"]:
            for reg in grid["reg"]:
                alone = dmf.ALS(max_iter=3, n_blocks=2, rank=rank, reg=reg).fit(train, validation=test)
                row = search.table[(search.table["fold"] == fold) & (search.table["rank"] == rank)
                                   & (search.table["reg"] == reg)]
                assert row["validation_rmse"].item() == alone.history_[-1]["validation_rmse"]
    means = search.table.groupby(["rank", "reg"])["validation_rmse"].mean()
    assert search.summary.loc[0, "mean"] == means.min()
    assert search.best_params == dict(zip(["rank", "reg"], means.idxmin()))
    refit = dmf.ALS(max_iter=3, n_blocks=2, **search.best_params).fit(ratings)
    np.testing.assert_array_equal(search.best_estimator.user_factors_, refit.user_factors_)


def test_ranking_search_of_implicit_models_and_random_search(client, ratings):
    search = random_search(dmf.ImplicitALS(max_iter=2, rank=3), {"alpha": [0.5, 1.0, 2.0], "threshold": [None, 3.0]},
                           ratings, n_iter=3, splits=Holdout(0.25, seed=2), refit=False, seed=5)
    assert search.metric == "ndcg@10" and search.higher_is_better and search.best_estimator is None
    assert len(search.table) == 3 and search.table["validation_ndcg@10"].between(0, 1).all()
    assert search.summary["mean"].is_monotonic_decreasing


def test_other_estimators_are_searched_too(client, ratings):
    sgd = grid_search(dmf.SGD(max_iter=2, rank=3, grid=2), {"learning_rate": [0.01, 0.02]}, ratings,
                      splits=Holdout(0.25), refit=False)
    assert sgd.table["validation_rmse"].notna().all() and (sgd.table["epochs"] == 2).all()
    svd = grid_search(dmf.SVD(n_iter=1), {"rank": [2, 4]}, ratings, splits=Holdout(0.25), metric="precision@5",
                      refit=False)
    assert svd.table["validation_precision@5"].between(0, 1).all()


def test_search_mistakes_are_named(client, ratings):
    with pytest.raises(ValueError, match="metric must be"):
        grid_search(dmf.ALS(), {"rank": [2]}, ratings, metric="auc")
    with pytest.raises(ValueError, match="scores only rank"):
        grid_search(dmf.ImplicitALS(), {"rank": [2]}, ratings, metric="rmse")
    with pytest.raises(ValueError, match="rank must be"):
        grid_search(dmf.ALS(), {"rank": [0]}, ratings)


def test_review_findings_stay_fixed(client, ratings):
    """Ranking scores of explicit models include their biases; None is a searchable value;
    an unusable validation set is an error, not a NaN score; n_iter must be positive."""
    search = grid_search(dmf.ALS(max_iter=2, rank=3, n_blocks=2), {"reg": [0.05]}, ratings, splits=Holdout(0.3, seed=1),
                         metric="ndcg@10", refit=False)
    (train, test), = Holdout(0.3, seed=1).split(dmf.read_ratings(ratings))
    train, test = train.compute(), test.compute()
    alone = dmf.ALS(max_iter=2, rank=3, n_blocks=2, reg=0.05).fit(train)
    known = test[test["user"].isin(train["user"]) & test["item"].isin(train["item"])]
    served = dmf.ranking_metrics(alone.recommend(10), known, k=10, precision_denominator="min")
    assert search.table["validation_ndcg@10"].item() == pytest.approx(served["ndcg@k"], rel=1e-9)
    nones = grid_search(dmf.ALS(max_iter=1, rank=2), {"n_blocks": [None, 2]}, ratings, splits=Holdout(0.3))
    assert nones.best_params["n_blocks"] in (None, 2) and nones.best_estimator is not None
    strangers = test.assign(user=test["user"] + 10**6)
    with pytest.raises(ValueError, match="validation set has no pairs to score"):
        dmf.ALS(max_iter=2, rank=2).fit(train, validation=strangers, patience=1)
    with pytest.raises(ValueError, match="n_iter must be a positive integer"):
        random_search(dmf.ALS(), {"rank": [2]}, ratings, n_iter=0)
    with pytest.raises(ValueError, match="reg and damping are both 0"):
        dmf.SGD(reg=0.0, damping=0.0)
