"""100 M ratings on one machine: a rank-64 ALS fit on the Netflix-sized synthetic preset
against the same fit on the ml-20m preset, in one run (2-worker LocalCluster, 1 thread each).

    python benchmarks/bench_scale.py                  # netflix (100 M) against ml-20m (20 M)
    python benchmarks/bench_scale.py --scales ml-10m,ml-20m --iterations 4   # a quick look

For each preset: the 90 % train split (generated once under ``$DMF_BENCH_DATA`` or
``~/.cache/dmf-bench``, see ``_bench_common.prepare_split``) is read with ``dmf.read_ratings``
and persisted, then ``dmf.ALS(rank, max_iter)`` is fitted. Reported: ingest seconds, fit
seconds, the median epoch (epochs 2 and on), and the peak resident memory of all processes
(client, scheduler, workers, nannies) during ingest and fit. Prints a table and writes JSON
(default ``benchmarks/results/scale-<last scale>.json``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="ml-20m,netflix", help="comma-separated synthetic presets, the first is the baseline")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster, wait

    import dmf

    scales = args.scales.split(",")
    splits = {scale: common.prepare_split(scale, seed=0, test_fraction=0.1) for scale in scales}
    rows = []
    with (LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=":0") as cluster,
          Client(cluster) as client):
        def cluster_pids() -> set[int]:
            return common.cluster_pids(client)

        for scale in scales:
            with common.Measurement(cluster_pids) as ingest:
                train = client.persist(dmf.read_ratings(splits[scale] / "train"))
                wait(train)
            model = dmf.ALS(rank=args.rank, max_iter=args.iterations, seed=0)
            with common.Measurement(cluster_pids) as fit:
                model.fit(train)
            epochs = [entry["seconds"] for entry in model.history_]
            rows.append({"scale": scale, "ratings": model.n_ratings_, "users": len(model.user_ids_),
                         "items": len(model.item_ids_), "rank": args.rank, "iterations": args.iterations,
                         "ingest_seconds": round(ingest.seconds, 2), "fit_seconds": round(fit.seconds, 2),
                         "epoch_seconds_median": round(float(np.median(epochs[1:] or epochs)), 3),
                         "epoch_seconds": [round(s, 3) for s in epochs],
                         "peak_memory_gib": round(max(ingest.peak_gib, fit.peak_gib), 2)})
            del train, model
    baseline = rows[0]
    for row in rows:
        row["epoch_vs_baseline"] = round(row["epoch_seconds_median"] / baseline["epoch_seconds_median"], 2)
        row["ratings_vs_baseline"] = round(row["ratings"] / baseline["ratings"], 2)
    output = common.write_run("scale", scales[-1], rows, args.output)
    print(common.format_table(rows, [("scale", "scale", 10), ("ratings", "ratings", 12), ("ingest_seconds", "ingest s", 9),
                                     ("fit_seconds", "fit s", 8), ("epoch_seconds_median", "epoch s", 8),
                                     ("epoch_vs_baseline", "x epoch", 8), ("ratings_vs_baseline", "x ratings", 9),
                                     ("peak_memory_gib", "peak GiB", 9)], left=1))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
