"""Predictions, top-k, metrics and save/load of a fitted model."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import brute_force_top_k, random_ratings

import dmf


@pytest.fixture(scope="module")
def fitted():
    """Training ratings of the module's model."""
    return random_ratings(80, 40, 0.3, seed=12)


@pytest.fixture
def model(client, fitted):
    return dmf.ALS(rank=4, max_iter=3, seed=2, n_blocks=3).fit(fitted)


def _dense_scores(model):
    return (model.user_factors_.astype(np.float64) @ model.item_factors_.T.astype(np.float64)
            + model.user_biases_[:, None] + model.item_biases_[None, :] + model.global_mean_)


def test_recommend_equals_brute_force_with_seen_items_masked(model, fitted):
    k = 7
    recs = model.recommend(k, exclude=fitted).compute()
    scores = _dense_scores(model)
    users, items = list(model.user_ids_), list(model.item_ids_)
    seen = np.zeros(scores.shape, dtype=bool)
    seen[[users.index(u) for u in fitted["user"]], [items.index(i) for i in fitted["item"]]] = True
    expected = brute_force_top_k(scores, seen, k)
    seen_pairs = set(zip(fitted["user"], fitted["item"]))
    assert not any(pair in seen_pairs for pair in zip(recs["user"], recs["item"]))
    for row, user in enumerate(users):
        mine = recs[recs["user"] == user].sort_values("rank")
        assert list(mine["rank"]) == list(range(1, len(mine) + 1))
        assert list(mine["item"]) == [items[c] for c in expected[row]]
        np.testing.assert_allclose(mine["score"], scores[row, expected[row]], rtol=1e-5)


def test_k_larger_than_unseen_items_gives_fewer_rows(model, fitted):
    recs = model.recommend(35, exclude=fitted).compute()
    n_seen = fitted.groupby("user")["item"].nunique()
    per_user = recs.groupby("user").size()
    n_items = len(model.item_ids_)
    for user, seen in n_seen.items():
        assert per_user.get(user, 0) == min(35, n_items - seen)


def test_recommend_for_chosen_and_unknown_users(model, fitted):
    known = list(model.user_ids_[:3])
    recs = model.recommend(5, users=known + [10**9], exclude=fitted).compute()
    assert set(recs["user"]) == set(known) | {10**9}
    stranger = recs[recs["user"] == 10**9].sort_values("rank")
    by_bias = np.lexsort((np.arange(len(model.item_ids_)), -model.item_biases_))[:5]
    assert list(stranger["item"]) == list(model.item_ids_[by_bias])


def test_unknown_ids_follow_the_policy(client, fitted):
    model = dmf.ALS(rank=3, max_iter=2, n_blocks=2).fit(fitted)
    user, item = model.user_ids_[0], model.item_ids_[0]
    pairs = pd.DataFrame({"user": [user, user, -1, -1], "item": [item, -2, item, -2], "rating": [3.0, 4.0, 2.0, 5.0]})
    ui, ii = 0, 0
    full = model.global_mean_ + model.user_biases_[ui] + model.item_biases_[ii] + model.user_factors_[ui] @ model.item_factors_[ii]
    expected = [np.clip(full, *model.rating_range_), model.global_mean_ + model.user_biases_[ui],
                model.global_mean_ + model.item_biases_[ii], model.global_mean_]
    got = model.predict(pairs).compute()
    np.testing.assert_allclose(got["prediction"], expected, rtol=1e-5)
    report = dmf.rmse(model, pairs)
    assert report.count == 4 and report.n_fallback == 3
    assert report == pytest.approx(np.sqrt(np.mean((np.array(expected) - pairs["rating"]) ** 2)), rel=1e-5)

    model.unknown = "nan"
    assert model.predict(pairs).compute()["prediction"].isna().tolist() == [False, True, True, True]
    assert dmf.rmse(model, pairs).n_dropped == 3
    model.unknown = "drop"
    assert len(model.predict(pairs).compute()) == 1
    assert dmf.mae(model, pairs).count == 1


def test_metrics_from_predictions_refuse_missing_values(client, model, fitted):
    predictions = model.predict(fitted)
    errors = predictions.compute()["prediction"].to_numpy() - fitted["rating"].to_numpy()
    assert dmf.rmse(predictions, fitted) == pytest.approx(np.sqrt(np.mean(errors**2)), rel=1e-5)
    assert dmf.mae(predictions, fitted) == pytest.approx(np.mean(np.abs(errors)), rel=1e-5)
    with_nan = predictions.compute().assign(prediction=lambda f: f["prediction"].where(f.index != 0))
    with pytest.raises(ValueError, match="1 test pairs have no prediction"):
        dmf.rmse(with_nan, fitted)
    # a test pair absent from the predictions is not dropped silently either
    with pytest.raises(ValueError, match="2 test pairs have no prediction"):
        dmf.rmse(predictions.compute().iloc[2:], fitted)


_LOAD_AND_SCORE = """
import sys, dask, pandas as pd, dmf
from distributed import Client
try:
    Client.current()
    sys.exit("a distributed client exists")
except ValueError:
    pass
dask.config.set(scheduler="synchronous")
model_dir, ratings_path, out = sys.argv[1:]
ratings = pd.read_parquet(ratings_path)
model = dmf.ALS.load(model_dir)
model.predict(ratings).compute().to_parquet(out + "/predictions.parquet")
model.recommend(5, exclude=ratings).compute().to_parquet(out + "/recs.parquet")
"""


def test_save_load_gives_identical_outputs_without_a_cluster(model, fitted, tmp_path):
    directory = tmp_path / "model"
    model.save(directory)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(directory)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert sorted(p.name for p in directory.iterdir()) == ["items.parquet", "manifest.json", "seen.parquet",
                                                           "users.parquet"]
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and len(manifest["history"]) == 3
    assert sorted(manifest["files"]) == ["items.parquet", "seen.parquet", "users.parquet"]
    fitted.to_parquet(tmp_path / "ratings.parquet")
    # A fresh process with no cluster: load, predict and recommend on the synchronous scheduler.
    subprocess.run([sys.executable, "-c", _LOAD_AND_SCORE, str(directory), str(tmp_path / "ratings.parquet"),
                    str(tmp_path)], check=True, timeout=120)
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    recs = pd.read_parquet(tmp_path / "recs.parquet")
    expected_predictions = model.predict(fitted).compute()
    expected_recs = model.recommend(5, exclude=fitted).compute()
    pd.testing.assert_frame_equal(predictions.reset_index(drop=True), expected_predictions.reset_index(drop=True))
    pd.testing.assert_frame_equal(recs.reset_index(drop=True), expected_recs.reset_index(drop=True))
    loaded = dmf.ALS.load(directory)
    assert loaded.get_params() == model.get_params()
    assert loaded.history_ == model.history_
    model.save(directory, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_format_1_directory_without_seen_items_still_loads(model, fitted, tmp_path):
    """Directories written before the model kept its training items load and serve; they
    exclude only what ``exclude=`` names."""
    directory = tmp_path / "old"
    model.save(directory, seen=False)
    manifest = json.loads((directory / "manifest.json").read_text())
    del manifest["rank"]
    manifest.update(format="dmf.ALS", format_version=1,
                    files={"users": "users.parquet", "items": "items.parquet"})
    (directory / "manifest.json").write_text(json.dumps(manifest))
    loaded = dmf.ALS.load(directory)
    assert loaded.model_.seen is None
    np.testing.assert_array_equal(loaded.item_factors_, model.item_factors_)
    everything = loaded.recommend(5).compute()
    assert len(everything) == 5 * len(model.user_ids_)
    pd.testing.assert_frame_equal(loaded.recommend(5, exclude=fitted).compute(), model.recommend(5).compute())


def test_load_checks_the_tables_against_the_manifest(model, tmp_path):
    directory = tmp_path / "model"
    model.save(directory)
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    edited = {**manifest, "rank": manifest["rank"] // 2, "params": {**manifest["params"], "rank": 2}}
    manifest_path.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="factors of length"):
        dmf.load(directory)
    manifest_path.write_text(json.dumps({**manifest, "counts": {**manifest["counts"], "users": 3}}))
    with pytest.raises(ValueError, match="rows but the manifest counts 3 users"):
        dmf.load(directory)
    manifest_path.write_text(json.dumps(manifest))
    (directory / "items.parquet").write_bytes((directory / "items.parquet").read_bytes()[:-1] + b"\0")
    with pytest.raises(ValueError, match="checksum"):
        dmf.load(directory)
