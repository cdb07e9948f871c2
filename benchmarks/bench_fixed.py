"""Fixed costs of a fit: the time from ``fit()`` to the first solve, and the per-half-step
overhead at small scale, from the workers' task stream.

    python benchmarks/bench_fixed.py                       # 2 M and 18 M ratings, rank 64
    python benchmarks/bench_fixed.py --millions 2 --rank 10
    PYTHONPATH=../old python benchmarks/bench_fixed.py      # another checkout's dmf, same script

For each size, the ratings are every rating of a hash sample of the ml-20m-shaped training
split's users (as ``bench_als.py --scaling`` takes them), persisted on a 2-worker LocalCluster
(1 thread each); ``dmf.ALS(rank, max_iter)`` is fitted once to warm the workers, then
``--repeats`` times inside ``distributed.get_task_stream`` (the run with the median time to
the first solve is reported, with every run's time beside it); the ratings are validated once by ``dmf.read_ratings``
and fitted with ``validate=False``, as the pipelines do. Reported:

- ``to_first_solve``: seconds from ``fit()`` to the start of the first solve task, and the
  worker-seconds of each task kind that ran before it (the setup: id pass, splits, block
  assembly, initial tables, transfers);
- per epoch (epochs 2 and on): wall seconds, the workers' busy seconds in solve tasks divided
  by the number of workers, and the rest, the per-epoch overhead (scheduling, transfers, the
  client's round trips), per half-step.

Prints a table and writes JSON (default ``benchmarks/results/fixed-ml-20m.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

SOLVES = ("solve_user_block", "solve_item_block", "solve_routed_block")


def user_sample(part, fraction: float, seed: int):
    """The rows of the users whose hash (with ``seed``) falls below ``fraction``."""
    import pandas as pd

    hashes = pd.util.hash_pandas_object(part["user"], index=False, hash_key=f"dmf-users-{seed:06d}"[:16]).to_numpy()
    return part[hashes < np.uint64(fraction * float(2**64 - 1))]


def profile(stream: list[dict], started: float, n_workers: int, history: list[dict]) -> dict:
    """Setup and per-epoch overhead from a fit's task stream (``started``: when fit() was called)."""
    from dask.utils import key_split

    def span(task):
        compute = [s for s in task["startstops"] if s["action"] == "compute"]
        return (compute[0]["start"], compute[-1]["stop"]) if compute else None

    solves = sorted(span(t)[0] for t in stream if key_split(t["key"]) in SOLVES and span(t))
    first_solve = solves[0]
    before = defaultdict(float)
    for task in stream:
        for part in task["startstops"]:
            if part["start"] < first_solve:
                action = "transfer" if part["action"] == "transfer" else key_split(task["key"])
                before[action] += min(part["stop"], first_solve) - part["start"]
    solve_seconds = sum(s["stop"] - s["start"] for t in stream if key_split(t["key"]) in SOLVES
                        for s in t["startstops"] if s["action"] == "compute")
    epochs = [entry["seconds"] for entry in history]
    later = epochs[1:] or epochs
    # solve time per epoch, epochs 2.. : all solves minus epoch 1's share (assumed equal)
    busy = solve_seconds / len(epochs) / n_workers
    epoch = float(np.median(later))
    return {"to_first_solve_seconds": round(first_solve - started, 3),
            "setup_worker_seconds": {k: round(v, 3) for k, v in sorted(before.items(), key=lambda kv: -kv[1])},
            "epoch_seconds_median": round(epoch, 3), "solve_seconds_per_epoch_per_worker": round(busy, 3),
            "overhead_per_half_step": round((epoch - busy) / 2, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--millions", default="2,18", help="comma-separated sizes in millions of ratings")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="measured fits per size (default 3)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    import cloudpickle
    import dask.dataframe as dd
    from distributed import Client, LocalCluster, get_task_stream, wait

    import dmf

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    split = common.prepare_split("ml-20m", seed=0, test_fraction=0.1)
    total = common.read_split_summary(split)["train_ratings"]
    rows = []
    with (LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=":0") as cluster,
          Client(cluster) as client):
        everything = dd.read_parquet(str(split / "train"))
        for millions in [float(m) for m in args.millions.split(",")]:
            fraction = min(1.0, millions * 1e6 / total)
            sample = everything.map_partitions(user_sample, fraction, 1, meta=everything._meta)
            ratings = client.persist(dmf.read_ratings(sample))  # validated once, as the pipelines do
            wait(ratings)
            dmf.ALS(rank=args.rank, max_iter=2).fit(ratings, validate=False)  # warm the workers
            runs = []
            for _ in range(args.repeats):
                model = dmf.ALS(rank=args.rank, max_iter=args.iterations)
                with get_task_stream(client) as stream:
                    started = time.time()
                    model.fit(ratings, validate=False)
                runs.append(profile(stream.data, started, args.workers, model.history_))
            firsts = [run["to_first_solve_seconds"] for run in runs]
            found = sorted(runs, key=lambda run: run["to_first_solve_seconds"])[len(runs) // 2]
            rows.append({"ratings": model.n_ratings_, "rank": args.rank, "iterations": args.iterations, **found,
                         "to_first_solve_runs": firsts, "dmf_path": str(Path(dmf.__file__).parent)})
            del ratings
    output = common.write_run("fixed", "ml-20m", rows, args.output)
    print(f"dmf from {rows[0]['dmf_path'] if rows else '?'}")
    print(common.format_table(rows, [("ratings", "ratings", 11), ("to_first_solve_seconds", "to 1st solve", 12),
                                     ("epoch_seconds_median", "epoch s", 8),
                                     ("solve_seconds_per_epoch_per_worker", "solve/worker", 12),
                                     ("overhead_per_half_step", "overhead/half-step", 18)], left=0))
    for row in rows:
        print(f"to the first solve at {row['ratings']:,} ratings, every run:", row["to_first_solve_runs"])
        print(f"before the first solve at {row['ratings']:,} ratings (worker-seconds):",
              ", ".join(f"{k} {v}" for k, v in list(row["setup_worker_seconds"].items())[:8]))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
