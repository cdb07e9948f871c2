"""The estimator family measured against the issue's targets, in three parts:

- ``ml100k``: GroupLens ml-100k (``../shared``): mean test RMSE over u1..u5 of ``BPMF``,
  ``SGD`` and ``ALS`` (defaults), and precision@10 / NDCG@10 on u1 of ``SVD``, ``ALS`` and ``ImplicitALS``
  (positives: test ratings >= 4; training items excluded; ``implicit``'s definition);
- ``epoch``: the ml-20m synthetic split (shared with bench_als.py): seconds per epoch of
  ``SGD`` and of ``ALS`` (CG) at rank 64 in the same run on one cluster, epochs 2.. (epoch 1
  includes building the blocks), test RMSE of both, the seconds of an ``SVD`` fit and of a
  ``BPMF`` sweep (rank 30);
- ``surprise``: the ml-10m synthetic split: ``SGD`` against Surprise's ``SVD`` with the same
  factors, epochs, step size and regularization (constant step), fit seconds and test RMSE;
  Surprise runs in its own interpreter (``--surprise-python``, a venv with scikit-surprise).

dmf runs on a 2-worker LocalCluster (1 thread each). Prints a table and writes JSON
(``benchmarks/results/estimators-<part>-<scale>.json``).

    python benchmarks/bench_estimators.py --part ml100k
    python benchmarks/bench_estimators.py --part epoch
    python benchmarks/bench_estimators.py --part surprise --surprise-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ML100K = REPO.parent / "shared" / "data" / "movielens" / "ml-100k"
COLUMNS = ["user", "item", "rating", "timestamp"]
#: Surprise's SVD and dmf.SGD with the same model and steps (Surprise's defaults but the factors).
SURPRISE_SETTINGS = {"rank": 100, "epochs": 20, "learning_rate": 0.005, "reg": 0.02, "init_std": 0.1}

SURPRISE_SCRIPT = r"""
import json, sys, time
import numpy as np, pandas as pd
from surprise import SVD, Dataset, Reader
settings = json.loads(sys.argv[3])
train = pd.read_parquet(sys.argv[1]); test = pd.read_parquet(sys.argv[2])
started = time.perf_counter()
data = Dataset.load_from_df(train[["user", "item", "rating"]], Reader(rating_scale=(0.5, 5.0)))
trainset = data.build_full_trainset()
built = time.perf_counter()
model = SVD(n_factors=settings["rank"], n_epochs=settings["epochs"], lr_all=settings["learning_rate"],
            reg_all=settings["reg"], init_std_dev=settings["init_std"], random_state=0)
model.fit(trainset)
fitted = time.perf_counter()
predicted = np.array([model.predict(u, i).est for u, i in zip(test["user"], test["item"])])
rmse = float(np.sqrt(np.mean((predicted - test["rating"].to_numpy()) ** 2)))
print(json.dumps({"build_seconds": built - started, "fit_seconds": fitted - built, "rmse": rmse}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("ml100k", "epoch", "surprise"), required=True)
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the 'epoch' part")
    parser.add_argument("--surprise-python", type=Path, help="interpreter with scikit-surprise ('surprise' part)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        rows = {"ml100k": run_ml100k, "epoch": run_epoch, "surprise": run_surprise}[args.part](args, client)
    scale = {"ml100k": "ml-100k", "epoch": "ml-20m", "surprise": "ml-10m"}[args.part]
    output = common.write_run(f"estimators-{args.part}", scale, rows, args.output, seed=args.seed)
    print(f"{'what':<58} {'value':>10} {'target':>22}")
    for row in rows:
        print(f"{row['what']:<58} {row['value']:>10} {row.get('target', ''):>22}")
    print(f"wrote {output}")
    return 0


def run_ml100k(args, client) -> list[dict]:
    import pandas as pd

    import dmf

    def fold(number: int):
        read = lambda name: pd.read_csv(ML100K / name, sep="\t", names=COLUMNS)  # noqa: E731
        return read(f"u{number}.base"), read(f"u{number}.test")

    rows = []
    for name, make, target in (("BPMF()", dmf.BPMF, "<= 0.900; u1 <= 0.910"), ("SGD()", dmf.SGD, "<= 0.915"),
                               ("ALS()", dmf.ALS, "")):
        scores, seconds = [], []
        for number in range(1, 6):
            train, test = fold(number)
            started = time.perf_counter()
            model = make().fit(train)
            seconds.append(time.perf_counter() - started)
            scores.append(float(dmf.rmse(model, test)))
        rows.append({"what": f"{name} test RMSE, mean of u1..u5", "value": round(statistics.mean(scores), 4),
                     "target": target, "per_fold": [round(s, 4) for s in scores],
                     "fit_seconds": [round(s, 1) for s in seconds]})
    train, test = fold(1)
    for name, model, target in (("SVD()", dmf.SVD(), ">= ALS's"), ("ALS()", dmf.ALS(), ""),
                                ("ImplicitALS(threshold=4)", dmf.ImplicitALS(threshold=4), "")):
        model.fit(train)
        ranking = dmf.ranking_metrics(model.recommend(10, exclude=train), test, k=10, relevance_threshold=4,
                                      precision_denominator="min", catalog=train)
        rows.append({"what": f"{name} precision@10 on u1", "value": round(ranking["precision@k"], 4),
                     "target": target, "ndcg@10": round(ranking["ndcg@k"], 4)})
    return rows


def run_epoch(args, client) -> list[dict]:
    import dask.dataframe as dd
    from distributed import wait

    import dmf

    split = common.prepare_split("ml-20m", seed=args.seed, test_fraction=0.1)
    train = client.persist(dd.read_parquet(str(split / "train")))
    test = dd.read_parquet(str(split / "test"))
    wait(train)
    rows, per_epoch = [], {}
    for name, model in (("ALS(rank=64) cg", dmf.ALS(rank=64, max_iter=args.epochs)),
                        ("SGD(rank=64)", dmf.SGD(rank=64, max_iter=args.epochs))):
        started = time.perf_counter()
        model.fit(train, validate=False)
        total = time.perf_counter() - started
        per_epoch[name] = statistics.median(record["seconds"] for record in model.history_[1:])
        rows.append({"what": f"{name} seconds per epoch (median of epochs 2..{args.epochs})",
                     "value": round(per_epoch[name], 2), "fit_seconds": round(total, 1),
                     "first_epoch_seconds": round(model.history_[0]["seconds"], 2),
                     "test_rmse_after_epochs": round(float(dmf.rmse(model, test)), 4)})
    rows.append({"what": "SGD epoch / ALS CG epoch, same run", "value": round(
        per_epoch["SGD(rank=64)"] / per_epoch["ALS(rank=64) cg"], 2), "target": "<= 1.5"})
    started = time.perf_counter()
    svd = dmf.SVD(rank=64).fit(train, validate=False)
    rows.append({"what": "SVD(rank=64) fit seconds (n_iter 4: 11 passes)",
                 "value": round(time.perf_counter() - started, 1), "users": len(svd.user_ids_)})
    started = time.perf_counter()
    bpmf = dmf.BPMF(burn_in=2, n_samples=args.epochs - 2).fit(train, validate=False)
    sweeps = [record["seconds"] for record in bpmf.history_]
    rows.append({"what": f"BPMF(rank=30) seconds per sweep (median of sweeps 2..{args.epochs})",
                 "value": round(statistics.median(sweeps[1:]), 2), "fit_seconds": round(time.perf_counter() - started, 1),
                 "default_fit_estimate_seconds": round(statistics.median(sweeps[1:]) * 200, 0)})
    return rows


def run_surprise(args, client) -> list[dict]:
    import dask.dataframe as dd
    import pandas as pd
    from distributed import wait

    import dmf

    if args.surprise_python is None:
        raise SystemExit("--part surprise needs --surprise-python (a venv with scikit-surprise)")
    split = common.prepare_split("ml-10m", seed=args.seed, test_fraction=0.1)
    settings = SURPRISE_SETTINGS
    train = client.persist(dd.read_parquet(str(split / "train")))
    wait(train)
    test = pd.read_parquet(split / "test")
    sgd = dmf.SGD(rank=settings["rank"], max_iter=settings["epochs"], learning_rate=settings["learning_rate"],
                  reg=settings["reg"], bias_reg=settings["reg"], damping=0.0, bias_damping=0.0,
                  init_std=settings["init_std"], schedule="constant", clip=True)
    started = time.perf_counter()
    sgd.fit(train, validate=False)
    dmf_seconds = time.perf_counter() - started
    dmf_rmse = float(dmf.rmse(sgd, test))
    done = subprocess.run([str(args.surprise_python), "-c", SURPRISE_SCRIPT, str(split / "train"),
                           str(split / "test" / "part-0000.parquet"), json.dumps(settings)],
                          capture_output=True, text=True, check=True)
    surprise = json.loads(done.stdout.strip().splitlines()[-1])
    return [
        {"what": "dmf SGD fit seconds (2 workers)", "value": round(dmf_seconds, 1), "settings": settings},
        {"what": "Surprise SVD fit seconds (1 thread; trainset build excluded)", "value": round(surprise["fit_seconds"], 1),
         "build_seconds": round(surprise["build_seconds"], 1)},
        {"what": "Surprise fit / dmf fit", "value": round(surprise["fit_seconds"] / dmf_seconds, 1), "target": ">= 10"},
        {"what": "dmf SGD test RMSE", "value": round(dmf_rmse, 4), "target": "<= Surprise's"},
        {"what": "Surprise SVD test RMSE", "value": round(surprise["rmse"], 4)},
    ]


if __name__ == "__main__":
    sys.exit(main())
