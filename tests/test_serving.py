"""Serving a fitted model: fold-in against dense references, one user's top-k, candidates,
similar items; local calls against the Dask stages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import brute_force_top_k, random_ratings

import dmf

PARAMS = {"rank": 4, "max_iter": 4, "seed": 3, "solver": "cholesky"}


@pytest.fixture(scope="module")
def split():
    """Ratings of 100 training users and of 8 new users (ids 9000+) on the same items."""
    frame = random_ratings(108, 50, 0.25, seed=71)
    users = np.sort(frame["user"].unique())
    new = frame["user"].isin(users[-8:])
    fresh = frame[new].assign(user=frame.loc[new, "user"] + 9000)
    return frame[~new].reset_index(drop=True), fresh.reset_index(drop=True)


def _dense_explicit_fold_in(model, ratings, *, reg, bias_reg, damping, bias_damping, biases) -> dict:
    """Per new user: np.linalg.solve of the training half-step's normal equations."""
    out = {}
    items = pd.Index(model.item_ids_)
    for user, rows in ratings.groupby("user"):
        cols = items.get_indexer(rows["item"])
        design = model.item_factors_[cols].astype(np.float64)
        target = rows["rating"].to_numpy(np.float64)
        n = len(cols)
        penalty = [reg * n + damping] * design.shape[1]
        if biases:
            target = target - model.global_mean_ - model.item_biases_[cols]
            design = np.hstack([design, np.ones((n, 1))])
            penalty.append(bias_reg * n + bias_damping)
        out[user] = np.linalg.solve(design.T @ design + np.diag(penalty), design.T @ target)
    return out


@pytest.mark.parametrize("biases", [True, False])
def test_explicit_fold_in_equals_the_dense_half_step(client, split, biases):
    train, fresh = split
    params = {**PARAMS, "biases": biases, "reg": 0.1, "bias_reg": 0.05, "damping": 1.0, "bias_damping": 2.0}
    model = dmf.ALS(**params).fit(train)
    folded = model.fold_in(fresh)
    reference = _dense_explicit_fold_in(model, fresh, reg=0.1, bias_reg=0.05, damping=1.0, bias_damping=2.0,
                                        biases=biases)
    ids = pd.Index(folded.user_ids_)
    for user, solution in reference.items():
        row = ids.get_loc(user)
        np.testing.assert_allclose(folded.user_factors_[row], solution[:4], atol=2e-5)
        if biases:
            assert folded.user_biases_[row] == pytest.approx(solution[4], abs=2e-5)
    # the known users and the item side are untouched, bit for bit
    old = ids.get_indexer(model.user_ids_)
    np.testing.assert_array_equal(folded.user_factors_[old], model.user_factors_)
    np.testing.assert_array_equal(folded.item_factors_, model.item_factors_)


def test_implicit_fold_in_equals_the_dense_half_step(client, split):
    train, fresh = split
    model = dmf.ImplicitALS(rank=4, max_iter=3, reg=0.2, alpha=2.0, solver="cholesky").fit(train)
    folded = model.fold_in(fresh)
    items = model.item_factors_.astype(np.float64)
    ids = pd.Index(folded.user_ids_)
    for user, rows in fresh.groupby("user"):
        values = np.zeros(len(items))
        values[pd.Index(model.item_ids_).get_indexer(rows["item"])] = rows["rating"]
        confidence = 1 + 2.0 * np.abs(values)
        gram = (items * confidence[:, None]).T @ items + 0.2 * np.eye(4)
        expected = np.linalg.solve(gram, items.T @ (confidence * (values > 0)))
        np.testing.assert_allclose(folded.user_factors_[ids.get_loc(user)], expected, atol=2e-5)


def test_fold_in_on_the_cluster_equals_the_local_path_and_keeps_seen_items(client, split):
    import dask.dataframe as dd

    train, fresh = split
    model = dmf.ALS(**PARAMS).fit(train)
    local = model.fold_in(fresh)
    staged = model.fold_in(dd.from_pandas(fresh, npartitions=3))
    np.testing.assert_array_equal(staged.user_factors_, local.user_factors_)
    np.testing.assert_array_equal(staged.user_biases_, local.user_biases_)
    top = local.recommend(50, users=list(fresh["user"].unique())).compute()
    rated = set(zip(fresh["user"], fresh["item"]))
    assert len(top) and not set(zip(top["user"], top["item"])) & rated
    # refolding a known user replaces its row and its seen items
    again = local.fold_in(fresh[fresh["user"] == fresh["user"].iloc[0]].head(3))
    first = fresh["user"].iloc[0]
    seen = again.recommend(50, users=[first], exclude_seen=True).compute()
    assert len(seen) == 50 - 3


def test_item_fold_in_keeps_every_users_seen_items(client, split):
    train, _ = split
    items = np.sort(train["item"].unique())
    new_item = train["item"].isin(items[-3:])
    model = dmf.ALS(**PARAMS).fit(train[~new_item])
    folded = model.fold_in(train[new_item], side="items")
    assert set(items[-3:]) <= set(folded.item_ids_)
    top = folded.recommend(len(items)).compute()
    assert not set(zip(top["user"], top["item"])) & set(zip(train["user"], train["item"]))


def test_one_user_locally_equals_the_stage_and_brute_force(client, split, tmp_path):
    train, fresh = split
    model = dmf.ALS(**PARAMS).fit(train)
    model.save(tmp_path / "m")
    served = dmf.load(tmp_path / "m")
    user = served.user_ids_[5]
    local = served.recommend_user(user, k=7)
    staged = served.recommend(7, users=[user]).compute()
    assert local["item"].tolist() == staged["item"].tolist()
    np.testing.assert_allclose(local["score"], staged["score"], rtol=1e-5)
    scores = (served.user_factors_[5] @ served.item_factors_.T + served.user_biases_[5] + served.item_biases_
              + served.global_mean_)
    seen = np.isin(served.item_ids_, train.loc[train["user"] == user, "item"])
    assert served.item_ids_[brute_force_top_k(scores[None, :], seen[None, :], 7)[0]].tolist() == local["item"].tolist()
    candidates = list(served.item_ids_[::3])
    ranked = served.recommend_user(user, k=5, items=candidates)
    assert set(ranked["item"]) <= set(candidates) - set(train.loc[train["user"] == user, "item"])
    # a one-off user from a history equals the same user folded in
    history = fresh[fresh["user"] == fresh["user"].iloc[0]][["item", "rating"]]
    one_off = served.recommend_user("visitor", history=history, k=5)
    folded = served.fold_in(fresh[fresh["user"] == fresh["user"].iloc[0]])
    expected = folded.recommend_user(fresh["user"].iloc[0], k=5)
    assert one_off["item"].tolist() == expected["item"].tolist() and set(one_off["user"]) == {"visitor"}
    assert not set(one_off["item"]) & set(history["item"])
    # an unknown user without history: the bias model's ranking
    unknown = served.recommend_user(-1, k=3)
    order = np.lexsort((np.arange(len(served.item_ids_)), -served.item_biases_))[:3]
    assert unknown["item"].tolist() == served.item_ids_[order].tolist()


def test_similar_items_locally_and_for_the_whole_catalog(client, split):
    train, _ = split
    model = dmf.ALS(**PARAMS).fit(train)
    unit = model.item_factors_ / np.linalg.norm(model.item_factors_, axis=1, keepdims=True)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -np.inf)
    wanted = list(model.item_ids_[:4])
    local = model.similar_items(wanted, k=5)
    for position, item in enumerate(wanted):
        expected = model.item_ids_[brute_force_top_k(cosine[position : position + 1], np.zeros((1, len(unit)), bool),
                                                     5)[0]]
        assert local.loc[local["item"] == item, "similar"].tolist() == expected.tolist()
    everything = model.similar_items(k=5).compute()
    assert len(everything) == 5 * len(model.item_ids_)
    pd.testing.assert_frame_equal(everything[everything["item"].isin(wanted)].reset_index(drop=True), local,
                                  check_exact=False, rtol=1e-5)
    with pytest.raises(ValueError, match="1 items unknown to the model"):
        model.similar_items([-5])
    assert set(model.similar_users(list(model.user_ids_[:2]), k=3)["similar"]) <= set(model.user_ids_)


def test_with_rows_rebuilds_seen_items_as_a_naive_rebuild_would():
    """Rows added and replaced, ids given in any order: each user's seen items are exactly
    the old ones (renumbered) or, for folded users, the new ones."""
    from dmf.data.ids import IdVocabulary
    from dmf.model import FittedModel, SeenItems

    rng = np.random.default_rng(5)
    n_users, n_items = 30, 12
    seen_sets = {u: sorted(rng.choice(n_items, rng.integers(0, 6), replace=False)) for u in range(n_users)}
    indptr = np.cumsum([0] + [len(seen_sets[u]) for u in range(n_users)])
    items = np.concatenate([seen_sets[u] for u in range(n_users)]).astype(np.int32)
    user_ids = np.arange(n_users) * 10
    model = FittedModel("ALS", {}, IdVocabulary(user_ids), IdVocabulary(np.arange(n_items)),
                        rng.normal(size=(n_users, 2)).astype(np.float32), rng.normal(size=(n_items, 2)).astype(np.float32),
                        None, None, 3.0, (1.0, 5.0), 100, 2, seen=SeenItems(indptr, items))
    folded_ids = pd.Index([55, 20, 5, 290])  # new, known (replaced), new, known; not sorted
    interactions = (np.array([0, 0, 1, 3, 3, 3]), np.array([4, 1, 7, 0, 11, 2]))
    updated = model.with_rows("users", folded_ids, np.ones((4, 2), np.float32), None, interactions)
    expected = {uid: seen_sets[uid // 10] for uid in user_ids}
    for position, uid in enumerate(folded_ids):
        expected[uid] = sorted(interactions[1][interactions[0] == position])
    final_ids = updated.user_ids.ids
    for row, uid in enumerate(final_ids):
        got = updated.seen.items[updated.seen.indptr[row] : updated.seen.indptr[row + 1]].tolist()
        assert got == list(expected[uid]), uid
    np.testing.assert_array_equal(updated.user_factors[final_ids.get_indexer(folded_ids)], np.ones((4, 2)))


def test_ids_with_attributes_but_no_ratings_get_mapped_factors(client, split):
    """Gantner et al.'s mapping: an item with attributes but no ratings becomes a model row
    that predictions and top-k use; trained rows stay as they were."""
    train, _ = split
    items = np.sort(train["item"].unique())
    genre = {item: ("a" if item % 3 else "b") for item in items}
    features = pd.DataFrame({"item": list(items) + [10_001], "kind": [genre[i] for i in items] + ["a"],
                             "weight": list(np.arange(len(items), dtype=float)) + [7.0]})
    model = dmf.ALS(**PARAMS, feature_reg=1.0).fit(train, item_features=features)
    assert 10_001 in set(model.item_ids_) and len(model.item_ids_) == len(items) + 1
    plain = dmf.ALS(**PARAMS).fit(train)
    np.testing.assert_array_equal(model.item_factors_[:-1], plain.item_factors_)  # trained rows unchanged
    assert model.predict(pd.DataFrame({"user": [model.user_ids_[0]], "item": [10_001]})).compute()[
        "prediction"].notna().all()
    top = model.recommend(len(items) + 1, users=[model.user_ids_[0]]).compute()
    assert 10_001 in set(top["item"])
    with pytest.raises(ValueError, match="features repeat 1 item ids"):
        dmf.ALS(**PARAMS).fit(train, item_features=pd.concat([features, features.tail(1)]))


def test_the_weighted_ridge_map_equals_an_augmented_least_squares_solve():
    from dmf.engine.mapping import apply_linear_map, fit_linear_map

    rng = np.random.default_rng(3)
    features, targets, weights = rng.normal(size=(40, 5)), rng.normal(size=(40, 3)), rng.random(40) + 0.1
    mapped = fit_linear_map(features, targets, 2.5, weights)
    # the same objective as one least-squares problem: sqrt(weight)-scaled rows plus ridge rows
    design = np.hstack([features, np.ones((40, 1))]) * np.sqrt(weights)[:, None]
    ridge = np.hstack([np.sqrt(2.5) * np.eye(5), np.zeros((5, 1))])
    expected = np.linalg.lstsq(np.vstack([design, ridge]),
                               np.vstack([targets * np.sqrt(weights)[:, None], np.zeros((5, 3))]), rcond=None)[0]
    np.testing.assert_allclose(mapped, expected, atol=1e-10)
    np.testing.assert_allclose(apply_linear_map(features[:2], mapped), np.hstack([features[:2], np.ones((2, 1))]) @ expected)


def test_recommend_ranks_a_candidate_set_and_one_off_histories_on_the_cluster(client, split):
    train, fresh = split
    model = dmf.ALS(**PARAMS).fit(train)
    candidates = list(model.item_ids_[::4]) + [123_456]  # one unknown id, left out
    ranked = model.recommend(5, items=candidates).compute()
    assert set(ranked["item"]) <= set(candidates)
    for user in model.user_ids_[:5]:
        expected = model.recommend_user(user, k=5, items=candidates)
        assert ranked.loc[ranked["user"] == user, "item"].tolist() == expected["item"].tolist()
    one_off = model.recommend(5, history=fresh).compute()
    assert set(one_off["user"]) == set(fresh["user"])
    assert not set(zip(one_off["user"], one_off["item"])) & set(zip(fresh["user"], fresh["item"]))
    assert not set(fresh["user"]) & set(model.user_ids_)  # the model itself is unchanged


def test_review_cases_of_the_serving_paths(client, split, tmp_path):
    import dask.dataframe as dd

    from dmf.data.features import encode_features
    from dmf.stages.serving import similar_rows

    train, fresh = split
    model = dmf.ALS(**PARAMS).fit(train)
    # a fold-in stage whose shuffle leaves partitions empty
    one_user = fresh[fresh["user"] == fresh["user"].iloc[0]]
    staged = model.fold_in(dd.from_pandas(one_user, npartitions=4))
    np.testing.assert_array_equal(staged.user_factors_, model.fold_in(one_user).user_factors_)
    # ties at the cut of similar rows go to the lower indices (cold rows can be identical)
    assert similar_rows(np.zeros((6, 2)), np.array([3]), 3)[0].tolist() == [[0, 1, 2]]
    # features with a repeated index and nullable strings
    features = pd.DataFrame({"item": [1, 2, 3], "kind": pd.array(["a", pd.NA, "b"], dtype="string")}, index=[0, 0, 1])
    ids, matrix, names = encode_features(features, "item")
    assert names == ["kind=a", "kind=b"] and matrix.tolist() == [[1, 0], [0, 0], [0, 1]]
    # a model without seen items: a fold-in still records the folded user's items
    bare = dmf.ALS(**model.get_params())
    bare.model_ = model.model_.without_seen()
    folded = bare.fold_in(one_user)
    user = one_user["user"].iloc[0]
    assert not set(folded.recommend_user(user, k=50)["item"]) & set(one_user["item"])


def test_implicit_history_items_are_never_recommended_back(client, split):
    train, fresh = split
    model = dmf.ImplicitALS(rank=4, max_iter=3, threshold=3.5).fit(train)
    user = fresh["user"].iloc[0]
    history = fresh[fresh["user"] == user]
    local = model.recommend_user(user, history=history[["item", "rating"]], k=50)
    assert not set(local["item"]) & set(history["item"])  # below the threshold too
    staged = model.recommend(50, history=history).compute()
    assert local["item"].tolist() == staged["item"].tolist()
    known = model.user_ids_[0]
    low = pd.DataFrame({"item": model.item_ids_[:3], "rating": [1.0, 1.0, 1.0]})  # nothing folds in
    kept = model.recommend_user(known, history=low, k=5)
    staged = model.recommend(5, history=low.assign(user=known)).compute()
    assert kept["item"].tolist() == staged["item"].tolist()
    assert not set(kept["item"]) & set(low["item"])
