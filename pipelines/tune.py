"""Tune: search an estimator's parameters on the cluster (dmf.model_selection) and write the
results and the best setting as a config file that train.py and nightly.py accept.

The search space is a TOML file (--space) with a [grid] table of parameter lists ("none" for
None), e.g.

    [grid]
    rank = [16, 32, 64]
    reg = [0.02, 0.05, 0.1, 0.2]

Every other estimator parameter takes its option's value (--max-iter 10, or --config).
The ratings are read and split once; each fold's blocks are built once and shared by every
setting (ALS, ImplicitALS). Writes OUTPUT (a directory, atomically): results.parquet and
results.csv (one row per setting and fold: parameters, fold, validation metrics, epochs,
seconds), summary.csv (one row per setting, best first), best.toml (estimator and parameters
of the best setting, for --config) and summary.json.
"""

import json
import tomllib
from pathlib import Path

from dmf.model.params import param_specs
from dmf.pipeline import options as cli
from dmf.storage import atomic_directory


def main(argv=None) -> int:
    parser = cli.pipeline_parser(__doc__)
    parser.add_argument("--ratings", type=Path, required=True, help="Parquet file or directory of ratings")
    parser.add_argument("--space", type=Path, required=True, help="TOML search space: a [grid] table of lists")
    parser.add_argument("--output", type=Path, required=True, help="directory to write the results to")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--splits", choices=["kfold", "holdout", "temporal", "per-user"], default="kfold",
                        help="kfold: --folds disjoint folds of the pairs; holdout: --test-fraction of the pairs; "
                        "temporal: each user's latest --test-fraction; per-user: --test-count random ratings per user")
    parser.add_argument("--folds", type=int, default=3, help="folds of --splits kfold")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="test share of holdout and temporal splits")
    parser.add_argument("--test-count", type=int, default=10, help="test ratings per user of --splits per-user")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the random splits")
    parser.add_argument("--metric", help="rmse, mae, ndcg@K or precision@K (default: rmse, or ndcg@10 for models "
                        "whose scores only rank)")
    parser.add_argument("--relevance-threshold", type=float, help="test ratings >= this are relevant for ndcg/precision")
    parser.add_argument("--parallelism", type=int, default=2, help="settings fitted at the same time")
    parser.add_argument("--patience", type=int, help="early stopping: epochs without a better validation score")
    parser.add_argument("--n-iter", type=int, help="random search: this many settings drawn from the grid")
    parameters = cli.add_estimator_options(parser, argv)
    args = cli.parse_args(parser, argv, existing=("ratings", "space"))
    from dmf.model_selection import Holdout, KFold, PerUser, Temporal, grid_search  # after the arguments: no Dask for --help

    if args.output.exists() and not args.overwrite:
        raise FileExistsError(f"{args.output} already exists; pass --overwrite to replace it")
    estimator_class = cli.estimator_class(args)
    grid = _grid(args.space, estimator_class)
    splits = {"kfold": lambda: KFold(args.folds, args.split_seed), "holdout": lambda: Holdout(args.test_fraction,
              args.split_seed), "temporal": lambda: Temporal(test_fraction=args.test_fraction),
              "per-user": lambda: PerUser(args.test_count, args.split_seed)}[args.splits]()
    fixed = cli.spec_values(args, parameters)
    with cli.connect(args) as client:
        search = grid_search(estimator_class(**fixed), grid, args.ratings, splits=splits, metric=args.metric,
                             parallelism=args.parallelism, patience=args.patience, n_iter=args.n_iter,
                             relevance_threshold=args.relevance_threshold, refit=False, seed=args.split_seed,
                             client=client)
    best = {**fixed, **search.best_params}
    with atomic_directory(args.output, overwrite=args.overwrite) as staging:
        search.table.to_parquet(staging / "results.parquet", index=False)
        search.table.to_csv(staging / "results.csv", index=False)
        search.summary.to_csv(staging / "summary.csv", index=False)
        (staging / "best.toml").write_text(_config(args.estimator, estimator_class, best))
        summary = cli.summary(args, metric=search.metric, higher_is_better=search.higher_is_better,
                              best_params=search.best_params, best_score=float(search.summary.loc[0, "mean"]),
                              settings=len(search.settings), seconds=search.seconds)
        (staging / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"best of {len(search.settings)} settings by {search.metric}: "
          f"{', '.join(f'{k}={v}' for k, v in search.best_params.items())} "
          f"({search.summary.loc[0, 'mean']:.4f}); {search.seconds:.1f} s; wrote {args.output}/best.toml")
    return 0


def _grid(path: Path, estimator_class: type) -> dict:
    with open(path, "rb") as handle:
        space = tomllib.load(handle)
    grid = space.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"{path} needs a [grid] table of parameter lists, e.g. rank = [16, 32]")
    grid = {name: [None if isinstance(v, str) and v.lower() == "none" else v for v in values]
            if isinstance(values, list) else values for name, values in grid.items()}
    known = {spec.name for spec in param_specs(estimator_class)}
    unknown = sorted(set(grid) - known)
    if unknown:
        raise ValueError(f"{path}: {estimator_class.__name__} has no parameter {', '.join(unknown)} "
                         f"(parameters: {', '.join(sorted(known))})")
    return grid


def _config(estimator: str, estimator_class: type, params: dict) -> str:
    """TOML of ``--estimator`` and every parameter that differs from the class default."""
    lines = [f'estimator = "{estimator}"']
    for spec in param_specs(estimator_class):
        value = params.get(spec.name, spec.default)
        if value == spec.default:
            continue
        if value is None:
            lines.append(f'{spec.name} = "none"')
        elif isinstance(value, bool):
            lines.append(f"{spec.name} = {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f'{spec.name} = "{value}"')
        else:
            lines.append(f"{spec.name} = {value!r}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    cli.run(main)
