"""The nightly run end to end (ingest, split, fit, evaluate, top-k, publish) on a 20 M-rating
snapshot: cold, then warm after a day's file of new ratings that partly re-rate existing pairs.

    python benchmarks/bench_nightly.py                # ml-20m synthetic, rank 64

The snapshot is ``bench_ingest.py``'s: the 18 M training ratings as one file with a timestamp
column, then a day's file of 1 % new ratings, a sixth of them (36.6 k pairs, with the day's
random pairs that hit existing ones) re-rating pairs already there. Each run is
``pipelines/nightly.py --snapshot S --home H --rank 64 --split-seed 1`` on its own LocalCluster (the
pipeline's default, sized to this machine), timed from start to exit. Prints a table and
writes JSON (default ``benchmarks/results/nightly-<scale>.json``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402
import bench_ingest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="ml-20m")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    split = common.prepare_split(args.scale, seed=0, test_fraction=0.1)
    source = bench_ingest.snapshot_with_a_day(split)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dmf-bench-nightly-") as scratch:
        snapshot, home = Path(scratch) / "snapshot", Path(scratch) / "home"
        snapshot.mkdir()
        os.link(source / "part.0.parquet", snapshot / "part.0.parquet")
        for run in ("cold", "warm, a day added"):
            if run.startswith("warm"):
                os.link(source / "part.1.parquet", snapshot / "part.1.parquet")
            command = [sys.executable, str(REPO / "pipelines" / "nightly.py"), "--snapshot", str(snapshot),
                       "--home", str(home), "--rank", str(args.rank), "--log-level", "WARNING",
                       # the snapshot is the benchmark split's train side, chosen by seed 0's hash
                       "--split-seed", "1"]
            started = time.perf_counter()
            finished = subprocess.run(command, capture_output=True, text=True)
            seconds = time.perf_counter() - started
            if finished.returncode != 0:
                print(finished.stderr[-3000:], file=sys.stderr)
                return finished.returncode
            rows.append({"run": run, "seconds": round(seconds, 1), "summary": finished.stdout.strip().splitlines()[-1]})
        shutil.rmtree(home, ignore_errors=True)
    output = common.write_run("nightly", args.scale, rows, args.output, rank=args.rank)
    print(f"{'run':<20} {'seconds':>8}  last line")
    for row in rows:
        print(f"{row['run']:<20} {row['seconds']:>8}  {row['summary']}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
