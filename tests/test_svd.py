"""dmf.SVD against scipy.sparse.linalg.svds of the same matrix; projection fold-in."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import scipy.sparse.linalg
from helpers import random_ratings

import dmf


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return random_ratings(60, 40, 0.3, seed=12, rank=5, noise=0.1)


def dense_matrix(frame: pd.DataFrame, center: bool) -> tuple:
    users, items = np.sort(frame["user"].unique()), np.sort(frame["item"].unique())
    values = frame["rating"].to_numpy(np.float64)
    if center:
        values = values - values.mean()
    matrix = scipy.sparse.csr_matrix((values, (np.searchsorted(users, frame["user"]),
                                               np.searchsorted(items, frame["item"]))),
                                     shape=(len(users), len(items)))
    return matrix, users, items


@pytest.mark.parametrize("center", [False, True])
def test_svd_matches_scipy_svds(client, ratings, center):
    matrix, users, items = dense_matrix(ratings, center)
    _, singular, vt = scipy.sparse.linalg.svds(matrix, k=4)
    order = np.argsort(singular)[::-1]
    singular, v = singular[order], vt[order].T
    model = dmf.SVD(rank=4, n_iter=20, center=center, n_blocks=3).fit(ratings)
    np.testing.assert_array_equal(model.item_ids_, items)
    np.testing.assert_allclose(model.history_[-1]["singular_values"], singular, rtol=1e-5)
    # the same subspace: V·Vᵀ (signs of singular vectors are arbitrary)
    np.testing.assert_allclose(model.item_factors_ @ model.item_factors_.T, v @ v.T, atol=1e-4)
    # user factors are the projection of each user's row: A·V
    np.testing.assert_allclose(model.user_factors_, matrix @ model.item_factors_.astype(np.float64), atol=1e-4)
    # scores are PureSVD's A·V·Vᵀ (+ μ when centred)
    pairs = ratings.head(20)[["user", "item"]]
    predicted = model.predict(pairs).compute()["prediction"].to_numpy()
    reference = (matrix @ v @ v.T)[np.searchsorted(users, pairs["user"]), np.searchsorted(items, pairs["item"])]
    offset = ratings["rating"].astype(np.float64).mean() if center else 0.0
    np.testing.assert_allclose(predicted, np.asarray(reference).ravel() + offset, atol=1e-3)


def test_a_new_user_is_the_projection_of_the_row(client, ratings):
    model = dmf.SVD(rank=4, n_iter=4, center=True).fit(ratings)
    first = model.user_ids_[0]
    history = ratings[ratings["user"] == first].assign(user=-5)
    folded = model.fold_in(history)
    row = pd.Index(folded.user_ids_).get_loc(-5)
    np.testing.assert_allclose(folded.user_factors_[row], model.user_factors_[0], atol=1e-5)
    # recommend_user with a history needs no retraining and ranks like the trained user
    top = model.recommend_user(-6, history=history.drop(columns="user"), k=5)
    trained = model.recommend_user(first, k=5)
    assert top["item"].tolist() == trained["item"].tolist()


def test_item_fold_in_is_the_least_squares_fit(client, ratings):
    model = dmf.SVD(rank=4, n_iter=20).fit(ratings)
    item = model.item_ids_[3]
    column = ratings[ratings["item"] == item].assign(item=-7)
    folded = model.fold_in(column, side="items")
    users = pd.Index(model.user_ids_)
    target = np.zeros(len(users))
    target[users.get_indexer(column["user"])] = column["rating"]
    solution = np.linalg.lstsq(model.user_factors_.astype(np.float64), target, rcond=None)[0]
    row = pd.Index(folded.item_ids_).get_loc(-7)
    np.testing.assert_allclose(folded.item_factors_[row], solution, atol=1e-4)
    # and it is the trained item's own factor vector
    np.testing.assert_allclose(folded.item_factors_[row], model.item_factors_[3], atol=1e-4)
