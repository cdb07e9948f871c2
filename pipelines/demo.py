"""Demo: fit blocked ALS on MovieLens ml-100k (u1.base), report test RMSE, write top-10.

Runs on a LocalCluster (or ``--scheduler``). Uses ``../shared/data/movielens/ml-100k`` when
present and generated ratings of the same shape otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ML100K = REPO.parent / "shared" / "data" / "movielens" / "ml-100k"
COLUMNS = ["user", "item", "rating", "timestamp"]


def load_split(ml100k: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    if (ml100k / "u1.base").exists():
        read = lambda name: pd.read_csv(ml100k / name, sep="\t", names=COLUMNS)  # noqa: E731
        return read("u1.base"), read("u1.test"), f"MovieLens ml-100k u1.base/u1.test from {ml100k}"
    rng = np.random.default_rng(0)
    users, items = rng.integers(1, 944, 100_000), rng.zipf(1.3, 100_000) % 1682 + 1
    taste = rng.normal(size=(944, 5)) @ rng.normal(size=(5, 1683))
    ratings = np.clip(np.round(3.5 + 0.6 * taste[users, items] + rng.normal(0, 0.8, 100_000)), 1, 5)
    frame = pd.DataFrame({"user": users, "item": items, "rating": ratings, "timestamp": np.arange(100_000)})
    frame = frame.drop_duplicates(["user", "item"])
    test = frame.sample(frac=0.2, random_state=0)
    return frame.drop(test.index), test, f"generated ratings ({ml100k} not found)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_ML100K, help="ml-100k directory (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=REPO / "demo-output", help="output directory (default: %(default)s)")
    parser.add_argument("--scheduler", help="address of a running scheduler, e.g. tcp://host:8786 (default: start a LocalCluster)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from distributed import Client, LocalCluster

    import dmf

    logging.getLogger("distributed").setLevel(logging.WARNING)

    train, test, source = load_split(args.data)
    print(f"data: {source}: {len(train)} training and {len(test)} test ratings")
    cluster = None if args.scheduler else LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
    with Client(args.scheduler or cluster) as client:
        print(f"dashboard: {client.dashboard_link}")
        started = time.perf_counter()
        model = dmf.ALS().fit(train)
        print(f"fit: {model!r} in {time.perf_counter() - started:.1f} s")
        metrics = dmf.error_totals(model, test)
        print(f"test RMSE {metrics['rmse']:.4f}, MAE {metrics['mae']:.4f} on {metrics['count']} pairs "
              f"({metrics['n_fallback']} predicted by the bias model)")
        model.save(args.output / "model", overwrite=True)
        recommendations = model.recommend(10)  # the model excludes what each user rated in training
        from dmf.storage import atomic_directory

        with atomic_directory(args.output / "recommendations", overwrite=True) as temporary:
            recommendations.to_parquet(temporary)
        print(pd.read_parquet(args.output / "recommendations").head(10).to_string(index=False))
    if cluster is not None:
        cluster.close()
    print(f"wrote {args.output / 'model'} and {args.output / 'recommendations'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
