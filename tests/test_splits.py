"""Splits: deterministic for any partitioning, disjoint and complete; temporal puts each user's latest in test."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from helpers import random_ratings

from dmf.columns import ITEM, RATING, TIMESTAMP, USER
from dmf.data.splits import holdout_mask, mark_random, mark_temporal, random_split, temporal_split
from dmf.datasets import grouplens_split, load_ratings

KEY = [USER, ITEM]


def ratings_frame(n_users: int = 60, per_user: int = 15, seed: int = 0, string_ids: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(500, per_user, replace=False) for _ in range(n_users)])
    frame = pd.DataFrame({USER: users, ITEM: items, RATING: rng.integers(1, 6, users.size).astype("float32"),
                          TIMESTAMP: rng.integers(0, 50, users.size)})  # ties in timestamp on purpose
    if string_ids:
        frame[USER] = "u" + frame[USER].astype(str)
    return frame.sample(frac=1.0, random_state=seed, ignore_index=True)


def pairs(frame: pd.DataFrame) -> set[tuple]:
    return set(map(tuple, frame[KEY].to_numpy().tolist()))


@pytest.mark.parametrize("string_ids", [False, True])
def test_random_split_disjoint_complete_and_partition_invariant(client, string_ids):
    data = ratings_frame(string_ids=string_ids)
    results = []
    for npartitions in (1, 4, 7):
        train, test = random_split(dd.from_pandas(data, npartitions=npartitions), 0.25, seed=42)
        train, test = train.compute(), test.compute()
        assert pairs(train).isdisjoint(pairs(test))
        assert pairs(train) | pairs(test) == pairs(data) and len(train) + len(test) == len(data)
        assert list(train.columns) == list(data.columns)
        results.append(pairs(test))
    assert results[0] == results[1] == results[2]
    assert 0.2 < len(results[0]) / len(data) < 0.3
    other_seed = random_split(dd.from_pandas(data, npartitions=2), 0.25, seed=43)[1].compute()
    assert pairs(other_seed) != results[0]


def test_random_split_fraction_on_ml100k(ml100k):
    marked = mark_random(load_ratings(ml100k, blocksize=400_000), 0.1, seed=0).compute()
    assert abs(marked["is_test"].mean() - 0.1) < 0.005


@pytest.mark.parametrize("npartitions", [1, 5])
def test_temporal_split_puts_each_users_latest_in_test(client, npartitions):
    data = ratings_frame(per_user=15)
    extra = pd.DataFrame({USER: [1000, 1001, 1001], ITEM: [1, 1, 2], RATING: [3.0, 4.0, 5.0], TIMESTAMP: [5, 5, 9]})
    data = pd.concat([data, extra.astype(data.dtypes.to_dict())], ignore_index=True)
    train, test = temporal_split(dd.from_pandas(data, npartitions=npartitions), test_count=3)
    train, test = train.compute(), test.compute()
    assert pairs(train).isdisjoint(pairs(test)) and pairs(train) | pairs(test) == pairs(data)
    per_user = test.groupby(USER).size()
    assert (per_user.drop([1000, 1001], errors="ignore") == 3).all() and len(per_user) == 61
    assert 1000 not in per_user.index  # a single rating stays in train (min_train=1)
    assert test[test[USER] == 1001][ITEM].tolist() == [2]
    latest_train = train.groupby(USER)[TIMESTAMP].max()
    earliest_test = test.groupby(USER)[TIMESTAMP].min()
    assert (earliest_test >= latest_train.reindex(earliest_test.index)).all()
    expected = data.sort_values([USER, TIMESTAMP, ITEM]).groupby(USER).tail(3)
    assert pairs(test) == pairs(expected[~expected[USER].isin([1000, 1001])]) | {(1001, 2)}


def test_temporal_fraction_is_partition_invariant(client):
    data = ratings_frame(per_user=10)
    tests = [pairs(temporal_split(dd.from_pandas(data, npartitions=n), test_fraction=0.2)[1].compute())
             for n in (1, 3)]
    assert tests[0] == tests[1] and len(tests[0]) == 60 * 2


def test_grouplens_u1_and_ua_match_the_files(ml100k):
    train, test = grouplens_split(ml100k, "u1")
    train, test = train.compute(), test.compute()
    assert (len(train), len(test)) == (80_000, 20_000)
    assert pairs(train).isdisjoint(pairs(test))
    everything = load_ratings(ml100k).compute()
    assert pairs(train) | pairs(test) == pairs(everything)
    ua_test = grouplens_split(ml100k, "ua")[1].compute()
    assert (ua_test.groupby(USER).size() == 10).all()  # ua.test: exactly 10 ratings per user


def test_bad_parameters_name_the_problem(tmp_path):
    frame = dd.from_pandas(ratings_frame(), npartitions=2)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        mark_random(frame, 1.5, seed=0)
    with pytest.raises(ValueError, match="exactly one of test_count"):
        mark_temporal(frame, test_count=2, test_fraction=0.1)
    with pytest.raises(ValueError, match="needs a 'timestamp' column"):
        mark_temporal(frame.drop(columns=TIMESTAMP), test_count=1)
    with pytest.raises(ValueError, match="unknown GroupLens split 'u9'"):
        grouplens_split(tmp_path, "u9")


@pytest.mark.parametrize("prefix", [None, "user-"], ids=["integer ids", "string ids"])
def test_the_split_seed_changes_the_split_for_any_id_type(prefix):
    """Integer ids once ignored the seed (pandas' hash_key applies to strings only)."""
    frame = random_ratings(200, 50, 0.2, seed=4, user_prefix=prefix)
    masks = {seed: holdout_mask(frame, 0.2, seed) for seed in (0, 1, 1_000_000, 1_000_001)}
    assert len({mask.tobytes() for mask in masks.values()}) == 4
    np.testing.assert_array_equal(holdout_mask(frame, 0.2, 1_000_001), masks[1_000_001])
    assert abs(masks[0].mean() - 0.2) < 0.03
