"""The nightly pipeline as a subprocess against real `dask scheduler` / `dask worker`
processes on 127.0.0.1 (plain TCP and mutual TLS), including the faults of a night."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from cluster_harness import SubprocessCluster
from conftest import REPO_ROOT
from helpers import random_ratings

import dmf

NIGHTLY = REPO_ROOT / "pipelines" / "nightly.py"
MODEL_FLAGS = ["--rank", "4", "--max-iter", "4", "--k", "5", "--tolerance", "0.01"]


def snapshot_with(directory, frame: pd.DataFrame, name: str):
    directory.mkdir(exist_ok=True)
    frame.to_parquet(directory / name)
    return directory


class Nightly:
    """A running nightly.py whose stdout and stderr lines are read as they come."""

    def __init__(self, cluster: SubprocessCluster, snapshot, home, *extra: str):
        command = [sys.executable, str(NIGHTLY), *cluster.client_args(), "--snapshot", str(snapshot),
                   "--home", str(home), *MODEL_FLAGS, *extra]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        for stream in (self.process.stdout, self.process.stderr):
            threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} never appeared; output:\n{''.join(self.output)[-3000:]}")

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        code = self.process.wait(timeout=timeout)
        time.sleep(0.2)
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return code, "".join(self.output)


def run_nightly(cluster, snapshot, home, *extra) -> tuple[int, str]:
    return Nightly(cluster, snapshot, home, *extra).finish()


def current(home) -> str:
    return os.readlink(home / "models" / "current")


def assert_complete_version(home, version: str, n_users: int) -> dict:
    directory = home / "models" / version
    model = dmf.ALS.load(directory / "model")
    recs = pd.read_parquet(directory / "recommendations")
    assert recs["user"].nunique() == n_users == len(model.user_ids_)
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["status"] == "published" and summary["version"] == version
    assert summary["versions"]["dmf"] == dmf.__version__ and summary["settings"]["k"] == 5
    return summary


def assert_published_model_never_recommends_training_items(home, ratings: pd.DataFrame) -> None:
    """The published model, loaded on its own with no exclude argument, serves returning users
    without anything they rated in the snapshot (training pairs and the nightly's held-out
    pairs alike), and so do the published recommendations."""
    model = dmf.load(home / "models" / "current" / "model")
    train = ratings  # every rated pair, held out or not
    published = pd.read_parquet(home / "models" / "current" / "recommendations")
    assert not set(zip(published["user"], published["item"])) & set(zip(ratings["user"], ratings["item"]))
    including_seen = 0
    for user in np.sort(train["user"].unique())[:25]:
        rated = set(train.loc[train["user"] == user, "item"])
        recommended = model.recommend(10, users=[user]).compute()
        assert len(recommended) == 10 and not set(recommended["item"]) & rated, user
        including_seen += bool(set(model.recommend(10, users=[user], exclude_seen=False).compute()["item"]) & rated)
    assert including_seen > 0  # without the exclusion, training items do come back


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_nightly_publishes_warm_starts_and_gates(tmp_path, tls):
    ratings = random_ratings(150, 80, 0.15, seed=41)
    first, later = ratings.iloc[: len(ratings) * 3 // 4], ratings.iloc[len(ratings) * 3 // 4 :]
    snapshot = snapshot_with(tmp_path / "snapshot", first, "part-0.parquet")
    home = tmp_path / "home"
    with SubprocessCluster(n_workers=2, tls=tls) as cluster:
        assert cluster.address.startswith("tls://" if tls else "tcp://")
        code, output = run_nightly(cluster, snapshot, home)
        assert code == 0, output
        assert current(home) == "v1"
        summary = assert_complete_version(home, "v1", first["user"].nunique())
        assert summary["warm_start"] is None and summary["rows"]["ratings"] == len(first)
        assert 0 < summary["metrics"]["rmse"] < 1.0 and summary["metrics"]["ranking"]["users"] > 0

        snapshot_with(snapshot, later, "part-1.parquet")  # new ratings arrive
        code, output = run_nightly(cluster, snapshot, home)
        assert code == 0, output
        assert current(home) == "v2"
        summary = assert_complete_version(home, "v2", ratings["user"].nunique())
        assert summary["warm_start"].endswith("v1") and summary["rows"]["ratings"] == len(ratings)
        assert_published_model_never_recommends_training_items(home, ratings)

        # Idempotent: the same snapshot and settings again publish nothing new.
        code, output = run_nightly(cluster, snapshot, home)
        assert code == 0 and "unchanged" in output, output
        assert current(home) == "v2" and not (home / "models" / "v3").exists()
        assert json.loads((home / "last-run.json").read_text())["status"] == "unchanged"

        code, output = run_nightly(cluster, snapshot, home, "--rank", "1", "--reg", "1000", "--damping", "1000")
        assert code == 3, output
        assert "quality gate" in output and "v2 stays current" in output
        assert current(home) == "v2"
        assert sorted(p.name for p in (home / "models").iterdir()) == ["current", "v1", "v2"]
        assert json.loads((home / "last-run.json").read_text())["status"] == "refused"


@pytest.mark.slow
def test_killed_worker_during_fit_gives_the_same_model(tmp_path):
    ratings = random_ratings(1500, 600, 0.05, seed=42)
    snapshot = snapshot_with(tmp_path / "snapshot", ratings, "part-0.parquet")
    flags = ["--max-iter", "12", "--rank", "8", "--n-blocks", "4"]
    with SubprocessCluster(n_workers=3) as cluster:
        code, output = run_nightly(cluster, snapshot, tmp_path / "calm", *flags)
        assert code == 0, output
        run = Nightly(cluster, snapshot, tmp_path / "stormy", *flags)
        run.wait_for("epoch 2 ")
        cluster.kill_worker(0)
        seen_before_kill = len(run.output)
        code, output = run.finish()
    assert code == 0, output
    # The fit went on after the kill through dmf's recovery: the lost factor tables hang
    # under scattered roots the scheduler cannot recompute, so dmf rebuilt the blocks and
    # redid the epochs from its checkpoint (its log line), then finished.
    after_kill = "".join(run.output[seen_before_kill:])
    assert "lost data on a failed worker" in after_kill and "resuming from epoch 0" in after_kill, after_kill[-3000:]
    assert "epoch 12 " in after_kill
    calm = dmf.ALS.load(tmp_path / "calm" / "models" / "v1" / "model")
    stormy = dmf.ALS.load(tmp_path / "stormy" / "models" / "v1" / "model")
    np.testing.assert_array_equal(stormy.user_factors_, calm.user_factors_)
    np.testing.assert_array_equal(stormy.item_factors_, calm.item_factors_)


@pytest.mark.slow
def test_killed_nightly_while_publishing_keeps_the_previous_version(tmp_path):
    ratings = random_ratings(2000, 800, 0.05, seed=43)
    snapshot = snapshot_with(tmp_path / "snapshot", ratings, "part-0.parquet")
    home = tmp_path / "home"
    slow = ["--max-iter", "100"]  # long enough (~4 s of fitting) for a second run to start while this one works
    with SubprocessCluster(n_workers=2) as cluster:
        code, output = run_nightly(cluster, snapshot, home)
        assert code == 0, output

        run = Nightly(cluster, snapshot, home, *slow)
        run.wait_for("nightly.lock")
        # A second run while the first one works is refused at once with a clear message.
        code, output = run_nightly(cluster, snapshot, home)
        assert code == 1 and "another nightly run is active" in output
        # Kill it as soon as its staging directory for v2 appears, i.e. while it publishes.
        staging = []
        deadline = time.monotonic() + 120
        while not staging and time.monotonic() < deadline and run.process.poll() is None:
            staging = [p for p in (home / "models").iterdir() if p.name.startswith(".v2.tmp-")]
            time.sleep(0.001)
        run.process.send_signal(signal.SIGKILL)
        code, output = run.finish()
        assert staging, f"the run ended before it started publishing:\n{output[-2000:]}"

        assert current(home) == "v1"
        assert_complete_version(home, "v1", ratings["user"].nunique())
        assert not (home / "models" / "v2").exists()

        code, output = run_nightly(cluster, snapshot, home, *slow)  # the next night recovers
        assert code == 0, output
        assert current(home) == "v2"
        assert not [p.name for p in (home / "models").iterdir() if p.name.startswith(".")]


UPDATE = REPO_ROOT / "pipelines" / "update.py"


def start_update(cluster, snapshot, home) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(UPDATE), *cluster.client_args(), "--snapshot", str(snapshot),
                             "--home", str(home), "--k", "5", "--tolerance", "1"],  # 30 users: a noisy gate
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
def test_incremental_update_folds_in_new_users_and_survives_a_kill_while_publishing(tmp_path):
    ratings = random_ratings(300, 120, 0.1, seed=44)
    users = np.sort(ratings["user"].unique())
    old, new, later = (ratings[ratings["user"].isin(users[:250])], ratings[ratings["user"].isin(users[250:280])],
                       ratings[ratings["user"].isin(users[280:])])
    snapshot = snapshot_with(tmp_path / "snapshot", old, "part-0.parquet")
    home = tmp_path / "home"
    with SubprocessCluster(n_workers=2) as cluster:
        code, output = run_nightly(cluster, snapshot, home)
        assert code == 0, output
        done = start_update(cluster, snapshot, home).communicate(timeout=300)
        assert "unchanged: no snapshot file is new since v1" in done[0], done
        snapshot_with(snapshot, new, "part-1.parquet")
        started = time.monotonic()
        update = start_update(cluster, snapshot, home)
        stdout, stderr = update.communicate(timeout=300)
        seconds = time.monotonic() - started
        assert update.returncode == 0, stderr
        assert "published v2: folded in 30 users" in stdout
        assert current(home) == "v2"
        summary = json.loads((home / "models" / "v2" / "summary.json").read_text())
        assert summary["kind"] == "update" and summary["base"] == "v1" and summary["new_files"] == ["part-1.parquet"]
        model = dmf.load(home / "models" / "current" / "model")
        assert set(new["user"]) <= set(model.user_ids_) and model.rank == 4
        top = model.recommend(5, users=list(new["user"].unique())).compute()
        assert len(top) == 5 * 30 and not set(zip(top["user"], top["item"])) & set(zip(new["user"], new["item"]))
        published = pd.read_parquet(home / "models" / "v2" / "recommendations")
        assert set(new["user"]) <= set(published["user"])

        # killed while it publishes v3: v2 stays current and complete; the next update recovers
        snapshot_with(snapshot, later, "part-2.parquet")
        update = start_update(cluster, snapshot, home)
        staging, deadline = [], time.monotonic() + 120
        while not staging and time.monotonic() < deadline and update.poll() is None:
            staging = [p for p in (home / "models").iterdir() if p.name.startswith(".v3.tmp-")]
            time.sleep(0.001)
        update.send_signal(signal.SIGKILL)
        update.communicate(timeout=60)
        assert staging, "the update ended before it started publishing"
        assert current(home) == "v2" and not (home / "models" / "v3").exists()
        assert set(new["user"]) <= set(dmf.load(home / "models" / "current" / "model").user_ids_)
        update = start_update(cluster, snapshot, home)
        stdout, stderr = update.communicate(timeout=300)
        assert update.returncode == 0 and "published v3" in stdout, stderr
        assert not [p.name for p in (home / "models").iterdir() if p.name.startswith(".")]
    print(f"\nupdate of 30 new users: {seconds:.1f} s including interpreter start and cluster connection")


@pytest.mark.slow
def test_tune_on_real_processes_writes_a_config_the_nightly_accepts(tmp_path):
    ratings = random_ratings(80, 50, 0.25, seed=43)
    snapshot = snapshot_with(tmp_path / "snapshot", ratings, "part-0.parquet")
    space = tmp_path / "space.toml"
    space.write_text("[grid]\nrank = [2, 4]\nreg = [0.05, 0.2]\n")
    with SubprocessCluster(n_workers=2) as cluster:
        tuned = subprocess.run([sys.executable, str(REPO_ROOT / "pipelines" / "tune.py"), *cluster.client_args(),
                                "--ratings", str(snapshot), "--space", str(space), "--output", str(tmp_path / "tuned"),
                                "--folds", "2", "--max-iter", "2"], capture_output=True, text=True, timeout=300)
        assert tuned.returncode == 0, tuned.stderr
        assert "best of 4 settings by rmse" in tuned.stdout
        results = pd.read_parquet(tmp_path / "tuned" / "results.parquet")
        assert len(results) == 8 and {"rank", "reg", "fold", "validation_rmse", "seconds"} <= set(results.columns)
        best = (tmp_path / "tuned" / "best.toml").read_text()
        assert 'estimator = "als"' in best and "max_iter = 2" in best
        nightly = subprocess.run([sys.executable, str(NIGHTLY), *cluster.client_args(), "--config",
                                  str(tmp_path / "tuned" / "best.toml"), "--snapshot", str(snapshot), "--home",
                                  str(tmp_path / "home")], capture_output=True, text=True, timeout=300)
        assert nightly.returncode == 0, nightly.stderr
    published = dmf.load(tmp_path / "home" / "models" / "current" / "model")
    summary = pd.read_csv(tmp_path / "tuned" / "summary.csv")
    assert (published.rank, published.reg) == (summary.loc[0, "rank"], summary.loc[0, "reg"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid]\nrnak = [2]\n")
    refused = subprocess.run([sys.executable, str(REPO_ROOT / "pipelines" / "tune.py"), "--ratings", str(snapshot),
                              "--space", str(bad), "--output", str(tmp_path / "never")], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode != 0 and "ALS has no parameter rnak" in refused.stderr
    assert not (tmp_path / "never").exists()
