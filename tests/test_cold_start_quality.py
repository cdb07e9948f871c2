"""Strong generalization on ml-100k (slow): users unseen in training, folded in from their
earliest ratings, predicted on their later ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import dmf
from dmf.datasets import load_ratings
from dmf.random import SPLIT_STREAM, counter_uniform, id_hashes


def _strong_generalization_split(ml100k, seed: int = 0):
    """10 % of users held out (by a seeded hash of the id); each held-out user's ratings split
    in time: the earliest half to fold in, the later half to test."""
    ratings = load_ratings(ml100k).compute()
    users = pd.Index(np.sort(ratings["user"].unique()))
    held_out = users[counter_uniform(seed, SPLIT_STREAM, id_hashes(users)) < 0.1]
    train = ratings[~ratings["user"].isin(held_out)]
    new = ratings[ratings["user"].isin(held_out)].sort_values(["user", "timestamp", "item"], kind="stable")
    position = new.groupby("user").cumcount()
    size = new.groupby("user")["item"].transform("size")
    return train, new[position < size // 2], new[position >= size // 2]


@pytest.mark.slow
def test_fold_in_matches_a_retrain_for_new_users(client, ml100k, capsys):
    train, early, late = _strong_generalization_split(ml100k)
    model = dmf.ALS().fit(train)
    fallback = dmf.rmse(model, late)
    folded = dmf.rmse(model.fold_in(early), late)
    retrained = dmf.rmse(dmf.ALS().fit(pd.concat([train, early])), late)
    with capsys.disabled():
        print(f"\nstrong generalization, ml-100k, {late['user'].nunique()} new users, {len(late)} test ratings: "
              f"fold-in {folded:.4f}, retrain {retrained:.4f}, bias fallback {fallback:.4f}")
    assert folded <= 1.01 * retrained
    assert folded < fallback - 0.02


@pytest.mark.slow
def test_implicit_fold_in_ranks_new_users_as_a_retrain_does(client, ml100k, capsys):
    train, early, late = _strong_generalization_split(ml100k)
    new_users = list(late["user"].unique())

    def precision(model):
        top = model.recommend(10, users=new_users).compute()
        return dmf.ranking_metrics(top, late, k=10, relevance_threshold=4, precision_denominator="min")

    folded = precision(dmf.ImplicitALS(threshold=4).fit(train).fold_in(early))
    retrained = precision(dmf.ImplicitALS(threshold=4).fit(pd.concat([train, early])))
    with capsys.disabled():
        print(f"\nimplicit, new users: precision@10 fold-in {folded['precision@k']:.4f} vs retrain "
              f"{retrained['precision@k']:.4f}; NDCG@10 {folded['ndcg@k']:.4f} vs {retrained['ndcg@k']:.4f}")
    assert folded["precision@k"] >= 0.9 * retrained["precision@k"]


def _release_year(items: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(items["release_date"].str[-4:], errors="coerce")


def _features_only_rmse(train, test, model, features: pd.DataFrame, id_column: str) -> float:
    """Baseline: ratings minus μ and the other side's bias, regressed (least squares) on the
    held-out side's encoded attributes."""
    from dmf.data.features import encode_features

    ids, matrix, _ = encode_features(features, id_column)
    design = np.hstack([matrix, np.ones((len(matrix), 1))])
    other_column = "user" if id_column == "item" else "item"
    other_ids = pd.Index(model.user_ids_ if other_column == "user" else model.item_ids_)
    other_bias = model.user_biases_ if other_column == "user" else model.item_biases_

    def residual_and_rows(frame):
        rows = ids.get_indexer(frame[id_column])
        bias = other_bias[other_ids.get_indexer(frame[other_column])]
        return frame["rating"].to_numpy() - model.global_mean_ - bias, rows

    target, rows = residual_and_rows(train)
    weights = np.linalg.lstsq(design[rows], target, rcond=None)[0]
    residual, rows = residual_and_rows(test)
    return float(np.sqrt(np.mean((np.clip(design[rows] @ weights + (test["rating"] - residual), 1, 5)
                                  - test["rating"]) ** 2)))


@pytest.mark.slow
@pytest.mark.parametrize("side", ["items", "users"])
def test_cold_ids_with_attributes_beat_the_bias_fallback_and_a_features_only_model(client, ml100k, side, capsys):
    from dmf.datasets import load_items, load_users

    ratings = load_ratings(ml100k).compute()
    id_column = "item" if side == "items" else "user"
    ids = pd.Index(np.sort(ratings[id_column].unique()))
    cold = ids[counter_uniform(7, SPLIT_STREAM, id_hashes(ids)) < 0.1]
    train, test = ratings[~ratings[id_column].isin(cold)], ratings[ratings[id_column].isin(cold)]
    if side == "items":
        items = load_items(ml100k)
        features = items[["item", "genres"]].assign(year=_release_year(items))
        fitted = dmf.ALS().fit(train, item_features=features)
    else:
        features = load_users(ml100k)[["user", "age", "gender", "occupation"]]
        fitted = dmf.ALS().fit(train, user_features=features)
    plain = dmf.ALS().fit(train)
    with_attributes, fallback = dmf.rmse(fitted, test), dmf.rmse(plain, test)
    baseline = _features_only_rmse(train, test, plain, features, id_column)
    with capsys.disabled():
        print(f"\ncold {side} of ml-100k ({len(cold)} ids, {len(test)} ratings): attribute mapping "
              f"{with_attributes:.4f} (bias fallback for {with_attributes.n_fallback}), bias fallback {fallback:.4f}, "
              f"features-only regression {baseline:.4f}")
    assert with_attributes.n_fallback < fallback.n_fallback  # left: items only the cold users rated
    assert with_attributes < fallback and with_attributes < baseline
