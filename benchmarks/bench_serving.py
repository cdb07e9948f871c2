"""Serving speed of a fitted model: one user's top-k, fold-in of a new user, fold-in of many
users on the cluster, similar items for the whole catalog.

    python benchmarks/bench_serving.py                 # ml-20m synthetic, rank 64
    python benchmarks/bench_serving.py --scale ml-1m   # quicker

The model is fitted (a few epochs: serving speed does not depend on how well it fits) on
the benchmark's train split (`_bench_common.prepare_split`, shared with bench_als.py), on a
2-worker LocalCluster. Local calls run in this process with no Dask graph; the medians are
over ``--repeats`` different users. Prints a table and writes JSON (default
``benchmarks/results/serving-<scale>.json``).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

TARGETS = {"top-10 known user": 2.0, "fold-in 20 ratings + top-10": 5.0, "fold-in 10,000 users (stage)": 5000.0,
           "similar items, whole catalog": 10000.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="ml-20m")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import dask.dataframe as dd
    import pandas as pd
    from distributed import Client, LocalCluster, wait

    import dmf

    split = common.prepare_split(args.scale, seed=args.seed, test_fraction=0.1)
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        train = client.persist(dd.read_parquet(str(split / "train")))
        wait(train)
        model = dmf.ALS(rank=args.rank, max_iter=args.epochs, seed=args.seed).fit(train, validate=False)
        rng = np.random.default_rng(args.seed)
        users = rng.choice(np.asarray(model.user_ids_), size=args.repeats, replace=False)
        model.recommend_user(users[0], k=10)  # first call builds the id lookup table
        rows.append(_timed("top-10 known user", [lambda u=u: model.recommend_user(u, k=10) for u in users]))
        items = np.asarray(model.item_ids_)
        histories = [pd.DataFrame({"item": rng.choice(items, 20, replace=False),
                                   "rating": rng.integers(1, 6, 20).astype(np.float32)}) for _ in range(args.repeats)]
        rows.append(_timed("fold-in 20 ratings + top-10",
                           [lambda h=h: model.recommend_user("new", history=h, k=10) for h in histories]))
        chosen = rng.choice(np.asarray(model.user_ids_), size=min(10_000, len(model.user_ids_)), replace=False)
        new_users = train[train["user"].isin(chosen)].assign(user=lambda f: f["user"] + 10**9)
        new_users = client.persist(new_users)
        wait(new_users)
        n_ratings = int(new_users.shape[0].compute())
        started = time.perf_counter()
        folded = model.fold_in(new_users)
        rows.append({"task": "fold-in 10,000 users (stage)", "ms": round(1000 * (time.perf_counter() - started), 1),
                     "ratings": n_ratings, "users": len(folded.user_ids_) - len(model.user_ids_)})
        started = time.perf_counter()
        similar = client.persist(model.similar_items(k=10))
        wait(similar)
        n_rows = int(similar.map_partitions(len).compute().sum())
        rows.append({"task": "similar items, whole catalog", "ms": round(1000 * (time.perf_counter() - started), 1),
                     "rows": n_rows})
    for row in rows:
        row["target_ms"] = TARGETS[row["task"]]
        row["met"] = row["ms"] <= row["target_ms"]
    output = common.write_run("serving", args.scale, rows, args.output, rank=args.rank, epochs=args.epochs)
    print(f"{'task':<32} {'ms (median)':>12} {'target ms':>10}  met")
    for row in rows:
        print(f"{row['task']:<32} {row['ms']:>12} {row['target_ms']:>10}  {'yes' if row['met'] else 'NO'}")
    print(f"wrote {output}")
    return 0


def _timed(task: str, calls: list) -> dict:
    seconds = []
    for call in calls:
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return {"task": task, "ms": round(1000 * statistics.median(seconds), 3), "p90_ms": round(1000 * float(
        np.quantile(seconds, 0.9)), 3), "calls": len(calls)}


if __name__ == "__main__":
    sys.exit(main())
