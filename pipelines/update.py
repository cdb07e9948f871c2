"""Incremental update between nightly retrains: fold in the users (and new items) with ratings
in snapshot files that are new since the current version, gate on their held-out pairs,
and publish models/v{N} atomically through the nightly's machinery (same home, same lock).

The model's parameters and the split settings (test fraction, split seed, duplicates) are
the published version's, so that the nightly's held-out pairs stay held out.
Runs in seconds at MovieLens scale; the next nightly retrains everything.

Exit codes: 0 published or unchanged (no new file), 3 refused by the quality gate (the current
version stays), 1 error (one line on stderr; also when another run holds the lock).
"""

from pathlib import Path

from dmf.pipeline import options as cli
from dmf.pipeline.config import NightlyConfig
from dmf.pipeline.home import exclusive_lock


def main(argv=None) -> int:
    parser = cli.pipeline_parser(__doc__)
    parser.add_argument("--snapshot", type=Path, required=True,
                        help="directory of Parquet files with user, item, rating[, timestamp]; new files are added over time")
    parser.add_argument("--home", type=Path, required=True, help="the nightly's home: models/, the lock, last-run.json")
    cli.add_spec_options(parser, NightlyConfig, "run settings",
                         skip=("force", "test_fraction", "split_seed", "duplicates", "relevance_threshold", "estimator"))
    args = cli.parse_args(parser, argv, existing=("snapshot",))
    from dmf.pipeline.update import run_update  # after the arguments: --help and their errors need no Dask

    config = NightlyConfig(snapshot=args.snapshot, home=args.home, **cli.spec_values(args, NightlyConfig))
    with exclusive_lock(args.home / "nightly.lock"), cli.connect(args) as client:
        report = run_update(config, client, lock_held=True)
    if report["status"] == "unchanged":
        print(f"unchanged: no snapshot file is new since {report['current']}")
        return 0
    published = f"{report['published_metrics']['rmse']:.4f}" if report["published_metrics"] else "none"
    print(f"published {report['version']}: folded in {report['folded']['users']} users and "
          f"{report['folded']['items']} items from {len(report['new_files'])} new file(s); held-out RMSE "
          f"{report['metrics']['rmse']:.4f} on {report['metrics']['count']} pairs (published model: {published}); "
          f"{args.home / 'models' / 'current'} -> {report['version']}")
    return 0


if __name__ == "__main__":
    cli.run(main)
