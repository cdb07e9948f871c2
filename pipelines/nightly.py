"""Nightly retraining: ingest the ratings snapshot, split, warm-start a fit from the published
model, evaluate, pass the quality gate, write top-k, and publish models/v{N} atomically.

Idempotent: when the snapshot's files (names and contents) and the settings are the same as
those the current version was published from, the run does nothing and says so (exit 0);
--force retrains anyway.

Exit codes: 0 published or unchanged, 3 refused by the quality gate (the current version stays), 1 error
(one line on stderr; a second run while one is active is such an error).
"""

from pathlib import Path

from dmf.pipeline import options as cli
from dmf.pipeline.config import NightlyConfig
from dmf.pipeline.home import exclusive_lock


def main(argv=None) -> int:
    parser = cli.pipeline_parser(__doc__)
    parser.add_argument("--snapshot", type=Path, required=True,
                        help="directory of Parquet files with user, item, rating[, timestamp]; new files are added over time")
    parser.add_argument("--home", type=Path, required=True, help="directory holding models/, the lock and last-run.json")
    parser.add_argument("--test", type=Path, help="Parquet ratings held out for the quality gate and the metrics (e.g. "
                        "prepare.py's test/) instead of --test-fraction of the snapshot; their pairs never train")
    cli.add_spec_options(parser, NightlyConfig, "run settings", skip=("estimator",))
    parameters = cli.add_estimator_options(parser, argv)
    args = cli.parse_args(parser, argv, existing=("snapshot", "test"))
    from dmf.pipeline.nightly import run_nightly  # after the arguments: --help and their errors need no Dask

    config = NightlyConfig(snapshot=args.snapshot, home=args.home, test=args.test, params=cli.spec_values(args, parameters),
                           **cli.spec_values(args, NightlyConfig))
    # the lock first: a second run is refused before it starts a cluster
    with exclusive_lock(args.home / "nightly.lock"), cli.connect(args) as client:
        report = run_nightly(config, client, lock_held=True)
    if report["status"] == "unchanged":
        print(f"unchanged: the snapshot and settings are those of {report['current']}, which stays current "
              f"(--force retrains)")
        return 0
    ranking = report["metrics"]["ranking"]
    rmse = f"test RMSE {report['metrics']['rmse']:.4f}, " if "rmse" in report["metrics"] else ""
    print(f"published {report['version']}: {rmse}"
          f"precision@{args.k} {ranking['precision@k']:.4f}, NDCG@{args.k} {ranking['ndcg@k']:.4f} "
          f"({report['rows']['test']} pairs); {args.home / 'models' / 'current'} -> {report['version']}")
    return 0


if __name__ == "__main__":
    cli.run(main)
