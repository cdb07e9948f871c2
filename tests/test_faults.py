"""The standing fault and bad-input suite: one test per case of the reliability issue, each
asserting the exact outcome (error text, exit code, what stays current, nothing half-written).

Cases that already held before that issue keep their tests where they were written
(tests/test_nightly_cluster.py, tests/test_pipelines.py, tests/test_ratings.py,
tests/test_scoring.py, tests/test_splits.py); the README's reliability table lists them all.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import operator
import os
import subprocess
import sys
import threading
import time

import dask
import dask.dataframe as dd
import distributed
import numpy as np
import pandas as pd
import pytest
from cluster_harness import SubprocessCluster
from conftest import REPO_ROOT
from distributed import Client
from helpers import random_ratings

import dmf
from dmf.errors import DmfWarning
from dmf.model import save_model
from dmf.pipeline.home import RunLocked, exclusive_lock, prune_versions, switch_current
from dmf.pipeline.nightly import NightlyConfig, run_nightly
from dmf.scheduler import SchedulerLost
from dmf.storage import atomic_directory


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return random_ratings(120, 60, 0.2, seed=61)


@pytest.fixture(scope="module")
def three_workers():
    """Real worker processes shared by the tests that kill one; each test starts a replacement."""
    with SubprocessCluster(n_workers=3) as cluster, Client(cluster.address, timeout="5s") as client:
        yield cluster, client


@pytest.fixture
def killable(three_workers):
    cluster, client = three_workers
    yield cluster, client
    while len(cluster.worker_pids()) < 3:
        cluster.start_worker()


class _KillAt(logging.Handler):
    """Kill a worker of ``cluster`` when dmf logs a line starting with ``prefix`` (then hold
    the logging thread ``pause`` seconds)."""

    def __init__(self, cluster, prefix: str, pause: float = 0.0):
        super().__init__()
        self.cluster, self.prefix, self.pause, self.killed = cluster, prefix, pause, False

    def emit(self, record):
        if not self.killed and record.getMessage().startswith(self.prefix):
            self.killed = True
            self.cluster.kill_worker(0)
            time.sleep(self.pause)


def _poisoned(model: dmf.ALS) -> dmf.ALS:
    """The model with NaN in some item factors (what a diverged or damaged model holds)."""
    item_factors = model.item_factors_.copy()
    item_factors[:3] = np.nan
    poisoned = dmf.ALS(**model.get_params())
    poisoned.model_ = model.model_.replace(item_factors=item_factors)
    return poisoned


# -- 1. metrics and the gate refuse non-finite values -----------------------------------------
def test_metrics_refuse_nan_instead_of_reporting_zero(client):
    test = pd.DataFrame({"user": range(100), "item": range(100), "rating": np.float32(5)})
    predictions = test.rename(columns={"rating": "prediction"}).assign(prediction=np.float32(1))
    assert dmf.rmse(predictions, test) == pytest.approx(4.0)
    test.loc[0, "rating"] = np.nan
    with pytest.raises(ValueError, match=r"1 test ratings are NaN or infinite, e.g. for \[\{'user': 0, 'item': 0\}\]"):
        dmf.rmse(predictions, test)


def test_metrics_refuse_a_model_with_nan_factors(client, ratings):
    poisoned = _poisoned(dmf.ALS(rank=3, max_iter=2).fit(ratings))
    with pytest.raises(ValueError, match=r"\d+ predictions are NaN or infinite"):
        dmf.rmse(poisoned, ratings)


def test_nightly_replaces_a_published_model_with_nan_factors(client, ratings, tmp_path, caplog):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    ratings.to_parquet(snapshot / "part-0.parquet")
    home = tmp_path / "home"
    params = {"rank": 3, "max_iter": 2}
    poisoned = _poisoned(dmf.ALS(**params).fit(ratings))
    save_model(poisoned.model_, home / "models" / "v1" / "model")
    switch_current(home, "v1")
    report = run_nightly(NightlyConfig(snapshot=snapshot, home=home, params=params), client)
    assert report["status"] == "published" and report["version"] == "v2"
    assert report["published_metrics"] is None and report["warm_start"] is None
    assert "v1 is no valid baseline" in caplog.text and "NaN or infinite" in caplog.text
    assert os.readlink(home / "models" / "current") == "v2"
    assert np.isfinite(dmf.load(home / "models" / "current" / "model").item_factors_).all()


# -- 4. load checks the tables against the manifest ------------------------------------------
def test_load_refuses_nan_factors(client, ratings, tmp_path):
    poisoned = _poisoned(dmf.ALS(rank=3, max_iter=2).fit(ratings))
    save_model(poisoned.model_, tmp_path / "model")  # checksums match: the values themselves are wrong
    with pytest.raises(ValueError, match="item_factors hold 9 NaN or infinite values"):
        dmf.load(tmp_path / "model")


# -- 6. a lost worker during evaluation -------------------------------------------------------
def _slow_frame(frame: pd.DataFrame, n_parts: int, seconds: float):
    """``frame`` as a Dask DataFrame whose partitions each take ``seconds`` to appear, built
    from library functions only (the cluster processes cannot import this file)."""
    bounds = np.linspace(0, len(frame), n_parts + 1).astype(int)
    parts = [frame.iloc[bounds[i] : bounds[i + 1]] for i in range(n_parts)]
    delayed_parts = [dask.delayed(operator.getitem)(dask.delayed(tuple)([dask.delayed(time.sleep)(seconds), part]), 1)
                     for part in parts]
    return dd.from_delayed(delayed_parts, meta=frame.iloc[:0])


@pytest.mark.slow
def test_a_worker_lost_during_evaluation_is_survived(killable, ratings, caplog):
    cluster, client = killable
    model = dmf.ALS(rank=3, max_iter=2).fit(ratings, client=client)
    expected = dmf.error_totals(model, ratings, client=client)
    slow_test = _slow_frame(ratings, 12, 0.4)
    earlier = set(client.who_has())  # the first evaluation's model may linger
    result: dict = {}

    def evaluate():
        try:
            result.update(dmf.error_totals(model, slow_test, client=client))
        except Exception as error:  # noqa: BLE001 - the test inspects it
            result["error"] = error

    evaluation = threading.Thread(target=evaluate)
    evaluation.start()
    holder = None
    for _ in range(100):  # the worker that holds the broadcast model
        holders = [workers for key, workers in client.who_has().items()
                   if str(key).startswith("FittedModel") and key not in earlier]
        if holders and holders[0]:
            holder = holders[0][0]
            break
        time.sleep(0.05)
    assert holder is not None
    cluster.kill_worker(cluster.worker_addresses().index(holder))
    evaluation.join(timeout=120)
    assert result.get("error") is None
    assert result["count"] == expected["count"] and result["rmse"] == pytest.approx(expected["rmse"], rel=1e-12)
    assert "evaluation lost data on a failed worker" in caplog.text


# -- 7. a poisoned warm start ------------------------------------------------------------------
def test_a_warm_start_with_nan_rows_is_ignored_with_a_warning(client, ratings):
    params = {"rank": 3, "max_iter": 2, "seed": 4}
    poisoned = _poisoned(dmf.ALS(**params).fit(ratings))
    with pytest.warns(DmfWarning, match="warm start ignored, starting from the seed instead: item_factors hold"):
        warm = dmf.ALS(**params).fit(ratings, warm_start=poisoned)
    cold = dmf.ALS(**params).fit(ratings)
    np.testing.assert_array_equal(warm.item_factors_, cold.item_factors_)


# -- 8. the scheduler killed mid-fit -----------------------------------------------------------
@pytest.mark.slow
def test_a_lost_scheduler_stops_the_fit_at_once_and_says_so(caplog):
    big = random_ratings(1500, 600, 0.05, seed=62)
    with SubprocessCluster(n_workers=2) as cluster:
        client = Client(cluster.address, timeout="5s")
        outcome: dict = {}

        def fit():
            try:
                dmf.ALS(rank=8, max_iter=200, n_blocks=4).fit(big, client=client)
            except Exception as error:  # noqa: BLE001 - the test inspects it
                outcome["error"] = error

        caplog.set_level(logging.INFO, logger="dmf")
        thread = threading.Thread(target=fit)
        thread.start()
        deadline = time.monotonic() + 60
        while "epoch 2 " not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        cluster.kill_scheduler()
        thread.join(timeout=120)
        client.close(timeout=5)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), SchedulerLost), repr(outcome.get("error"))
    assert "lost the connection to the scheduler" in str(outcome["error"])
    assert "rebuilding blocks" not in caplog.text


def test_a_worker_lost_during_early_stopping_keeps_the_same_best_epoch(killable):
    """The best epoch's factors are on the client, so a lost worker changes nothing: the fit
    stops where it would have and keeps the same epoch, bit for bit."""
    ratings = random_ratings(80, 60, 0.4, seed=4, rank=2, noise=0.8)
    train, test = ratings.sample(frac=0.8, random_state=0), None
    test = ratings.drop(train.index)
    params = {"rank": 12, "reg": 0.001, "damping": 0.0, "bias_damping": 0.0, "max_iter": 30, "n_blocks": 2,
              "solver": "cholesky"}
    cluster, client = killable
    calm = dmf.ALS(**params).fit(train, validation=test, patience=3, client=client)
    kept = [record["epoch"] for record in calm.history_ if record.get("kept")]
    assert kept and len(calm.history_) == kept[0] + 3 < 30

    killer = _KillAt(cluster, f"epoch {kept[0] + 2} ", pause=1.5)
    logging.getLogger("dmf").addHandler(killer)
    try:
        stormy = dmf.ALS(**params).fit(train, validation=test, patience=3, client=client)
    finally:
        logging.getLogger("dmf").removeHandler(killer)
    assert killer.killed
    assert [r["epoch"] for r in stormy.history_ if r.get("kept")] == kept
    assert len(stormy.history_) == len(calm.history_)
    np.testing.assert_array_equal(stormy.user_factors_, calm.user_factors_)
    np.testing.assert_array_equal(stormy.item_biases_, calm.item_biases_)


@pytest.mark.slow
@pytest.mark.parametrize(("estimator", "blocks"), [
    (dmf.ALS, {"n_blocks": 4}), (dmf.ALS, {"n_blocks": 4, "exchange": "routed"}), (dmf.SGD, {"grid": 4})])
def test_a_worker_lost_while_the_seen_items_are_gathered_gives_the_same_model(killable, estimator, blocks):
    """The training interactions are gathered in the background from epoch 1 on; a worker is
    killed as that gather starts (whether it finished first depends on timing: the gather's
    own watch for lost workers is tested directly below). The fit recovers and gives the same
    model, seen items included (such a gather once hung a nightly run)."""
    ratings = random_ratings(300, 120, 0.1, seed=9)
    params = {"rank": 4, "max_iter": 4, "seed": 2, **blocks}
    cluster, client = killable
    calm = estimator(**params).fit(ratings, client=client)
    killer = _KillAt(cluster, "epoch 1 ")
    logging.getLogger("dmf").addHandler(killer)
    try:
        stormy = estimator(**params).fit(ratings, client=client)
    finally:
        logging.getLogger("dmf").removeHandler(killer)
    assert killer.killed
    np.testing.assert_array_equal(stormy.user_factors_, calm.user_factors_)
    np.testing.assert_array_equal(stormy.item_factors_, calm.item_factors_)
    model = stormy.model_  # its seen items are exactly the training pairs
    rows = model.user_ids.index_of(ratings["user"])
    columns = model.item_ids.index_of(ratings["item"])
    seen_rows = np.repeat(np.arange(len(model.user_ids)), np.diff(model.seen.indptr))
    assert sorted(zip(seen_rows.tolist(), model.seen.items.tolist())) == sorted(zip(rows.tolist(), columns.tolist()))


@pytest.mark.slow
def test_a_gather_whose_worker_left_fails_instead_of_waiting_forever(killable):
    from dmf.engine.placement import Gathering

    cluster, client = killable
    survivor = cluster.worker_addresses()[1]
    release = distributed.Event("dmf-test-release", client=client)
    stuck = client.submit(release.wait, 120, workers=[survivor], pure=False)
    gathering = Gathering(client, [stuck], set(client.nthreads()))
    with pytest.raises(TimeoutError):  # nothing lost: it keeps waiting
        gathering.job.result(timeout=1.0)
    cluster.kill_worker(0)
    started = time.monotonic()
    with pytest.raises(concurrent.futures.CancelledError, match="a worker left while gathering 1 results"):
        gathering.result(grace=1.0)
    assert time.monotonic() - started < 10
    gathering.job.exception(timeout=10)  # the background thread is free again
    assert stuck.status == "cancelled"
    release.set()
    # without a lost worker, a gather that takes a while is simply waited for
    slow = client.submit(time.sleep, 1.5, pure=False)
    assert Gathering(client, [slow], set(client.nthreads())).result(poll=0.1, grace=0.1) == [None]


# -- 9. schema drift in a growing snapshot -----------------------------------------------------
def test_a_snapshot_file_with_another_schema_is_named(tmp_path):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [4.0, 3.0], "timestamp": [1, 2]}).to_parquet(
        snapshot / "day-1.parquet")
    pd.DataFrame({"user": [3], "item": [1], "rating": [5.0]}).to_parquet(snapshot / "day-2.parquet")
    with pytest.raises(ValueError, match=r"ratings file day-2.parquet has no column 'timestamp', which 1 other"):
        dmf.read_ratings(snapshot)
    pd.DataFrame({"user": ["u3"], "item": [1], "rating": [5.0], "timestamp": [3]}).to_parquet(
        snapshot / "day-2.parquet")
    with pytest.raises(ValueError, match=r"column 'user' holds string values in ratings file day-2.parquet but "
                                         r"integer values in day-1.parquet"):
        dmf.read_ratings(snapshot)


# -- 10. the lock never follows a symbolic link; the cron wrapper reads its env file as data ---
def test_a_symlinked_lock_is_refused_and_its_target_untouched(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    home = tmp_path / "home"
    home.mkdir()
    (home / "nightly.lock").symlink_to(precious)
    with pytest.raises(RunLocked, match="is a symbolic link; refusing to follow it"):
        with exclusive_lock(home / "nightly.lock"):
            pass
    assert precious.read_text() == "keep me"


def test_the_cron_wrapper_runs_nothing_from_its_environment_file(tmp_path):
    marker = tmp_path / "ran"
    env_file = tmp_path / "nightly.env"
    env_file.write_text(f'DMF_SCHEDULER=tcp://127.0.0.1:1\nX=$(touch {marker})\n# comment\nY="a b"\n')
    done = subprocess.run(["bash", str(REPO_ROOT / "cluster" / "cron" / "dmf-nightly-run")],
                          env={**os.environ, "DMF_NIGHTLY_ENV": str(env_file), "DMF_PYTHON": "/bin/echo"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    assert "--scheduler tcp://127.0.0.1:1" in done.stderr


# -- 11. smaller failure modes -----------------------------------------------------------------
def test_pruning_a_symlinked_version_removes_the_link_only(tmp_path):
    home = tmp_path / "home"
    elsewhere = tmp_path / "elsewhere-v1"
    elsewhere.mkdir()
    (elsewhere / "summary.json").write_text("{}")
    (home / "models").mkdir(parents=True)
    (home / "models" / "v1").symlink_to(elsewhere)
    (home / "models" / "v2").mkdir()
    switch_current(home, "v2")
    assert prune_versions(home, keep=1) == ["v1"]
    assert elsewhere.exists() and not (home / "models" / "v1").exists()


def test_a_failed_run_is_recorded_in_last_run(client, tmp_path):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [4.0, np.nan]}).to_parquet(snapshot / "bad.parquet")
    home = tmp_path / "home"
    with pytest.raises(ValueError, match="has NaN"):
        run_nightly(NightlyConfig(snapshot=snapshot, home=home, params={"rank": 2, "max_iter": 1}), client)
    last = json.loads((home / "last-run.json").read_text())
    assert last["status"] == "failed" and "column 'rating' has NaN" in last["error"]


def test_a_version_that_never_became_current_is_removed_not_kept(client, ratings, tmp_path):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    ratings.to_parquet(snapshot / "part-0.parquet")
    home = tmp_path / "home"
    config = NightlyConfig(snapshot=snapshot, home=home, params={"rank": 2, "max_iter": 1}, keep=1)
    assert run_nightly(config, client)["version"] == "v1"
    (home / "models" / "v2").mkdir()  # a run killed after publishing v2, before the switch
    (home / "models" / "v2" / "half.parquet").write_text("")
    config.force = True
    report = run_nightly(config, client)
    assert report["version"] == "v2" and os.readlink(home / "models" / "current") == "v2"
    assert sorted(p.name for p in (home / "models").iterdir()) == ["current", "v2"]
    assert dmf.load(home / "models" / "v2" / "model").n_ratings_ > 0


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_overwriting_a_file_or_symlink_leaves_nothing_aside(tmp_path, kind):
    target = tmp_path / "output"
    if kind == "file":
        target.write_text("old")
    else:
        (tmp_path / "target-dir").mkdir()
        target.symlink_to(tmp_path / "target-dir")
    with atomic_directory(target, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert (target / "new.txt").read_text() == "new" and not target.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_second_nightly_is_refused_before_it_starts_a_cluster(tmp_path, ratings):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    ratings.to_parquet(snapshot / "part-0.parquet")
    home = tmp_path / "home"
    with exclusive_lock(home / "nightly.lock"):
        done = subprocess.run([sys.executable, str(REPO_ROOT / "pipelines" / "nightly.py"), "--snapshot", str(snapshot),
                               "--home", str(home)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "another nightly run is active" in done.stderr
    assert "scheduler" not in done.stdout  # no cluster was started (it would print its address)


def test_prepare_resolves_a_relative_output_for_an_external_cluster(tmp_path):
    with SubprocessCluster(n_workers=1) as cluster:
        done = subprocess.run([sys.executable, str(REPO_ROOT / "pipelines" / "prepare.py"), "out", "--synthetic",
                               "ml-100k", "--scheduler", cluster.address], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(pd.read_parquet(tmp_path / "out" / "ratings")) > 90_000


def test_integer_ids_in_an_object_column_stay_integers(client, ratings):
    as_objects = ratings.astype({"user": object})
    model = dmf.ALS(rank=3, max_iter=2).fit(as_objects)
    assert model.user_ids_.dtype.kind == "i"
    assert dmf.rmse(model, ratings).n_fallback == 0
    user = np.array([model.user_ids_[0]], dtype=object)
    assert model.recommend(3, users=user).compute()["score"].tolist() == \
        model.recommend(3, users=[int(model.user_ids_[0])]).compute()["score"].tolist()


def test_snapshot_files_that_read_alike_are_accepted(tmp_path):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [4, 3], "timestamp": [1, 2]}).to_parquet(
        snapshot / "a.parquet")
    pd.DataFrame({"user": [3], "item": [1], "rating": [4.5], "timestamp": [3]}).to_parquet(snapshot / "b.parquet")
    assert len(dmf.read_ratings(snapshot).compute()) == 3


def test_a_checksum_removed_from_the_manifest_is_refused(client, ratings, tmp_path):
    dmf.ALS(rank=2, max_iter=1).fit(ratings).save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    del manifest["files"]["items.parquet"]
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="lists no checksum for items.parquet"):
        dmf.load(tmp_path / "m")
    manifest["files"] = None
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="is damaged"):
        dmf.load(tmp_path / "m")


def test_recommend_for_unknown_users_follows_the_unknown_policy(client, ratings):
    model = dmf.ImplicitALS(rank=2, max_iter=1, unknown="drop").fit(ratings)
    assert len(model.recommend(3, users=[10**6]).compute()) == 0
    assert len(model.recommend(3, users=[10**6, int(model.user_ids_[0])]).compute()) == 3


def test_an_update_folds_in_new_items_and_the_new_users_who_rated_them(client, ratings, tmp_path):
    from dmf.pipeline.update import run_update

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    ratings.to_parquet(snapshot / "part-0.parquet")
    home = tmp_path / "home"
    run_nightly(NightlyConfig(snapshot=snapshot, home=home, params={"rank": 2, "max_iter": 2}), client)
    known_users = np.sort(ratings["user"].unique())[:5]
    fresh = pd.DataFrame({"user": [90_001] * 6 + list(known_users),
                          "item": [70_001] * 6 + [70_001] * 5, "rating": [4.0] * 11})
    fresh.loc[1:5, "item"] = np.sort(ratings["item"].unique())[:5]  # the new user also rates known items
    fresh.to_parquet(snapshot / "part-1.parquet")
    report = run_update(NightlyConfig(snapshot=snapshot, home=home, tolerance=10.0, test_fraction=0.5), client)
    assert report["status"] == "published" and report["folded"] == {"users": 6, "items": 1}
    assert report["settings"]["test_fraction"] == 0.1  # the published version's split, not this run's
    model = dmf.load(home / "models" / "current" / "model")
    assert 90_001 in set(model.user_ids_) and 70_001 in set(model.item_ids_)
