"""Prepare: raw ratings -> validated canonical Parquet ratings/, train/ and test/ plus summary.json.

Sources: a MovieLens folder, official zip or release name (fetched and checksummed), a CSV
file with a header, a Parquet file or folder (--input), or generated MovieLens-like ratings
(--synthetic ml-100k|ml-1m|ml-10m|ml-20m|ml-25m). Splits: random by --test-fraction and
--seed; temporal (each user's latest --test-count ratings or latest --test-fraction);
grouplens (ml-100k's own u1..u5/ua/ub files). OUTPUT appears only when complete.

    python pipelines/prepare.py out/ml100k --input ../shared/data/movielens/ml-100k --split grouplens
    python pipelines/prepare.py out/ml20m --synthetic ml-20m --seed 7
"""

import json
from pathlib import Path

from dmf.datasets.releases import GROUPLENS_SPLITS, require_source
from dmf.pipeline import options as cli


def main(argv=None) -> int:
    parser = cli.pipeline_parser(__doc__)
    parser.add_argument("output", nargs="?", type=Path, help="output directory to create")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", help="MovieLens folder, zip or release name (ml-100k ... ml-25m, ml-latest), "
                        "CSV file with a header, or Parquet file/folder")
    source.add_argument("--synthetic", metavar="PRESET", help="generate ratings shaped like this MovieLens release")
    parser.add_argument("--split", choices=["random", "temporal", "grouplens"], default="random", help="split kind")
    parser.add_argument("--test-fraction", type=float, default=None,
                        help="share of ratings in test (random: default 0.2; temporal: share of each user's)")
    parser.add_argument("--test-count", type=int, default=None,
                        help="temporal: each user's latest N ratings go to test (default 1)")
    parser.add_argument("--min-train", type=int, default=1, help="temporal: ratings each user keeps in train")
    parser.add_argument("--grouplens-split", default="u1", choices=GROUPLENS_SPLITS,
                        help="ml-100k files used by --split grouplens")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic ratings and of the random split")
    parser.add_argument("--npartitions", type=int, default=None,
                        help="partitions of synthetic ratings (default: one per million)")
    parser.add_argument("--rating-scale", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="valid ratings (default: the release's or preset's scale, else 0.5 5)")
    for column in ("user", "item", "rating", "timestamp"):
        parser.add_argument(f"--{column}-column", default=column, help=f"{column} column of a CSV or Parquet input")
    parser.add_argument("--no-timestamp", action="store_true", help="the CSV or Parquet input has no timestamps")
    parser.add_argument("--validate", action="store_true", default=None,
                        help="validate synthetic ratings too (inputs are always validated; generated ones are "
                             "valid by construction)")
    parser.add_argument("--data-home", type=Path, default=None,
                        help="cache of MovieLens downloads and unpacked zips (default $DMF_DATA_HOME or ~/dmf_data)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    args = cli.parse_args(parser, argv)
    if args.output is None:
        parser.error("OUTPUT (the directory to create) is required, on the command line or as output in --config")
    if (args.input is None) == (args.synthetic is None):
        parser.error("give exactly one of --input or --synthetic")
    if args.input is not None:
        try:
            require_source(args.input)  # before a cluster starts
        except FileNotFoundError as missing:
            parser.error(str(missing))
    columns = {"user": args.user_column, "item": args.item_column, "rating": args.rating_column,
               "timestamp": None if args.no_timestamp else args.timestamp_column}
    from dmf.datasets import prepare_dataset  # after the arguments: --help and their errors need no Dask

    with cli.connect(args):
        summary = prepare_dataset(
            args.output, args.input, synthetic=args.synthetic, seed=args.seed, split=args.split,
            test_fraction=args.test_fraction, test_count=args.test_count, grouplens=args.grouplens_split,
            min_train=args.min_train, rating_scale=args.rating_scale, columns=columns,
            npartitions=args.npartitions, data_home=args.data_home, validate=args.validate,
            overwrite=args.overwrite,
        )
    print(json.dumps({"output": str(args.output), "rows": summary["rows"], "users": summary["users"],
                      "items": summary["items"], "timings": summary["timings"]}))
    return 0


if __name__ == "__main__":
    cli.run(main)
