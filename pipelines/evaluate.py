"""Evaluate: RMSE and MAE of a saved model on a Parquet test set, as a Dask reduction.

Writes the metrics as JSON to OUTPUT (default: print only), optionally the predictions as
Parquet.
"""

from pathlib import Path

import dmf
from dmf import cli
from dmf.storage import atomic_directory, write_json_atomic


def main(argv=None) -> int:
    parser = cli.pipeline_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="model directory")
    parser.add_argument("--test", type=Path, required=True, help="Parquet test ratings (user, item, rating)")
    parser.add_argument("--output", type=Path, help="metrics JSON file to write")
    parser.add_argument("--predictions", type=Path, help="also write user, item, prediction as Parquet here")
    parser.add_argument("--unknown", choices=["bias", "nan", "drop"], help="override the model's unknown-id policy")
    args = cli.parse_args(parser, argv)
    timer = cli.Timer()
    model = dmf.ALS.load(args.model)
    if args.unknown:
        model.unknown = args.unknown
    with cli.connect(args) as client:
        test = dmf.read_ratings(args.test)
        with timer("evaluate"):
            metrics = dmf.error_totals(model, test, client=client)
        if args.predictions:
            with timer("predictions"), atomic_directory(args.predictions, overwrite=True) as staging:
                model.predict(test, client=client).to_parquet(staging, write_index=False)
    print(f"RMSE {metrics['rmse']:.4f}  MAE {metrics['mae']:.4f}  on {metrics['count']} pairs "
          f"({metrics['n_fallback']} by the bias model, {metrics['n_dropped']} dropped)")
    if args.output:
        write_json_atomic(args.output, cli.summary(args, metrics=metrics, seconds=timer.seconds))
    return 0


if __name__ == "__main__":
    cli.run(main)
