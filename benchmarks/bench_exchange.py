"""Bytes per epoch between workers: all-to-all against routed factor exchange, on 2, 8 and 16
workers (1 thread each, one block per worker), next to the formulas that predict them.

    python benchmarks/bench_exchange.py                         # ml-20m, rank 64, 2/8/16 workers
    python benchmarks/bench_exchange.py --workers 2,4 --scale ml-1m --iterations 2   # a quick look

For each worker count, a LocalCluster of that many 1-thread worker processes reads the 90 %
train split of the synthetic preset (generated once, see ``_bench_common.prepare_split``),
persists it, and fits ``dmf.ALS(rank, max_iter, exchange=...)`` once per exchange. Measured:
the bytes of factor tables and routed pieces the workers fetched from each other
(``dmf.engine.routing.factor_bytes_moved``: the workers' transfer logs, Dask's size
estimates), per epoch, and the median epoch seconds (epochs 2 and on). Predicted:

- all-to-all: every worker fetches every remote block table of the other side once per
  half-step: ``(n_workers - 1) × (n_users + n_items) × (k + 1) × 4 B`` per epoch;
- routed: ``Σ over (block b, block c on another worker) of the rows of c that b's ratings
  reference × (k + 1) × 4 B``, counted from the ratings themselves.

Prints a table and writes JSON (default ``benchmarks/results/exchange-<scale>.json``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402


def referenced_rows(rows: np.ndarray, cols: np.ndarray, row_bounds: np.ndarray, col_bounds: np.ndarray) -> int:
    """Σ over (row block b, column block c ≠ b) of the distinct columns of c that b's ratings
    reference: the column-side rows a routed half-step moves between workers."""
    row_block = np.searchsorted(row_bounds, rows, side="right") - 1
    col_block = np.searchsorted(col_bounds, cols, side="right") - 1
    remote = row_block != col_block
    pairs = np.unique(row_block[remote].astype(np.int64) * (int(col_bounds[-1]) + 1) + cols[remote])
    return len(pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="ml-20m", help="synthetic preset")
    parser.add_argument("--workers", default="2,8,16", help="comma-separated worker counts (1 thread each)")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    import dask
    import pandas as pd
    from distributed import Client, LocalCluster, wait

    import dmf
    from dmf.engine.layout import BlockLayout
    from dmf.engine.routing import factor_bytes_moved

    split = common.prepare_split(args.scale, seed=0, test_fraction=0.1)
    frame = pd.read_parquet(split / "train", columns=["user", "item"])
    row_bytes = (args.rank + 1) * 4
    rows = []
    for n_workers in [int(w) for w in args.workers.split(",")]:
        with (dask.config.set({"distributed.admin.low-level-log-length": 100_000}),
              LocalCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=":0") as cluster,
              Client(cluster) as client):
            train = client.persist(dmf.read_ratings(split / "train"))
            wait(train)
            for exchange in ("all", "routed"):
                factor_bytes_moved(client)
                model = dmf.ALS(rank=args.rank, max_iter=args.iterations, seed=0, exchange=exchange).fit(train)
                moved = factor_bytes_moved(client) / args.iterations
                users, items = model.model_.user_ids, model.model_.item_ids
                n_users, n_items = len(users), len(items)
                if exchange == "all":
                    predicted = (n_workers - 1) * (n_users + n_items) * row_bytes
                else:
                    user_rows, item_rows = users.index_of(frame["user"].to_numpy()), items.index_of(frame["item"].to_numpy())
                    user_bounds = BlockLayout(n_users, n_workers).bounds
                    item_bounds = BlockLayout(n_items, n_workers).bounds
                    predicted = row_bytes * (referenced_rows(user_rows, item_rows, user_bounds, item_bounds)
                                             + referenced_rows(item_rows, user_rows, item_bounds, user_bounds))
                epochs = [entry["seconds"] for entry in model.history_]
                rows.append({"workers": n_workers, "exchange": exchange, "ratings": model.n_ratings_,
                             "users": n_users, "items": n_items, "rank": args.rank,
                             "bytes_per_epoch": int(moved), "predicted_bytes_per_epoch": int(predicted),
                             "epoch_seconds_median": round(float(np.median(epochs[1:] or epochs)), 3),
                             "epoch_seconds": [round(s, 3) for s in epochs]})
            del train
        everywhere = rows[-2]
        rows[-1]["bytes_vs_all"] = round(rows[-1]["bytes_per_epoch"] / everywhere["bytes_per_epoch"], 3)
        rows[-1]["epoch_vs_all"] = round(rows[-1]["epoch_seconds_median"] / everywhere["epoch_seconds_median"], 2)
    output = common.write_run("exchange", args.scale, rows, args.output)
    shown = [{**row, "mb": f"{row['bytes_per_epoch'] / 1e6:.1f}", "predicted_mb": f"{row['predicted_bytes_per_epoch'] / 1e6:.1f}"}
             for row in rows]
    print(common.format_table(shown, [("workers", "workers", 7), ("exchange", "exchange", 8), ("mb", "MB/epoch", 9),
                                      ("predicted_mb", "predicted", 9), ("bytes_vs_all", "x all", 6),
                                      ("epoch_seconds_median", "epoch s", 8), ("epoch_vs_all", "x all", 6)]))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
