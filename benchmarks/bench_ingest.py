"""Ingest of the layouts users have: one large Parquet file against the generator's directory
of many files, the same ratings (read, validate, persist on a 2-worker LocalCluster).

    python benchmarks/bench_ingest.py                 # ml-20m synthetic train split (18 M ratings)

The one-file copy (1 M-row row groups, as pyarrow writes by default) is made once beside the
benchmark's split (`_bench_common.prepare_split`), and so is a copy as 1000 small files (18 k
rows each, a snapshot grown by daily files). The last layout is a nightly snapshot: the
one file plus a day's file of new ratings (1 % of the snapshot, a sixth of them re-rating pairs
already there, with later timestamps), read with ``duplicates="latest"``. Prints a table and writes JSON (default
``benchmarks/results/ingest-<scale>.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="ml-20m")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster, wait

    import dmf

    split = common.prepare_split(args.scale, seed=0, test_fraction=0.1)
    one_file = common.one_file_copy(split)
    many_files = common.many_files_copy(split)
    snapshot = snapshot_with_a_day(split)
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        layouts = (("one file", one_file, "error"), ("directory of files", split / "train", "error"),
                   ("1000 small files", many_files, "error"), ("file + a day, re-ratings", snapshot, "latest"))
        for layout, path, duplicates in layouts:
            for attempt in range(args.repeats):
                started = time.perf_counter()
                frame = client.persist(dmf.read_ratings(path, duplicates=duplicates))
                wait(frame)
                rows.append({"layout": layout, "attempt": attempt + 1, "partitions": frame.npartitions,
                             "seconds": round(time.perf_counter() - started, 2),
                             "rows": int(client.compute(frame.map_partitions(len).sum()).result())})
                del frame
    output = common.write_run("ingest", args.scale, rows, args.output)
    print(common.format_table(rows, [("layout", "layout", 26), ("attempt", "attempt", 7), ("partitions", "partitions", 10),
                                     ("rows", "rows", 10), ("seconds", "seconds", 8)], left=1))
    print(f"wrote {output}")
    return 0


def snapshot_with_a_day(split: Path) -> Path:
    """``split/snapshot-with-a-day`` (made once): see :func:`_write_snapshot_with_a_day`."""
    snapshot = split / "snapshot-with-a-day"
    if not snapshot.exists():
        _write_snapshot_with_a_day(common.one_file_copy(split), snapshot)
    return snapshot


def _write_snapshot_with_a_day(one_file: Path, snapshot: Path) -> None:
    """``snapshot/``: the one file with a timestamp column (its row number) and ``day.parquet``,
    1 % new ratings of which a sixth re-rate existing pairs, all with later timestamps."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    table = pq.read_table(one_file)
    table = table.append_column("timestamp", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    rng = np.random.default_rng(17)
    n_day = table.num_rows // 100
    users, items = table.column("user").to_numpy(), table.column("item").to_numpy()
    again = rng.choice(table.num_rows, n_day // 6, replace=False)
    n_new = n_day - len(again)
    day = pd.DataFrame({"user": np.concatenate([users[again], rng.choice(users, n_new)]),
                        "item": np.concatenate([items[again], rng.choice(items, n_new)]),
                        "rating": rng.integers(1, 6, n_day).astype(np.float32),
                        "timestamp": np.full(n_day, table.num_rows, dtype=np.int64)})
    day = day.drop_duplicates(["user", "item"])
    temporary = snapshot.with_name(snapshot.name + ".tmp")
    temporary.mkdir()
    pq.write_table(table, temporary / "part.0.parquet", row_group_size=1_000_000)
    pq.write_table(pa.Table.from_pandas(day, schema=table.schema, preserve_index=False), temporary / "part.1.parquet")
    temporary.rename(snapshot)


if __name__ == "__main__":
    sys.exit(main())
