"""Recommend: top-k items for every user (or the listed ones) of a saved model, as Parquet.

Writes OUTPUT (a Parquet directory of user, rank, item, score; atomically), and beside it
OUTPUT.summary.json and OUTPUT.report.html (the catalog coverage). With --similar-items DIR
it also writes, for every item of the catalog, its k most similar items (item, rank,
similar, score; cosine of item factors).
"""

from pathlib import Path

import dmf
from dmf.pipeline import options as cli
from dmf.pipeline.report import write_report
from dmf.storage import atomic_directory, write_json_atomic


def main(argv=None) -> int:
    parser = cli.pipeline_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="model directory")
    parser.add_argument("--output", type=Path, required=True, help="Parquet directory to write")
    parser.add_argument("--k", type=int, default=10, help="items per user")
    parser.add_argument("--exclude", type=Path, help="Parquet ratings (user, item columns) whose (user, item) pairs are "
                        "never recommended, besides the training items the model keeps")
    parser.add_argument("--include-seen", action="store_true",
                        help="allow items a user rated in training (by default they are never recommended)")
    parser.add_argument("--users", type=Path, help="Parquet file with a user column: recommend for these only")
    parser.add_argument("--titles", type=Path,
                        help="MovieLens folder whose item titles are added to the recommendations (column title)")
    parser.add_argument("--similar-items", type=Path,
                        help="also write the k most similar items of every item as Parquet here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    args = cli.parse_args(parser, argv, existing=("model", "exclude", "users", "titles"))
    import dask.dataframe as dd  # after the arguments: --help and their errors need no Dask
    import pandas as pd

    from dmf.scheduler import persist_with_progress
    from dmf.stages.histograms import top_k_reach

    for output in (args.output, args.similar_items):
        if output is not None and output.exists() and not args.overwrite:
            raise FileExistsError(f"{output} already exists; pass --overwrite to replace it")
    timer = cli.Timer()
    model = dmf.load(args.model)
    users = pd.read_parquet(args.users, columns=["user"])["user"] if args.users else None
    with cli.connect(args) as client:
        exclude = dd.read_parquet(args.exclude, columns=["user", "item"]) if args.exclude else None
        with timer("recommend"), atomic_directory(args.output, overwrite=args.overwrite) as staging:
            top_k = model.recommend(args.k, users=users, exclude=exclude, exclude_seen=not args.include_seen,
                                    client=client)
            if args.titles is not None:
                from dmf.datasets import load_items

                titles = load_items(args.titles)[["item", "title"]]
                top_k = top_k.merge(titles.astype({"item": top_k.dtypes["item"]}), on="item", how="left")
            recommendations = persist_with_progress(top_k, client, "top-k")
            recommendations.to_parquet(staging, write_index=False)
            rows = len(recommendations)  # counted from the persisted partitions, not by reading the output back
            reach = top_k_reach(recommendations, len(model.item_ids_), args.k, client=client)
        if args.similar_items is not None:
            with timer("similar items"), atomic_directory(args.similar_items, overwrite=args.overwrite) as staging:
                model.similar_items(k=args.k, client=client).to_parquet(staging, write_index=False)
    summary = cli.summary(args, rows={"recommendations": rows}, top_k=reach, seconds=timer.seconds)
    write_json_atomic(Path(f"{args.output}.summary.json"), summary)
    write_report(Path(f"{args.output}.report.html"), f"dmf recommend: {args.output.name}", summary)
    print(f"wrote {rows} recommendations to {args.output}")
    return 0


if __name__ == "__main__":
    cli.run(main)
