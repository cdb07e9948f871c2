"""Prepare ratings for training: validate, write canonical Parquet and a train/test split.

Examples
--------
    python pipelines/prepare.py out/ml100k --input ../shared/data/movielens/ml-100k --split grouplens
    python pipelines/prepare.py out/ml20m-synthetic --synthetic ml-20m --seed 7
    python pipelines/prepare.py out/mine --input ratings.csv --user-column userId --item-column movieId \\
        --split temporal --test-count 5 --scheduler tcp://scheduler:8786

The output directory holds ratings/, train/, test/ (Parquet), items.parquet and users.parquet
for MovieLens sources, and summary.json (parameters, row counts, timings, versions).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("output", help="output directory to create (appears only when complete)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="MovieLens folder, zip or release name (ml-100k ... ml-25m), "
                                        "a CSV file with a header, or a Parquet file/folder")
    source.add_argument("--synthetic", metavar="PRESET",
                        help="generate MovieLens-like ratings: ml-100k, ml-1m, ml-10m, ml-20m or ml-25m")
    parser.add_argument("--split", choices=["random", "temporal", "grouplens"], default="random",
                        help="random by --test-fraction; temporal: each user's latest --test-count or "
                             "--test-fraction; grouplens: ml-100k's own --grouplens-split files")
    parser.add_argument("--test-fraction", type=float, default=None,
                        help="share of ratings in test (random: default 0.2; temporal: per user)")
    parser.add_argument("--test-count", type=int, default=None,
                        help="temporal split: each user's latest N ratings go to test (default 1)")
    parser.add_argument("--min-train", type=int, default=1, help="temporal split: ratings each user keeps in train")
    parser.add_argument("--grouplens-split", default="u1", choices=["u1", "u2", "u3", "u4", "u5", "ua", "ub"],
                        help="which GroupLens ml-100k split to use with --split grouplens")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and the random split")
    parser.add_argument("--npartitions", type=int, default=None,
                        help="synthetic partitions (default: one per million ratings)")
    parser.add_argument("--rating-scale", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="valid rating range (default: the release's or preset's, else 0.5 5)")
    for column in ("user", "item", "rating", "timestamp"):
        parser.add_argument(f"--{column}-column", default=column, help=f"source column holding the {column}")
    parser.add_argument("--no-timestamp", action="store_true", help="the source has no timestamp column")
    parser.add_argument("--validate", action=argparse.BooleanOptionalAction, default=None,
                        help="validate ratings before writing (default: yes, except for --synthetic data, "
                             "which is valid by construction)")
    parser.add_argument("--data-home", default=None, help="cache for MovieLens zips (default $DMF_DATA_HOME or ~/dmf_data)")
    parser.add_argument("--scheduler", default=os.environ.get("DMF_SCHEDULER"),
                        help="address of a running Dask scheduler (default $DMF_SCHEDULER; "
                             "without it a LocalCluster sized to this machine is started)")
    parser.add_argument("--workers", type=int, default=None, help="LocalCluster worker processes (default: CPU count)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    return parser.parse_args(argv)


def connect(args: argparse.Namespace):
    """A Client of --scheduler, or of a LocalCluster with one single-threaded worker per CPU."""
    from distributed import Client, LocalCluster

    if args.scheduler:
        return Client(args.scheduler), None
    import psutil

    workers = args.workers or os.cpu_count() or 1
    memory = int(psutil.virtual_memory().total * 0.8 / workers)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=memory, dashboard_address=":0")
    return Client(cluster), cluster


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from dmf.datasets import prepare_dataset

    started = time.perf_counter()
    client = cluster = None
    try:
        client, cluster = connect(args)
        print(f"dashboard: {client.dashboard_link}", flush=True)
        columns = {"user": args.user_column, "item": args.item_column, "rating": args.rating_column,
                   "timestamp": None if args.no_timestamp else args.timestamp_column}
        summary = prepare_dataset(
            args.output, args.input, synthetic=args.synthetic, seed=args.seed, split=args.split,
            test_fraction=args.test_fraction, test_count=args.test_count, grouplens=args.grouplens_split,
            min_train=args.min_train, rating_scale=args.rating_scale, columns=columns,
            npartitions=args.npartitions, data_home=args.data_home, validate=args.validate,
            overwrite=args.overwrite,
        )
    except Exception as error:  # one line for the operator; the traceback is in the log above
        logging.getLogger("dmf.pipelines.prepare").debug("failed", exc_info=True)
        print(f"prepare failed: {type(error).__name__}: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    print(json.dumps({"output": args.output, "rows": summary["rows"], "timings": summary["timings"],
                      "wall_seconds": round(time.perf_counter() - started, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
