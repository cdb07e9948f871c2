"""prepare_dataset and pipelines/prepare.py: validated canonical Parquet, splits, summary, atomic output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT
from distributed import get_task_stream

import dmf
from dmf.columns import ITEM, RATING, TIMESTAMP, USER
from dmf.datasets import prepare_dataset

PIPELINE = REPO_ROOT / "pipelines" / "prepare.py"


def write_csv(path: Path, rows: list[str], newline: str = "\n") -> Path:
    path.write_bytes("".join(row + newline for row in ["userId,movieId,rating,timestamp", *rows]).encode())
    return path


def only_output(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_ml100k_random_split_round_trips(client, ml100k, tmp_path):
    output = tmp_path / "ml100k"
    summary = prepare_dataset(output, ml100k, test_fraction=0.1, seed=3)
    assert only_output(output) == ["items.parquet", "ratings", "summary.json", "test", "train", "users.parquet"]
    assert summary == json.loads((output / "summary.json").read_text())
    rows = summary["rows"]
    assert rows["input"] == rows["ratings"] == 100_000 and rows["duplicates_dropped"] == 0
    assert rows["train"] + rows["test"] == 100_000 and 9_000 < rows["test"] < 11_000
    assert (summary["users"], summary["items"]) == (943, 1_682)
    assert summary["versions"]["dmf"] == dmf.__version__ and summary["parameters"]["rating_scale"] == [1.0, 5.0]
    train = dmf.read_ratings(output / "train").compute()
    test = dmf.read_ratings(output / "test").compute()
    assert (len(train), len(test)) == (rows["train"], rows["test"])
    assert list(train.columns) == [USER, ITEM, RATING, TIMESTAMP] and train[RATING].dtype == "float32"
    assert pd.merge(train, test, on=[USER, ITEM]).empty
    for path in output.rglob("*.parquet"):  # no pickled objects anywhere in the output
        metadata = pq.read_schema(path).metadata or {}
        assert not any(b"pickle" in value for value in metadata.values())
    items = pd.read_parquet(output / "items.parquet").set_index(ITEM)
    assert items.loc[1, "title"] == "Toy Story (1995)" and list(items.loc[1, "genres"]) == [
        "Animation", "Children's", "Comedy"]
    again = prepare_dataset(tmp_path / "again", ml100k, test_fraction=0.1, seed=3)
    assert again["rows"] == summary["rows"]  # same seed, same split


def test_grouplens_ua_split_uses_the_files(client, ml100k, tmp_path):
    summary = prepare_dataset(tmp_path / "ua", ml100k, split="grouplens", grouplens="ua")
    assert summary["rows"] == {"input": 100_000, "duplicates_dropped": 0, "ratings": 100_000, "train": 90_570,
                               "test": 9_430}


def test_csv_duplicates_keep_latest_and_are_counted(client, tmp_path):
    source = write_csv(tmp_path / "ratings.csv", ["1,10,4.0,100", "1,10,2.5,300", "1,11,3.0,50", "2,10,5.0,10",
                                                  "2,10,1.0,5", "2,12,0.5,7", "3,10,4.5,70"], newline="\r\n")
    summary = prepare_dataset(tmp_path / "out", source, split="temporal", test_count=1,
                              columns={"user": "userId", "item": "movieId"})
    assert summary["rows"]["input"] == 7 and summary["rows"]["duplicates_dropped"] == 2
    ratings = pd.read_parquet(tmp_path / "out" / "ratings").set_index([USER, ITEM]).sort_index()
    assert ratings.loc[(1, 10), RATING] == 2.5 and ratings.loc[(2, 10), RATING] == 5.0
    test = pd.read_parquet(tmp_path / "out" / "test").sort_values(USER)
    assert test[[USER, ITEM]].values.tolist() == [[1, 10], [2, 10]]  # latest of each user; user 3 keeps its only one


@pytest.mark.parametrize("bad_row, message", [
    ("4,10,,100", r"NaN or missing ratings: 1 of 4 rows"),
    ("4,10,good,100", r"not numbers: 1 of 4 rows.*good"),
    ("4,10,7.5,100", r"1 of 4 ratings outside the scale \[0.5, 5\].*7.5"),
    (",10,3.0,100", r"column 'user' has missing ids: 1 of 4 rows"),
])
def test_invalid_ratings_raise_and_write_nothing(client, tmp_path, bad_row, message):
    source = write_csv(tmp_path / "ratings.csv", ["1,10,4.0,100", "2,10,3.0,100", bad_row, "3,11,1.0,100"])
    output = tmp_path / "prepared" / "out"
    with pytest.raises(ValueError, match=message):
        prepare_dataset(output, source, columns={"user": "userId", "item": "movieId"})
    assert not output.exists() and (not output.parent.exists() or only_output(output.parent) == [])


def test_parquet_source_and_existing_output(client, tmp_path):
    frame = pd.DataFrame({USER: [1, 1, 2, 3], ITEM: [5, 6, 5, 7], RATING: [1.0, 2.0, 3.0, 4.0], TIMESTAMP: [1, 2, 3, 4]})
    frame.to_parquet(tmp_path / "source.parquet")
    output = tmp_path / "out"
    first = prepare_dataset(output, tmp_path / "source.parquet", test_fraction=0.5, seed=1)
    assert first["source"]["kind"] == "parquet" and first["rows"]["ratings"] == 4
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_dataset(output, tmp_path / "source.parquet")
    assert prepare_dataset(output, tmp_path / "source.parquet", overwrite=True)["rows"]["ratings"] == 4


def test_synthetic_source_is_written_by_the_workers(client, tmp_path):
    with get_task_stream(client) as stream:
        summary = prepare_dataset(tmp_path / "synthetic", synthetic="ml-100k", seed=2, npartitions=3,
                                  split="temporal", test_fraction=0.1)
    assert summary["rows"]["ratings"] == 100_000 and summary["users"] == 943
    assert len(list((tmp_path / "synthetic" / "train").glob("part.*.parquet"))) == 3
    assert summary["source"]["preset"] == "ml-100k" and summary["parameters"]["validated"] is False
    # the ratings were generated and written by tasks on the cluster's workers, not on the client
    ran_on = {task["worker"] for task in stream.data}
    assert ran_on and ran_on <= set(client.scheduler_info()["workers"])
    assert any("to_parquet" in str(task["key"]) or "write" in str(task["key"]) for task in stream.data)
    test = pd.read_parquet(tmp_path / "synthetic" / "test")
    assert 9_000 < len(test) < 11_000


def run_pipeline(*args: str, scheduler: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(PIPELINE), *args] + (["--scheduler", scheduler] if scheduler else [])
    return subprocess.run(command, capture_output=True, text=True, timeout=240)


def test_cli_help_is_true_to_the_code():
    done = run_pipeline("--help")
    assert done.returncode == 0
    for option in ("--input", "--synthetic", "--split", "--test-count", "--grouplens-split", "--rating-scale",
                   "--scheduler", "--config", "--overwrite", "--data-home"):
        assert option in done.stdout


@pytest.mark.slow
def test_cli_success_and_one_line_failure(cluster, tmp_path):
    done = run_pipeline(str(tmp_path / "out"), "--synthetic", "ml-100k", "--split", "temporal", "--test-count", "2",
                        scheduler=cluster.scheduler_address)
    assert done.returncode == 0, done.stderr
    assert "dashboard" in done.stdout
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["rows"]["test"] == 943 * 2
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["rows"]["test"] == 943 * 2

    source = write_csv(tmp_path / "bad.csv", ["1,10,4.0,100", "2,10,9.0,100"])
    failed = run_pipeline(str(tmp_path / "bad"), "--input", str(source), "--user-column", "userId",
                          "--item-column", "movieId", scheduler=cluster.scheduler_address)
    assert failed.returncode == 1
    last_line = failed.stderr.strip().splitlines()[-1]
    assert last_line.startswith("prepare.py: error: ValueError: column 'rating' has 1 of 2 ratings outside")
    assert not (tmp_path / "bad").exists()
