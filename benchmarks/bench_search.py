"""Model selection measured against the issue's targets, on a 2-worker LocalCluster:

- ``ml100k``: a 3-fold x 12-setting search (rank {16, 32, 64} x reg {0.02, 0.05, 0.1, 0.2})
  on GroupLens ml-100k (u.data), against the 36 fits alone (each setting fitted on each
  fold's training data, one after the other); then the tuned ALS on u1..u5: for each split a
  3-fold search inside its training data only, the best setting refit on it, its test RMSE
  (nothing of the test split is seen), next to the defaults' mean;
- ``ml20m``: a 1-fold x 8-setting search (rank {10, 32} x reg {0.02, 0.05, 0.1, 0.2}) on the
  ml-20m synthetic training split (shared with bench_als.py; 10 % of it held out), against
  ``ALS.fit`` of the 8 settings in a row.

Prints a table and writes JSON (``benchmarks/results/search-<part>-<scale>.json``).

    python benchmarks/bench_search.py --part ml100k
    python benchmarks/bench_search.py --part ml20m
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ML100K = REPO.parent / "shared" / "data" / "movielens" / "ml-100k"
COLUMNS = ["user", "item", "rating", "timestamp"]
GRID_100K = {"rank": [16, 32, 64], "reg": [0.02, 0.05, 0.1, 0.2]}
GRID_20M = {"rank": [10, 32], "reg": [0.02, 0.05, 0.1, 0.2]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("ml100k", "ml20m"), required=True)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        rows = (run_ml100k if args.part == "ml100k" else run_ml20m)(args, client)
    scale = "ml-100k" if args.part == "ml100k" else "ml-20m"
    output = common.write_run(f"search-{args.part}", scale, rows, args.output, max_iter=args.max_iter,
                              parallelism=args.parallelism)
    print(f"{'what':<64} {'value':>10} {'target':>10}")
    for row in rows:
        print(f"{row['what']:<64} {row['value']:>10} {row.get('target', ''):>10}")
    print(f"wrote {output}")
    return 0


def _fits_alone(make, grid: dict, folds: list) -> float:
    """Seconds of fitting every setting on every fold's training data, one after the other."""
    started = time.perf_counter()
    for train, _ in folds:
        for rank in grid["rank"]:
            for reg in grid["reg"]:
                make(rank=rank, reg=reg).fit(train, validate=False)
    return time.perf_counter() - started


def run_ml100k(args, client) -> list[dict]:
    import pandas as pd

    import dmf
    from dmf.model_selection import KFold, grid_search

    ratings = pd.read_csv(ML100K / "u.data", sep="\t", names=COLUMNS)
    make = lambda **kw: dmf.ALS(max_iter=args.max_iter, **kw)  # noqa: E731
    folds = [(client.persist(train), client.persist(test))
             for train, test in KFold(3, seed=0).split(client.persist(dmf.read_ratings(ratings)))]
    alone = _fits_alone(make, GRID_100K, folds)
    started = time.perf_counter()
    search = grid_search(make(), GRID_100K, ratings, splits=KFold(3, seed=0), parallelism=args.parallelism,
                         refit=False, client=client)
    searched = time.perf_counter() - started
    rows = [{"what": "36 fits alone, seconds", "value": round(alone, 1)},
            {"what": "3-fold x 12-setting search, seconds", "value": round(searched, 1),
             "best": search.best_params, "best_rmse": round(float(search.summary.loc[0, "mean"]), 4)},
            {"what": "search / fits alone", "value": round(searched / alone, 2), "target": "<= 2"}]
    tuned, defaults, chosen = [], [], []
    for number in range(1, 6):
        read = lambda name: pd.read_csv(ML100K / name, sep="\t", names=COLUMNS)  # noqa: E731
        train, test = read(f"u{number}.base"), read(f"u{number}.test")
        inner = grid_search(make(), GRID_100K, train, splits=KFold(3, seed=number), parallelism=args.parallelism,
                            client=client)
        tuned.append(float(dmf.rmse(inner.best_estimator, test)))
        defaults.append(float(dmf.rmse(dmf.ALS().fit(train), test)))
        chosen.append(inner.best_params)
    rows.append({"what": "tuned ALS (inner 3-fold search) test RMSE, mean u1..u5", "value": round(statistics.mean(tuned), 4),
                 "per_fold": [round(v, 4) for v in tuned], "chosen": chosen})
    rows.append({"what": "ALS() defaults test RMSE, mean u1..u5", "value": round(statistics.mean(defaults), 4),
                 "per_fold": [round(v, 4) for v in defaults]})
    return rows


def run_ml20m(args, client) -> list[dict]:
    import dask.dataframe as dd
    from distributed import wait

    import dmf
    from dmf.model_selection import Holdout, grid_search

    split = common.prepare_split("ml-20m", seed=0, test_fraction=0.1)
    ratings = client.persist(dd.read_parquet(str(split / "train")))
    wait(ratings)
    make = lambda **kw: dmf.ALS(max_iter=args.max_iter, **kw)  # noqa: E731
    started = time.perf_counter()
    for rank in GRID_20M["rank"]:
        for reg in GRID_20M["reg"]:
            make(rank=rank, reg=reg).fit(ratings, validate=False)
    alone = time.perf_counter() - started
    started = time.perf_counter()
    search = grid_search(make(), GRID_20M, ratings, splits=Holdout(0.1, seed=1), parallelism=args.parallelism,
                         refit=False, client=client, validate=False)
    searched = time.perf_counter() - started
    return [{"what": "ALS.fit of the 8 settings in a row (all the data), seconds", "value": round(alone, 1)},
            {"what": "1-fold x 8-setting search (90 % train, validated per epoch), seconds", "value": round(searched, 1),
             "best": search.best_params, "fit_seconds": search.table["seconds"].round(1).tolist()},
            {"what": "search / 8 fits", "value": round(searched / alone, 2), "target": "<= 0.7"}]


if __name__ == "__main__":
    sys.exit(main())
