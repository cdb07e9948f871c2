"""Evaluate: RMSE and MAE of a saved model on a Parquet test set, as a Dask reduction, and
ranking metrics (precision, recall, NDCG, MAP at k, MRR, hit rate, coverage) of its top-k
(ranking metrics only for a model whose scores only rank items: ImplicitALS, SVD).

Writes the metrics as JSON to OUTPUT (default: print only) and a report beside it
(OUTPUT with suffix .report.html: the metrics, histograms of the test ratings and of the
predictions), optionally the predictions as Parquet.
"""

from pathlib import Path

import dmf
from dmf.pipeline import options as cli
from dmf.pipeline.report import write_report
from dmf.storage import atomic_directory, write_json_atomic


def main(argv=None) -> int:
    parser = cli.pipeline_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="model directory")
    parser.add_argument("--test", type=Path, required=True, help="Parquet test ratings (user, item, rating)")
    parser.add_argument("--output", type=Path, help="metrics JSON file to write")
    parser.add_argument("--predictions", type=Path, help="also write user, item, prediction as Parquet here")
    parser.add_argument("--k", type=int, default=10, help="ranking metrics at k (0: rating metrics only)")
    parser.add_argument("--exclude", type=Path, help="Parquet ratings never to recommend (for ranking metrics), besides "
                        "the training items the model keeps")
    parser.add_argument("--relevance-threshold", type=float,
                        help="test ratings >= this are relevant (default: every test pair)")
    parser.add_argument("--unknown", choices=["bias", "nan", "drop"], help="override the model's unknown-id policy")
    args = cli.parse_args(parser, argv, existing=("model", "test", "exclude"))
    import dask.dataframe as dd  # after the arguments: --help and their errors need no Dask

    from dmf.stages import histograms as dmf_histograms

    timer = cli.Timer()
    model = dmf.load(args.model)
    if args.unknown:
        model.unknown = args.unknown
    with cli.connect(args) as client:
        test = dmf.read_ratings(args.test)
        implicit = not model.predicts_ratings  # its scores only rank items (preferences, projections)
        if implicit and args.k <= 0:
            raise ValueError(f"an {type(model).__name__} model is evaluated by ranking metrics: pass --k > 0")
        metrics = {}
        if not implicit:
            with timer("evaluate"):
                metrics = dmf.error_totals(model, test, client=client)
        if args.k > 0:
            exclude = dd.read_parquet(args.exclude, columns=["user", "item"]) if args.exclude else None
            with timer("ranking"):
                recommendations = model.recommend(args.k, exclude=exclude, client=client)
                metrics["ranking"] = dmf.ranking_metrics(recommendations, test, k=args.k,
                                                         relevance_threshold=args.relevance_threshold,
                                                         catalog_size=len(model.item_ids_), client=client)
        histograms = None
        if args.output:
            with timer("histograms"):
                histograms = {**dmf_histograms.rating_histograms(model, test, client=client), "of": "test pairs"}
        if args.predictions:
            with timer("predictions"), atomic_directory(args.predictions, overwrite=True) as staging:
                model.predict(test, client=client).to_parquet(staging, write_index=False)
    if "rmse" in metrics:
        print(f"RMSE {metrics['rmse']:.4f}  MAE {metrics['mae']:.4f}  on {metrics['count']} pairs "
              f"({metrics['n_fallback']} by the bias model, {metrics['n_dropped']} dropped)")
    if "ranking" in metrics:
        ranking = metrics["ranking"]
        print(f"precision@{args.k} {ranking['precision@k']:.4f}  recall@{args.k} {ranking['recall@k']:.4f}  "
              f"NDCG@{args.k} {ranking['ndcg@k']:.4f}  MAP@{args.k} {ranking['map@k']:.4f}  MRR {ranking['mrr']:.4f}  "
              f"coverage {ranking['coverage']:.4f} over {ranking['users']} users")
    if args.output:
        summary = cli.summary(args, metrics=metrics, histograms=histograms, seconds=timer.seconds)
        write_json_atomic(args.output, summary)
        write_report(args.output.with_suffix(".report.html"), f"dmf evaluate: {args.model.name}", summary)
    return 0


if __name__ == "__main__":
    cli.run(main)
