"""Train: fit an estimator (--estimator als, implicit, nmf, sgd, svd or bpmf) on a Parquet ratings table and
save the model directory.

Writes OUTPUT (a dmf model directory, atomically), OUTPUT.summary.json beside it and
OUTPUT.report.html (charts of the training metric and seconds per epoch and stage).
"""

from pathlib import Path

import dmf
from dmf.pipeline import options as cli
from dmf.pipeline.report import write_report
from dmf.storage import write_json_atomic


def main(argv=None) -> int:
    parser = cli.pipeline_parser(__doc__)
    parser.add_argument("--ratings", type=Path, required=True, help="Parquet file or directory of ratings")
    parser.add_argument("--output", type=Path, required=True, help="model directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    parser.add_argument("--warm-start", type=Path, help="model directory whose user and item factors (and biases) start the fit")
    parser.add_argument("--user-column", default="user", help="user id column in the ratings")
    parser.add_argument("--item-column", default="item", help="item id column in the ratings")
    parser.add_argument("--rating-column", default="rating", help="rating column in the ratings")
    parser.add_argument("--duplicates", choices=["error", "latest", "mean"], default="error",
                        help="repeated (user, item) pairs")
    parser.add_argument("--validation", type=Path, help="Parquet ratings scored after every epoch (validation curve "
                        "in the summary and report)")
    parser.add_argument("--patience", type=int, help="with --validation: stop after this many epochs without a better "
                        "validation score and keep the best epoch")
    parameters = cli.add_estimator_options(parser, argv)
    args = cli.parse_args(parser, argv, existing=("ratings", "warm_start", "validation"))
    estimator_class = cli.estimator_class(args)
    from dmf.stages.histograms import rating_histograms  # after the arguments: --help needs no Dask
    if args.output.exists() and not args.overwrite:
        raise FileExistsError(f"{args.output} already exists; pass --overwrite to replace it")
    timer = cli.Timer()
    with cli.connect(args) as client:
        with timer("ingest"):
            ratings = dmf.read_ratings(args.ratings, user=args.user_column, item=args.item_column,
                                       rating=args.rating_column, duplicates=args.duplicates)
        warm_start = dmf.load(args.warm_start) if args.warm_start else None
        if warm_start is not None and type(warm_start) is not estimator_class:
            raise ValueError(f"--warm-start {args.warm_start} holds a {type(warm_start).__name__} model; this run "
                             f"trains {estimator_class.__name__}: warm-start from a model of the same kind")
        with timer("fit"):
            model = estimator_class(**cli.spec_values(args, parameters)).fit(
                ratings, client=client, validate=False, warm_start=warm_start, validation=args.validation,
                patience=args.patience)
        model.save(args.output, overwrite=args.overwrite)
        with timer("report"):  # the report's histograms of the training ratings and their fitted values
            histograms = {**rating_histograms(model, ratings, client=client), "of": "training ratings"}
    summary = cli.summary(args, rows={"ratings": model.n_ratings_, "users": len(model.user_ids_),
                                      "items": len(model.item_ids_)}, history=model.history_, seconds=timer.seconds,
                          histograms=histograms)
    write_json_atomic(Path(f"{args.output}.summary.json"), summary)
    write_report(Path(f"{args.output}.report.html"), f"dmf train: {args.output.name}", summary)
    metric = next((f" {k} {v:.4f}" for k, v in model.history_[-1].items() if k.startswith("train_")), "")
    print(f"saved {args.output}: {type(model).__name__}{metric} after {len(model.history_)} epochs")
    return 0


if __name__ == "__main__":
    cli.run(main)
