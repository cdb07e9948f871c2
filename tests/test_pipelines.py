"""Pipeline scripts as subprocesses against the session cluster's scheduler."""

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT
from helpers import random_ratings

import dmf
import dmf.datasets
from dmf.model.params import param_specs
from dmf.pipeline.home import exclusive_lock

PIPELINES = REPO_ROOT / "pipelines"


def run_pipeline(name: str, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PIPELINES / name), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def ratings_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ratings")
    frame = random_ratings(60, 40, 0.3, seed=21)
    frame.iloc[: len(frame) // 2].to_parquet(directory / "part-0.parquet")
    frame.iloc[len(frame) // 2 :].to_parquet(directory / "part-1.parquet")
    return directory


def test_train_evaluate_recommend_chain(cluster, ratings_dir, tmp_path):
    scheduler = cluster.scheduler_address
    config = tmp_path / "train.toml"
    config.write_text('rank = 3\nmax-iter = 4\nreg = 0.2\nsolver = "cholesky"\n')
    trained = run_pipeline("train.py", "--scheduler", scheduler, "--config", config, "--max-iter", 2,
                           "--ratings", ratings_dir, "--output", tmp_path / "model")
    assert trained.returncode == 0, trained.stderr
    assert f"scheduler {scheduler}" in trained.stdout
    model = dmf.ALS.load(tmp_path / "model")
    assert (model.rank, model.max_iter, model.reg, model.solver) == (3, 2, 0.2, "cholesky")  # config, then flags
    summary = json.loads((tmp_path / "model.summary.json").read_text())
    assert summary["rows"]["ratings"] == model.n_ratings_ and len(summary["history"]) == 2
    assert summary["versions"]["dmf"] == dmf.__version__
    report = (tmp_path / "model.report.html").read_text()  # charts drawn from the summary's numbers
    assert report.count("<polyline") == 2 and "train_rmse per epoch" in report and "seconds per stage" in report
    assert summary["histograms"]["pairs"] == model.n_ratings_ and "ratings (training ratings" in report
    assert "predictions for the same pairs" in report

    evaluated = run_pipeline("evaluate.py", "--scheduler", scheduler, "--model", tmp_path / "model",
                             "--test", ratings_dir, "--output", tmp_path / "metrics.json")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert metrics["rmse"] == pytest.approx(model.history_[-1]["train_rmse"], rel=1e-3)

    recommended = run_pipeline("recommend.py", "--scheduler", scheduler, "--model", tmp_path / "model",
                               "--exclude", ratings_dir, "--k", 3, "--output", tmp_path / "recs",
                               "--similar-items", tmp_path / "similar")
    assert recommended.returncode == 0, recommended.stderr
    # not a terminal: one line for the stage, no bar
    assert len(re.findall(r"top-k: \d+ partitions in [\d.]+ s", recommended.stderr)) == 1, recommended.stderr
    assert "\r" not in recommended.stderr and "\r" not in trained.stderr
    recs = pd.read_parquet(tmp_path / "recs")
    reach = json.loads((tmp_path / "recs.summary.json").read_text())["top_k"]
    assert reach["recommended_items"] == recs["item"].nunique() and reach["catalog_items"] == len(model.item_ids_)
    assert "catalog coverage" in (tmp_path / "recs.report.html").read_text()
    assert set(recs["user"]) == set(model.user_ids_)
    assert recs.groupby("user").size().max() == 3
    similar = pd.read_parquet(tmp_path / "similar")
    assert len(similar) == 3 * len(model.item_ids_) and set(similar["item"]) == set(model.item_ids_)
    expected = model.similar_items([model.item_ids_[0]], k=3)
    assert similar[similar["item"] == model.item_ids_[0]]["similar"].tolist() == expected["similar"].tolist()


def test_bad_input_fails_with_one_line_and_writes_nothing(cluster, tmp_path):
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [4.0, np.nan]}).to_parquet(bad)
    result = run_pipeline("train.py", "--scheduler", cluster.scheduler_address, "--ratings", bad,
                          "--output", tmp_path / "model")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("train.py: error: ValueError: invalid ratings: column 'rating' has NaN")
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]


def test_unknown_config_key_is_refused(tmp_path, ratings_dir):
    config = tmp_path / "bad.toml"
    config.write_text("rnak = 3\n")
    result = run_pipeline("train.py", "--config", config, "--ratings", ratings_dir, "--output", tmp_path / "m")
    assert result.returncode == 2 and "unknown option 'rnak'" in result.stderr


def test_required_options_may_come_from_the_config(tmp_path, ratings_dir):
    config = tmp_path / "nightly.toml"
    config.write_text(f'snapshot = "{ratings_dir}"\nhome = "{tmp_path / "home"}"\nmax-iter = 1\nrank = 2\n')
    result = run_pipeline("nightly.py", "--config", config)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "home" / "models" / "current").is_symlink()
    result = run_pipeline("nightly.py", "--home", tmp_path / "elsewhere")
    assert result.returncode == 2 and "--snapshot" in result.stderr


def test_second_nightly_exits_while_one_holds_the_lock(ratings_dir, tmp_path):
    home = tmp_path / "home"
    with exclusive_lock(home / "nightly.lock"):
        result = run_pipeline("nightly.py", "--snapshot", ratings_dir, "--home", home)
    assert result.returncode == 1
    assert "another nightly run is active" in result.stderr
    assert not (home / "models").exists()


def test_help_describes_every_pipeline():
    """Each script's own options, and every ALS parameter (derived from its spec) where models are trained."""
    model_flags = ["--" + spec.name.replace("_", "-") for spec in param_specs(dmf.ALS)]
    own = {"train.py": ["--ratings", "--output", "--warm-start", "--duplicates", *model_flags, "--no-biases"],
           "nightly.py": ["--snapshot", "--home", "--split-seed", "--tolerance", "--force", *model_flags, "--no-clip"],
           "evaluate.py": ["--model", "--test", "--relevance-threshold", "--unknown"],
           "recommend.py": ["--model", "--output", "--users", "--exclude", "--include-seen"]}
    for name, flags in own.items():
        result = run_pipeline(name, "--help")
        assert result.returncode == 0
        assert [flag for flag in flags if not re.search(rf"{flag}\b", result.stdout)] == [], name


@pytest.mark.parametrize("line, complaint", [
    ('force = "false"', "force = 'false' must be true or false"),
    ("rank = true", "rank = True must be an integer"),
    ('reg = "0.1"', "reg = '0.1' must be a number"),
    ('solver = "lu"', "solver = 'lu' must be one of 'cg', 'cholesky'"),
])
def test_config_values_must_have_the_option_type(tmp_path, ratings_dir, line, complaint):
    config = tmp_path / "typed.toml"
    config.write_text(f'snapshot = "{ratings_dir}"\nhome = "{tmp_path / "home"}"\n{line}\n')
    result = run_pipeline("nightly.py", "--config", config)
    assert result.returncode == 2 and complaint in result.stderr, result.stderr
    assert not (tmp_path / "home").exists()


def test_every_estimator_trains_in_the_pipelines(cluster, ratings_dir, tmp_path):
    scheduler = cluster.scheduler_address
    trained = run_pipeline("train.py", "--scheduler", scheduler, "--estimator", "nmf", "--ratings", ratings_dir,
                           "--output", tmp_path / "nmf", "--rank", 3, "--max-iter", 2)
    assert trained.returncode == 0, trained.stderr
    nmf = dmf.load(tmp_path / "nmf")
    assert type(nmf) is dmf.ALS and nmf.nonnegative and (nmf.item_factors_ >= 0).all()
    home = tmp_path / "home"
    for run in (1, 2):
        nightly = run_pipeline("nightly.py", "--scheduler", scheduler, "--estimator", "implicit", "--snapshot",
                               ratings_dir, "--home", home, "--rank", 3, "--max-iter", 2, "--threshold", 3.5,
                               "--force", "--tolerance", 1.0)
        assert nightly.returncode == 0, nightly.stderr
        assert f"published v{run}: precision@10" in nightly.stdout
    summary = json.loads((home / "models" / "v2" / "summary.json").read_text())
    assert "train_loss per epoch" in (home / "models" / "v2" / "report.html").read_text()
    assert summary["settings"]["estimator"] == "implicit" and summary["warm_start"].endswith("v1")
    assert "ndcg@k" in summary["published_metrics"]["ranking"]
    assert type(dmf.load(home / "models" / "current" / "model")) is dmf.ImplicitALS


def test_sgd_and_bpmf_train_and_svd_runs_nightly_in_the_pipelines(cluster, ratings_dir, tmp_path):
    scheduler = cluster.scheduler_address
    trained = run_pipeline("train.py", "--scheduler", scheduler, "--estimator", "sgd", "--ratings", ratings_dir,
                           "--output", tmp_path / "sgd", "--rank", 3, "--max-iter", 2, "--grid", 2)
    assert trained.returncode == 0, trained.stderr
    sgd = dmf.load(tmp_path / "sgd")
    assert type(sgd) is dmf.SGD and sgd.grid == 2 and len(sgd.history_) == 2
    trained = run_pipeline("train.py", "--scheduler", scheduler, "--estimator", "bpmf", "--ratings", ratings_dir,
                           "--output", tmp_path / "bpmf", "--rank", 3, "--n-samples", 2, "--burn-in", 1)
    assert trained.returncode == 0, trained.stderr
    bpmf = dmf.load(tmp_path / "bpmf")
    assert type(bpmf) is dmf.BPMF and bpmf.n_samples == 2 and len(bpmf.history_) == 3
    assert "saved" in trained.stdout and "after 3 epochs" in trained.stdout
    nightly = run_pipeline("nightly.py", "--scheduler", scheduler, "--estimator", "svd", "--snapshot", ratings_dir,
                           "--home", tmp_path / "home", "--rank", 3, "--n-iter", 1)
    assert nightly.returncode == 0, nightly.stderr
    assert "published v1: precision@10" in nightly.stdout  # gated on ranking, not RMSE
    summary = json.loads((tmp_path / "home" / "models" / "v1" / "summary.json").read_text())
    assert summary["settings"]["estimator"] == "svd" and "rmse" not in summary["metrics"]
    assert type(dmf.load(tmp_path / "home" / "models" / "current" / "model")) is dmf.SVD


def test_missing_paths_are_refused_before_anything_starts(tmp_path):
    result = run_pipeline("nightly.py", "--snapshot", tmp_path / "nowhere", "--home", tmp_path / "home")
    assert result.returncode == 2 and f"--snapshot {tmp_path / 'nowhere'} does not exist" in result.stderr
    assert not (tmp_path / "home").exists()
    helped = run_pipeline("train.py", "--help")
    assert "(default: None)" not in helped.stdout and "(default: 50)" in helped.stdout


def test_tls_mistakes_say_what_to_pass(tmp_path, ratings_dir):
    result = run_pipeline("train.py", "--scheduler", "tls://127.0.0.1:1", "--ratings", ratings_dir,
                          "--output", tmp_path / "m")
    assert result.returncode == 1 and "is a TLS scheduler: pass --tls-ca-file" in result.stderr
    result = run_pipeline("train.py", "--scheduler", "tcp://127.0.0.1:1", "--tls-ca-file", tmp_path / "ca.pem",
                          "--tls-cert", tmp_path / "c.pem", "--tls-key", tmp_path / "k.pem", "--ratings", ratings_dir,
                          "--output", tmp_path / "m")
    assert result.returncode == 1 and "address a TLS scheduler as tls://HOST:PORT" in result.stderr


def test_recommendations_carry_movielens_titles(cluster, ml100k, tmp_path):
    ratings = dmf.datasets.load_ratings(ml100k).compute().head(5000)
    ratings.to_parquet(tmp_path / "ratings.parquet")
    trained = run_pipeline("train.py", "--scheduler", cluster.scheduler_address, "--ratings", tmp_path / "ratings.parquet",
                           "--output", tmp_path / "model", "--rank", 2, "--max-iter", 1)
    assert trained.returncode == 0, trained.stderr
    done = run_pipeline("recommend.py", "--scheduler", cluster.scheduler_address, "--model", tmp_path / "model",
                        "--output", tmp_path / "recs", "--k", 3, "--titles", ml100k)
    assert done.returncode == 0, done.stderr
    recs = pd.read_parquet(tmp_path / "recs")
    titles = dmf.datasets.load_items(ml100k).set_index("item")["title"]
    assert recs["title"].notna().all() and (recs["title"] == titles.loc[recs["item"]].to_numpy()).all()


def test_implicit_models_in_the_pipelines_are_judged_by_ranking(cluster, ratings_dir, tmp_path):
    scheduler = cluster.scheduler_address
    trained = run_pipeline("train.py", "--scheduler", scheduler, "--estimator", "implicit", "--ratings", ratings_dir,
                           "--output", tmp_path / "model", "--rank", 2, "--max-iter", 1, "--threshold", 4)
    assert trained.returncode == 0, trained.stderr
    evaluated = run_pipeline("evaluate.py", "--scheduler", scheduler, "--model", tmp_path / "model", "--test",
                             ratings_dir, "--relevance-threshold", 4)
    assert evaluated.returncode == 0 and "RMSE" not in evaluated.stdout and "NDCG@10" in evaluated.stdout
    wrong = run_pipeline("train.py", "--scheduler", scheduler, "--ratings", ratings_dir, "--output", tmp_path / "als",
                         "--warm-start", tmp_path / "model")
    assert wrong.returncode == 1 and "holds a ImplicitALS model; this run trains ALS" in wrong.stderr
    model = dmf.load(tmp_path / "model")  # every rated pair is seen, below the threshold too
    top = model.recommend(10).compute()
    rated = pd.read_parquet(ratings_dir)
    assert not set(zip(top["user"], top["item"])) & set(zip(rated["user"], rated["item"]))


def test_report_charts_scale_the_summary_numbers(tmp_path):
    from dmf.pipeline.report import write_report

    summary = {"history": [{"epoch": e, "train_rmse": 1.0 / e, "seconds": 0.5} for e in (1, 2, 4)],
               "seconds": {"fit": 3.0, "ingest": 1.5}, "metrics": {"rmse": 0.91, "ranking": {"ndcg@k": 0.2}}}
    page = write_report(tmp_path / "report.html", "t", summary).read_text()
    first = page.split('points="')[1].split('"')[0].split()
    assert first[0] == "40.0,40.0" and first[-1] == "520.0,180.0"  # the largest value on top, the smallest below
    assert "<td>metrics rmse</td><td>0.91</td>" in page and "<td>metrics ranking ndcg@k</td><td>0.2</td>" in page
    assert 'width="340.0"' in page and 'width="170.0"' in page  # bars in proportion: 3.0 s and 1.5 s


def test_train_records_a_validation_curve(cluster, ratings_dir, tmp_path):
    trained = run_pipeline("train.py", "--scheduler", cluster.scheduler_address, "--ratings", ratings_dir,
                           "--output", tmp_path / "model", "--rank", 2, "--max-iter", 3, "--validation", ratings_dir)
    assert trained.returncode == 0, trained.stderr
    assert "validation_rmse per epoch (validation curve)" in (tmp_path / "model.report.html").read_text()
    assert len(dmf.load(tmp_path / "model").history_) == 3


def test_nightly_evaluates_on_a_prepared_test_set(cluster, ratings_dir, tmp_path):
    """--test: those pairs are held out (never trained on) and are what the metrics score; a
    published model whose held-out pairs were chosen otherwise is no baseline."""
    scheduler = cluster.scheduler_address
    ratings = pd.read_parquet(ratings_dir)
    test = ratings.sample(frac=0.2, random_state=3)
    test.to_parquet(tmp_path / "test.parquet")
    home = tmp_path / "home"
    hashed = run_pipeline("nightly.py", "--scheduler", scheduler, "--snapshot", ratings_dir, "--home", home,
                          "--rank", 3, "--max-iter", 2)  # the default: a hashed 10 % of the snapshot
    assert hashed.returncode == 0, hashed.stderr
    prepared = run_pipeline("nightly.py", "--scheduler", scheduler, "--snapshot", ratings_dir, "--home", home,
                            "--test", tmp_path / "test.parquet", "--rank", 3, "--max-iter", 2, "--tolerance", 0)
    assert prepared.returncode == 0, prepared.stderr  # v1 may have trained on these pairs: not a baseline
    assert "it may have trained on this run's test pairs" in prepared.stderr
    summary = json.loads((home / "models" / "v2" / "summary.json").read_text())
    assert summary["rows"] == {"ratings": len(ratings), "train": len(ratings) - len(test), "test": len(test)}
    assert summary["warm_start"] is None and summary["published_metrics"] is None
    model = dmf.load(home / "models" / "v2" / "model")
    assert model.n_ratings_ == len(ratings) - len(test)
    predicted = model.predict(test[["user", "item"]], client=None)
    predicted = (predicted.compute() if hasattr(predicted, "compute") else predicted).merge(test, on=["user", "item"])
    errors = predicted["prediction"].to_numpy(np.float64) - predicted["rating"].to_numpy(np.float64)
    assert len(predicted) == len(test)
    assert summary["metrics"]["rmse"] == pytest.approx(float(np.sqrt(np.mean(errors ** 2))), rel=1e-5)
