"""Ingest of the layouts users have: one large Parquet file against the generator's directory
of many files, the same ratings (read, validate, persist on a 2-worker LocalCluster).

    python benchmarks/bench_ingest.py                 # ml-20m synthetic train split (18 M ratings)

The one-file copy (1 M-row row groups, as pyarrow writes by default) is made once beside the
benchmark's split (`_bench_common.prepare_split`). Prints a table and writes JSON (default
``benchmarks/results/ingest-<scale>.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="ml-20m")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
    from distributed import Client, LocalCluster, wait

    import dmf

    split = common.prepare_split(args.scale, seed=0, test_fraction=0.1)
    one_file = split / "train-one-file.parquet"
    if not one_file.exists():
        table = ds.dataset(str(split / "train")).to_table()
        pq.write_table(table, str(one_file) + ".tmp", row_group_size=1_000_000)
        Path(str(one_file) + ".tmp").rename(one_file)
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        for layout, path in (("one file", one_file), ("directory of files", split / "train")):
            for attempt in range(args.repeats):
                started = time.perf_counter()
                frame = client.persist(dmf.read_ratings(path))
                wait(frame)
                rows.append({"layout": layout, "attempt": attempt + 1, "partitions": frame.npartitions,
                             "seconds": round(time.perf_counter() - started, 2)})
                del frame
    output = common.write_run("ingest", args.scale, rows, args.output)
    print(f"{'layout':<20} {'attempt':>7} {'partitions':>10} {'seconds':>8}")
    for row in rows:
        print(f"{row['layout']:<20} {row['attempt']:>7} {row['partitions']:>10} {row['seconds']:>8}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
