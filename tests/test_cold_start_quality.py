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
