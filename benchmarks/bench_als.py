"""ALS benchmark: dmf against Spark MLlib ALS, ``implicit`` and bare NumPy, on one synthetic split.

Generates MovieLens-shaped ratings with dmf's generator, splits them 90/10 by a hash of
(seed, user, item), writes the split once as Parquet (``~/.cache/dmf-bench``, or
``$DMF_BENCH_DATA``) and runs each system on it in its own subprocess, one after the other:

- ``numpy``: the all-users x all-items score product at the top-k rank, in blocks of users
  (BLAS on ``--threads`` threads), and ``np.argpartition`` of those scores on one thread;
- ``spark`` (needs pyspark and Java 17): ``ALS.fit`` per rank (input cached first, so the time
  is the fit, not the Parquet read), test RMSE, ``recommendForAllUsers(10)`` at the top-k rank;
- ``implicit``: ``AlternatingLeastSquares`` (CG) on the training ratings >= 4, seconds per iteration;
- ``dmf`` on a LocalCluster (``--workers`` processes, 1 thread each): the same ALS-WR
  objective as Spark, dmf's defaults, top-k with the training items excluded,
  ``ImplicitALS``, and optionally seconds per epoch against the number of ratings.

Every measurement is a row (seconds, peak memory summed over all processes, test RMSE, load
average) merged into ``--output``; ``--only SYSTEM`` (re)runs one system into the same file,
``--resume`` skips rows already there. The table printed at the end holds every row of the
file with its ratio to the reference and the issue's target.

    python benchmarks/bench_als.py --quick                       # smoke run, ml-1m scale
    python benchmarks/bench_als.py                               # ml-20m, ranks 10 and 64, all systems
    python benchmarks/bench_als.py --only dmf --scaling 2,5,10,20
    python benchmarks/bench_als.py --scale ml-25m --only dmf --ranks 64 --output benchmarks/results/als-ml-25m.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = ("numpy", "spark", "implicit", "dmf")
TOP_K = 10
#: The issue's targets: (dmf task, variant, reference system, reference task, largest allowed ratio).
TARGETS = [
    ("fit", "als-wr", "spark", "fit", 0.10),
    ("fit", "defaults", "spark", "fit", 0.10),
    ("top-k", "exclude-train", "spark", "top-k", 0.20),
    ("top-k", "exclude-train", "numpy", "product", 2.0),
    ("implicit-iteration", "cg", "implicit", "implicit-iteration", 1.5),
    ("read+fit", "als-wr", "spark", "read+fit", 0.15),
]
PEAK_MEMORY_TARGET_GIB = 8.0
SCALING_TOLERANCE = 0.20
logger = logging.getLogger("bench_als")


# -- arguments ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--scale", default=None, help="synthetic preset: ml-100k, ml-1m, ml-10m, ml-20m (default), ml-25m")
    parser.add_argument("--quick", action="store_true", help="smoke run: ml-1m scale unless --scale is given")
    parser.add_argument("--ranks", default="10,64", help="comma-separated ranks of the explicit fits (default 10,64)")
    parser.add_argument("--topk-rank", type=int, default=None, help="rank of the top-k runs (default 64 if listed, else the largest)")
    parser.add_argument("--iterations", type=int, default=10, help="ALS iterations of every fit (default 10)")
    parser.add_argument("--reg", type=float, default=0.06, help="λ per rating, Spark regParam = dmf reg (default 0.06)")
    parser.add_argument("--implicit-rank", type=int, default=64)
    parser.add_argument("--implicit-reg", type=float, default=0.05)
    parser.add_argument("--implicit-alpha", type=float, default=1.0,
                        help="dmf confidence 1 + alpha·r; implicit gets alpha + 1 on the binarized data, the same confidence")
    parser.add_argument("--implicit-threshold", type=float, default=4.0, help="training ratings >= this are the positives")
    parser.add_argument("--implicit-iterations", type=int, default=None, help="default: --iterations")
    parser.add_argument("--solver", choices=("cholesky", "cg"), default="cholesky",
                        help="dmf solver of the like-for-like fits and the scaling runs (Spark solves exactly, by Cholesky)")
    parser.add_argument("--cg-steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2, help="threads of implicit, NumPy's BLAS and Spark's local[N]")
    parser.add_argument("--workers", type=int, default=2, help="dmf LocalCluster worker processes (1 thread each)")
    parser.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler for dmf (default: LocalCluster)")
    parser.add_argument("--spark-driver-memory", default="12g")
    parser.add_argument("--spark-blas-lib", default="libopenblas.so.0",
                        help="native BLAS for netlib (dev.ludovic.netlib.blas.nativeLib); '' keeps netlib's default")
    parser.add_argument("--scaling", default="",
                        help="dmf only: comma-separated millions of ratings (e.g. 2,5,10,20) for seconds per epoch vs size")
    parser.add_argument("--scaling-iterations", type=int, default=4, help="epochs per scaling fit (the first is not timed)")
    parser.add_argument("--memory-scale", default="",
                        help="dmf only: also fit rank 64 (dmf defaults) on this preset, e.g. ml-25m, for the peak-memory target")
    parser.add_argument("--one-file", action="store_true",
                        help="train on the split's training ratings as one Parquet file of 1 M-row row groups (the layout "
                             "users often have; made once beside the split), and also time read + fit at rank 64")
    parser.add_argument("--spark-python", default=None,
                        help="interpreter of the Spark run (a separate venv with pyspark; default: this one)")
    parser.add_argument("--skip-spark", action="store_true")
    parser.add_argument("--skip-implicit", action="store_true")
    parser.add_argument("--skip-numpy", action="store_true")
    parser.add_argument("--skip-dmf", action="store_true")
    parser.add_argument("--only", choices=SYSTEMS, default=None, help="run one system in this process and merge its rows")
    parser.add_argument("--resume", action="store_true", help="skip measurements whose rows are already in --output")
    parser.add_argument("--data-dir", type=Path, default=common.DEFAULT_DATA_ROOT)
    parser.add_argument("--output", type=Path, default=None, help="results JSON (default benchmarks/results/als-<scale>.json)")
    parser.add_argument("--table-only", action="store_true", help="print the table of --output and exit")
    args = parser.parse_args(argv)
    args.scale = args.scale or ("ml-1m" if args.quick else "ml-20m")
    args.rank_list = [int(rank) for rank in args.ranks.split(",") if rank.strip()]
    if not args.rank_list or min(args.rank_list) < 1:
        parser.error(f"--ranks needs positive integers, got {args.ranks!r}")
    if args.topk_rank is None:
        args.topk_rank = 64 if 64 in args.rank_list else max(args.rank_list)
    args.implicit_iterations = args.implicit_iterations or args.iterations
    args.scaling_sizes = [float(size) for size in args.scaling.split(",") if size.strip()]
    layout = "-one-file" if args.one_file else ""
    args.output = args.output or REPO / "benchmarks" / "results" / f"als-{args.scale}{layout}.json"
    return args


def results_config(args: argparse.Namespace) -> dict:
    """What must agree for rows of one file to be comparable."""
    return {
        "scale": args.scale, "seed": args.seed, "test_fraction": args.test_fraction, "iterations": args.iterations,
        "reg": args.reg, "top_k": TOP_K, "implicit": {"reg": args.implicit_reg, "alpha": args.implicit_alpha,
                                                     "threshold": args.implicit_threshold, "cg_steps": args.cg_steps},
        "threads": args.threads, "dmf_workers": args.workers, "one_file": args.one_file,
    }


def child_arguments(args: argparse.Namespace, system: str) -> list[str]:
    """The command line that reruns this benchmark for one system."""
    python = args.spark_python if system == "spark" and args.spark_python else sys.executable
    command = [python, str(Path(__file__).resolve()), "--only", system, "--scale", args.scale, "--ranks", args.ranks,
               "--topk-rank", str(args.topk_rank), "--iterations", str(args.iterations), "--reg", str(args.reg),
               "--implicit-rank", str(args.implicit_rank), "--implicit-reg", str(args.implicit_reg),
               "--implicit-alpha", str(args.implicit_alpha), "--implicit-threshold", str(args.implicit_threshold),
               "--implicit-iterations", str(args.implicit_iterations), "--cg-steps", str(args.cg_steps),
               "--solver", args.solver,
               "--seed", str(args.seed), "--test-fraction", str(args.test_fraction), "--threads", str(args.threads),
               "--workers", str(args.workers), "--spark-driver-memory", args.spark_driver_memory,
               "--spark-blas-lib", args.spark_blas_lib, "--scaling", args.scaling,
               "--scaling-iterations", str(args.scaling_iterations), "--memory-scale", args.memory_scale,
               "--data-dir", str(args.data_dir),
               "--output", str(args.output)]
    command += ["--resume"] if args.resume else []
    command += ["--one-file"] if args.one_file else []
    command += ["--scheduler", args.scheduler] if args.scheduler else []
    return command


# -- the systems ----------------------------------------------------------------------------
def row(system: str, task: str, rank: int | None, variant: str, measurement: common.Measurement, **fields) -> dict:
    return {"system": system, "task": task, "rank": rank, "variant": variant, **measurement.fields(), **fields}


def run_numpy(args: argparse.Namespace, split: Path, results: common.ResultsFile) -> None:
    """Blocked ``U @ V.T`` over all users x items at the top-k rank, then argpartition of each block."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # BLAS keeps its default thread count (recorded as "blas": [])
        def threadpool_limits(*args, **kwargs):
            return contextlib.nullcontext()

    summary = common.read_split_summary(split)
    rank, block = args.topk_rank, 4096
    if args.resume and results.has(system="numpy", task="product", rank=rank, variant="blas"):
        return
    rng = np.random.default_rng(args.seed)
    user_factors = rng.standard_normal((summary["users"], rank), dtype=np.float32)
    item_factors = rng.standard_normal((summary["items"], rank), dtype=np.float32)
    product_seconds = partition_seconds = 0.0
    with common.Measurement() as measurement:
        for start in range(0, len(user_factors), block):
            with threadpool_limits(args.threads, user_api="blas"):
                started = time.perf_counter()
                scores = user_factors[start:start + block] @ item_factors.T
                product_seconds += time.perf_counter() - started
            started = time.perf_counter()
            np.argpartition(scores, -TOP_K, axis=1)[:, -TOP_K:]
            partition_seconds += time.perf_counter() - started
    shape = f"{len(user_factors)} x {len(item_factors)} x {rank} float32, blocks of {block} users"
    blas = common.numpy_blas()
    results.add_row({**row("numpy", "product", rank, "blas", measurement, shape=shape, threads=args.threads, blas=blas),
                     "seconds": round(product_seconds, 3)})
    results.add_row({**row("numpy", "argpartition", rank, "one-thread", measurement, shape=shape, threads=1),
                     "seconds": round(partition_seconds, 3)})


def run_spark(args: argparse.Namespace, split: Path, results: common.ResultsFile) -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # Spark's own advice: its tasks are the parallelism
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.ml.evaluation import RegressionEvaluator
    from pyspark.ml.recommendation import ALS as SparkALS
    from pyspark.sql import SparkSession

    java_options = f"-Ddev.ludovic.netlib.blas.nativeLib={args.spark_blas_lib}" if args.spark_blas_lib else ""
    builder = (SparkSession.builder.master(f"local[{args.threads}]").appName("dmf-bench-als")
               .config("spark.driver.memory", args.spark_driver_memory).config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false"))
    if java_options:
        builder = builder.config("spark.driver.extraJavaOptions", java_options)
    spark = builder.getOrCreate()
    try:
        spark.sparkContext.setLogLevel("ERROR")
        results.set("native_blas", "spark", spark_native_blas(spark, java_options))
        train_path = str(common.one_file_copy(split) if args.one_file else split / "train")
        train = spark.read.parquet(train_path).cache()
        test = spark.read.parquet(str(split / "test")).cache()
        started = time.perf_counter()
        counts = (train.count(), test.count())
        logger.info("spark: cached %d train and %d test ratings in %.1f s", *counts, time.perf_counter() - started)
        spark_settings = {"master": f"local[{args.threads}]", "driver_memory": args.spark_driver_memory,
                          "java_options": java_options, "OPENBLAS_NUM_THREADS": os.environ["OPENBLAS_NUM_THREADS"],
                          "spark_version": spark.version}
        ranks = sorted(set(args.rank_list) | {args.topk_rank})
        for rank in ranks:
            fit_wanted = rank in args.rank_list and not (args.resume and results.has(system="spark", task="fit", rank=rank, variant="als-wr"))
            top_k_wanted = rank == args.topk_rank and not (args.resume and results.has(system="spark", task="top-k", rank=rank, variant="recommendForAllUsers"))
            if not (fit_wanted or top_k_wanted):
                continue
            estimator = SparkALS(rank=rank, maxIter=args.iterations, regParam=args.reg, userCol="user", itemCol="item",
                                 ratingCol="rating", seed=args.seed, coldStartStrategy="drop")
            logger.info("spark: fitting rank %d", rank)
            with common.Measurement() as measurement:
                model = estimator.fit(train)
            predictions = model.transform(test)
            test_rmse = RegressionEvaluator(metricName="rmse", labelCol="rating", predictionCol="prediction").evaluate(predictions)
            logger.info("spark: rank %d fit %.1f s, test RMSE %.4f", rank, measurement.seconds, test_rmse)
            if rank in args.rank_list:
                results.add_row(row("spark", "fit", rank, "als-wr", measurement, rmse=round(test_rmse, 5),
                                    iterations=args.iterations, reg=args.reg, spark=spark_settings))
            if rank == args.topk_rank:
                with common.Measurement() as measurement:
                    model.recommendForAllUsers(TOP_K).write.format("noop").mode("overwrite").save()
                logger.info("spark: recommendForAllUsers(%d) at rank %d: %.1f s", TOP_K, rank, measurement.seconds)
                results.add_row(row("spark", "top-k", rank, "recommendForAllUsers", measurement, k=TOP_K,
                                    note="Spark does not exclude seen items", spark=spark_settings))
        if args.one_file and not (args.resume and results.has(system="spark", task="read+fit", rank=64, variant="als-wr")):
            train.unpersist()
            estimator = SparkALS(rank=64, maxIter=args.iterations, regParam=args.reg, userCol="user", itemCol="item",
                                 ratingCol="rating", seed=args.seed, coldStartStrategy="drop")
            with common.Measurement() as measurement:
                estimator.fit(spark.read.parquet(train_path))
            logger.info("spark: read + fit rank 64 %.1f s", measurement.seconds)
            results.add_row(row("spark", "read+fit", 64, "als-wr", measurement, iterations=args.iterations,
                                spark=spark_settings))
    finally:
        spark.stop()


def spark_native_blas(spark, java_options: str) -> dict:
    """Whether netlib loaded a native BLAS in Spark's JVM, and which implementation Spark's BLAS uses."""
    jvm = spark.sparkContext._jvm
    facts = {"java_options": java_options}
    try:
        facts["native_class"] = jvm.dev.ludovic.netlib.blas.NativeBLAS.getInstance().getClass().getName()
        facts["native"] = True
    except Exception as error:  # py4j raises its own types; any failure means no native BLAS
        facts["native"] = False
        facts["native_error"] = str(error).splitlines()[0][:300]
    with contextlib.suppress(Exception):
        facts["blas_class"] = jvm.dev.ludovic.netlib.blas.BLAS.getInstance().getClass().getName()
    return facts


def implicit_positives(split: Path, threshold: float):
    """Training ratings >= threshold as a CSR user x item matrix of ones (rows: users with a positive)."""
    import pandas as pd
    import scipy.sparse as sparse

    train = pd.read_parquet(split / "train", columns=["user", "item", "rating"])
    positives = train[train["rating"] >= threshold]
    user_index, users = pd.factorize(positives["user"], sort=True)
    item_index, items = pd.factorize(positives["item"], sort=True)
    values = np.ones(len(positives), dtype=np.float32)
    return sparse.csr_matrix((values, (user_index, item_index)), shape=(len(users), len(items)))


def run_implicit(args: argparse.Namespace, split: Path, results: common.ResultsFile) -> None:
    if args.resume and results.has(system="implicit", task="implicit-iteration", rank=args.implicit_rank, variant="cg"):
        return
    import implicit
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    user_items = implicit_positives(split, args.implicit_threshold)
    # implicit reads the matrix values as confidences c (positives p = 1); dmf uses c = 1 + alpha·r,
    # so with r = 1 the same c is implicit's alpha = 1 + dmf's alpha.
    per_iteration: list[float] = []
    with threadpool_limits(1, user_api="blas"):  # implicit's advice: its own threads are the parallelism
        model = AlternatingLeastSquares(factors=args.implicit_rank, regularization=args.implicit_reg,
                                        alpha=1.0 + args.implicit_alpha, iterations=args.implicit_iterations, use_cg=True,
                                        calculate_training_loss=False, num_threads=args.threads, random_state=args.seed)
        model.cg_steps = args.cg_steps  # not a constructor argument in implicit 0.7
        with common.Measurement() as measurement:
            model.fit(user_items, show_progress=False,
                      callback=lambda iteration, seconds, loss: per_iteration.append(seconds))
    seconds = float(np.mean(per_iteration))
    logger.info("implicit %s: %.2f s per iteration on %d positives", implicit.__version__, seconds, user_items.nnz)
    results.add_row({**row("implicit", "implicit-iteration", args.implicit_rank, "cg", measurement, unit="s/iteration",
                           fit_seconds=round(measurement.seconds, 3), iteration_seconds=[round(s, 3) for s in per_iteration],
                           positives=int(user_items.nnz), users=int(user_items.shape[0]), items=int(user_items.shape[1]),
                           threads=args.threads, implicit_alpha=1.0 + args.implicit_alpha, blas_threads=1),
                     "seconds": round(seconds, 3)})


def run_dmf(args: argparse.Namespace, split: Path, results: common.ResultsFile) -> None:
    import cloudpickle
    import dask.dataframe as dd
    from distributed import Client, LocalCluster, wait

    import dmf

    cloudpickle.register_pickle_by_value(common)  # workers need not have benchmarks/ on their path
    if args.scheduler:
        cluster, client = None, Client(args.scheduler)
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster)

    def cluster_pids() -> set[int]:
        return common.cluster_pids(client)

    def wanted(task: str, rank: int, variant: str) -> bool:
        return not (args.resume and results.has(system="dmf", task=task, rank=rank, variant=variant))

    try:
        results.set("native_blas", "dmf_workers", client.run(common.numpy_blas))
        warm_up_dmf(client)
        if args.one_file:  # dmf.read_ratings splits the file by row groups
            train = client.persist(dmf.read_ratings(common.one_file_copy(split)))
        else:
            train = client.persist(dd.read_parquet(str(split / "train")))
        test = client.persist(dd.read_parquet(str(split / "test")))
        wait([train, test])
        like_spark = like_for_like_variant(args.solver)
        variants = {  # "defaults" is dmf's own defaults whatever they are today (solver included)
            like_spark: dict(reg=args.reg, damping=0.0, bias_damping=0.0, bias_reg=args.reg, biases=False, clip=False,
                             solver=args.solver, cg_steps=args.cg_steps),
            "defaults": {},
        }
        for rank in sorted(set(args.rank_list) | {args.topk_rank}):
            for variant, params in variants.items():
                fit_wanted = rank in args.rank_list and wanted("fit", rank, variant)
                top_k_wanted = rank == args.topk_rank and variant == like_spark and wanted("top-k", rank, "exclude-train")
                if not (fit_wanted or top_k_wanted):
                    continue
                model = dmf.ALS(rank=rank, max_iter=args.iterations, seed=args.seed, **params)
                logger.info("dmf: fitting %r", model)
                with common.Measurement(cluster_pids) as measurement:
                    model.fit(train, validate=False)
                test_rmse = dmf.rmse(model, test)
                logger.info("dmf: rank %d %s fit %.1f s, test RMSE %.4f", rank, variant, measurement.seconds, float(test_rmse))
                if fit_wanted:
                    results.add_row(row("dmf", "fit", rank, variant, measurement, rmse=round(float(test_rmse), 5),
                                        iterations=args.iterations, params=model.get_params(),
                                        epoch_seconds=[round(epoch["seconds"], 3) for epoch in model.history_]))
                if top_k_wanted:
                    with common.Measurement(cluster_pids) as measurement:
                        recommendations = client.persist(model.recommend(TOP_K))  # the model excludes its training items
                        wait(recommendations)
                    n_rows = int(recommendations.map_partitions(len).compute().sum())
                    del recommendations
                    logger.info("dmf: top-%d for all users at rank %d: %.1f s", TOP_K, rank, measurement.seconds)
                    results.add_row(row("dmf", "top-k", rank, "exclude-train", measurement, k=TOP_K, rows=n_rows))
        if args.one_file and wanted("read+fit", 64, like_spark):
            model = dmf.ALS(rank=64, max_iter=args.iterations, seed=args.seed, **variants[like_spark])
            with common.Measurement(cluster_pids) as measurement:
                model.fit(dmf.read_ratings(common.one_file_copy(split)), validate=False)
            logger.info("dmf: read + fit rank 64 %.1f s", measurement.seconds)
            results.add_row(row("dmf", "read+fit", 64, like_spark, measurement, iterations=args.iterations,
                                params=model.get_params()))
        if wanted("implicit-iteration", args.implicit_rank, "cg"):
            model = dmf.ImplicitALS(rank=args.implicit_rank, reg=args.implicit_reg, alpha=args.implicit_alpha,
                                    max_iter=args.implicit_iterations, threshold=args.implicit_threshold, solver="cg",
                                    cg_steps=args.cg_steps, seed=args.seed)
            with common.Measurement(cluster_pids) as measurement:
                model.fit(train, validate=False)
            epochs = [epoch["seconds"] for epoch in model.history_]
            # epoch 1 also builds the blocks; implicit's per-iteration times exclude its setup too
            per_epoch = float(np.mean(epochs[1:] if len(epochs) > 1 else epochs))
            logger.info("dmf: implicit %.2f s per epoch (fit %.1f s)", per_epoch, measurement.seconds)
            results.add_row({**row("dmf", "implicit-iteration", args.implicit_rank, "cg", measurement, unit="s/iteration",
                                   fit_seconds=round(measurement.seconds, 3), iteration_seconds=[round(s, 3) for s in epochs],
                                   positives=model.n_ratings_, params=model.get_params()),
                             "seconds": round(per_epoch, 3)})
        if args.scaling_sizes:
            run_dmf_scaling(args, split, results, client, cluster_pids)
        if args.memory_scale:
            run_dmf_memory(args, results, client, cluster_pids)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def warm_up_dmf(client) -> None:
    """Load (or, in a fresh checkout, compile) dmf's numba kernels on every worker before the clock
    starts: a tiny fit, top-k and implicit fit. The compiled code is cached on disk, as after any
    first run of an installation."""
    import pandas as pd

    import dmf

    rng = np.random.default_rng(0)
    pairs = pd.DataFrame({"user": np.repeat(np.arange(40), 10), "item": rng.integers(0, 400, 400)}).drop_duplicates()
    tiny = pairs.assign(rating=rng.integers(1, 6, len(pairs)).astype(np.float32))
    for model in (dmf.ALS(rank=4, max_iter=2), dmf.ALS(rank=4, max_iter=2, biases=False, clip=False),
                  dmf.ImplicitALS(rank=4, max_iter=2, threshold=4)):
        model.fit(tiny)
        model.recommend(3, exclude=tiny).compute()


def run_dmf_scaling(args, split: Path, results: common.ResultsFile, client, cluster_pids) -> None:
    """Seconds per epoch (rank ``--topk-rank``, ALS-WR) against the number of ratings: every rating
    of a hash sample of the users (train + test), sized to the given millions, so that users
    and ratings grow together as between MovieLens releases. An epoch's time is the mean of
    epochs 2.. (epoch 1 also builds the blocks)."""
    import dask.dataframe as dd
    from distributed import wait

    import dmf

    everything = dd.concat([dd.read_parquet(str(split / "train")), dd.read_parquet(str(split / "test"))])
    total = common.read_split_summary(split)["train_ratings"] + common.read_split_summary(split)["test_ratings"]
    for millions in args.scaling_sizes:
        size = int(millions * 1e6)
        variant = f"{millions:g}M {args.solver}"
        if size > total:
            logger.warning("dmf scaling: %s ratings asked, %d available at %s; skipped", variant, total, args.scale)
            continue
        if args.resume and results.has(system="dmf", task="scaling-epoch", rank=args.topk_rank, variant=variant):
            continue
        subset = everything.map_partitions(_user_subsample, size / total, args.seed + 1, meta=everything._meta)
        subset = client.persist(subset)
        wait(subset)
        model = dmf.ALS(rank=args.topk_rank, max_iter=args.scaling_iterations, seed=args.seed, reg=args.reg, damping=0.0,
                        bias_damping=0.0, bias_reg=args.reg, biases=False, solver=args.solver, cg_steps=args.cg_steps)
        with common.Measurement(cluster_pids) as measurement:
            model.fit(subset, validate=False)
        epochs = [epoch["seconds"] for epoch in model.history_]
        logger.info("dmf scaling: %d ratings, %.2f s per epoch", model.n_ratings_, np.mean(epochs[1:]))
        results.add_row({**row("dmf", "scaling-epoch", args.topk_rank, variant, measurement, unit="s/iteration",
                               ratings=model.n_ratings_, params=model.get_params(), iteration_seconds=[round(s, 3) for s in epochs],
                               fit_seconds=round(measurement.seconds, 3), users=model.user_ids_.size),
                         "seconds": round(float(np.mean(epochs[1:])), 3)})
        del subset


def run_dmf_memory(args, results: common.ResultsFile, client, cluster_pids) -> None:
    """Peak memory (all processes) of a rank-64 fit with dmf's defaults on the ``--memory-scale`` preset."""
    import dask.dataframe as dd
    from distributed import wait

    import dmf

    variant = f"{args.memory_scale} defaults"
    if args.resume and results.has(system="dmf", task="memory-fit", rank=64, variant=variant):
        return
    split = common.prepare_split(args.memory_scale, seed=args.seed, test_fraction=args.test_fraction, root=args.data_dir)
    train = client.persist(dd.read_parquet(str(split / "train")))
    wait(train)
    model = dmf.ALS(rank=64, max_iter=args.iterations, seed=args.seed)
    with common.Measurement(cluster_pids) as measurement:
        model.fit(train, validate=False)
    logger.info("dmf: %s rank 64 fit %.1f s, peak %.2f GiB", args.memory_scale, measurement.seconds, measurement.peak_gib)
    results.add_row(row("dmf", "memory-fit", 64, variant, measurement, ratings=model.n_ratings_,
                        params=model.get_params(), split=common.read_split_summary(split)))
    del train


def like_for_like_variant(solver: str) -> str:
    """Name of dmf's Spark-objective rows: ``als-wr`` (Cholesky, as Spark) or ``als-wr-cg``."""
    return "als-wr" if solver == "cholesky" else f"als-wr-{solver}"


def _user_subsample(part, fraction: float, seed: int):
    """The rows of the users whose hash (with ``seed``) falls below ``fraction``."""
    import pandas as pd

    hashes = pd.util.hash_pandas_object(part["user"], index=False, hash_key=f"dmf-users-{seed:06d}"[:16]).to_numpy()
    return part[hashes < np.uint64(fraction * float(2**64 - 1))]


RUNNERS = {"numpy": run_numpy, "spark": run_spark, "implicit": run_implicit, "dmf": run_dmf}
REQUIREMENTS = {"numpy": [], "spark": ["pyspark"], "implicit": ["implicit", "threadpoolctl"], "dmf": ["dmf"]}


def missing_requirements(system: str) -> list[str]:
    import importlib.util

    return [name for name in REQUIREMENTS[system] if importlib.util.find_spec(name) is None]


# -- the table ------------------------------------------------------------------------------
def annotate(rows: list[dict], scale: str) -> list[dict]:
    """Display rows: ratio to each reference and whether the issue's target is met."""
    by_key = {(r["system"], r["task"], r["rank"]): r for r in rows if r.get("variant") not in ("defaults",)}
    shown = []
    order = {system: i for i, system in enumerate(("spark", "implicit", "numpy", "dmf"))}
    def position(r: dict) -> tuple:
        size = r.get("ratings", 0) if r["task"] == "scaling-epoch" else 0
        return r["task"] == "scaling-epoch", order.get(r["system"], 9), r["task"], r["rank"] or 0, size, r["variant"]

    for r in sorted(rows, key=position):
        ratios, verdicts = [], []
        for task, variant, ref_system, ref_task, limit in TARGETS:
            reference = by_key.get((ref_system, ref_task, r["rank"]))
            matches = r["variant"] == variant or (variant == "als-wr" and r["variant"].startswith("als-wr"))
            if r["system"] == "dmf" and r["task"] == task and matches and reference and reference.get("seconds"):
                ratio = r["seconds"] / reference["seconds"]
                ratios.append(f"{ratio:.2f}x {ref_system}")
                verdicts.append(f"<={limit:g}:{'ok' if ratio <= limit else 'MISS'}")
                if task == "fit" and reference.get("rmse") is not None and r.get("rmse") is not None:
                    verdicts.append(f"rmse:{'ok' if r['rmse'] <= reference['rmse'] else 'MISS'}")
        if r["system"] == "dmf" and r["rank"] == 64 and (
                r["task"] == "memory-fit" or (r["task"] == "fit" and scale == "ml-25m")):
            verdicts.append(f"mem<={PEAK_MEMORY_TARGET_GIB:g}:{'ok' if r['peak_memory_gib'] <= PEAK_MEMORY_TARGET_GIB else 'MISS'}")
        label = r["task"] + ("" if not r.get("variant") else f" ({r['variant']})")
        unit = r.get("unit", "s")
        shown.append({
            "system": r["system"], "task": label, "rank": r["rank"],
            "seconds": f"{r['seconds']:.2f}" + (" /it" if unit == "s/iteration" else ""),
            "ratio": "; ".join(ratios), "target": " ".join(verdicts),
            "rmse": None if r.get("rmse") is None else f"{r['rmse']:.4f}", "peak": f"{r['peak_memory_gib']:.2f}",
        })
    return shown


def scaling_summary(rows: list[dict]) -> list[str]:
    lines = []
    for solver in sorted({r["variant"].split(" ")[-1] for r in rows if r["task"] == "scaling-epoch"}):
        points = sorted((r["ratings"], r["seconds"]) for r in rows
                        if r["task"] == "scaling-epoch" and r["variant"].split(" ")[-1] == solver)
        if len(points) >= 2:
            lines.append(f"[{solver}] " + _scaling_line(points))
    return lines


def _scaling_line(points: list[tuple[int, float]]) -> str:
    per_million = [seconds / (ratings / 1e6) for ratings, seconds in points]
    reference = per_million[-1]
    spread = max(abs(value / reference - 1) for value in per_million)
    text = ", ".join(f"{ratings / 1e6:.1f}M: {seconds:.2f} s ({value:.3f} s/M)" for (ratings, seconds), value in zip(points, per_million))
    return (f"dmf seconds per epoch vs ratings: {text}; largest deviation from linear {spread:.0%} "
            f"(target ±{SCALING_TOLERANCE:.0%}: {'ok' if spread <= SCALING_TOLERANCE else 'MISS'})")


def print_table(document: dict) -> None:
    config, data = document["config"], document.get("data", {})
    print(f"\nALS benchmark, {config['scale']} synthetic: {data.get('train_ratings', '?'):,} train / "
          f"{data.get('test_ratings', '?'):,} test ratings, {data.get('users', '?'):,} users, {data.get('items', '?'):,} items; "
          f"{config['iterations']} iterations, λ={config['reg']}")
    machine = document["machine"]
    print(f"{machine['cpu_model']}, {machine['logical_cores']} cores, {machine['memory_gib']} GiB; "
          f"Spark native BLAS: {document.get('native_blas', {}).get('spark', {}).get('native', 'not run')}")
    columns = [("system", "system", 10), ("task", "task", 34), ("rank", "rank", 6), ("seconds", "seconds", 14),
               ("ratio", "ratio", 24), ("target", "target", 26), ("rmse", "RMSE", 9), ("peak", "peak GiB", 10)]
    print(common.format_table(annotate(document["rows"], config["scale"]), columns))
    for line in scaling_summary(document["rows"]):
        print(line)
    for error in document.get("errors", []):
        print(f"error in {error['system']} at {error['at']}: {error['message'].strip().splitlines()[-1]}")


# -- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for name in ("bench_als", "dmf"):
        logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # dask's config sets it to INFO
    args = parse_args(argv)
    if args.table_only:
        print_table(json.loads(args.output.read_text()))
        return 0
    results = common.ResultsFile(args.output, results_config(args))
    split = common.prepare_split(args.scale, seed=args.seed, test_fraction=args.test_fraction, root=args.data_dir)
    results.document["data"] = {**common.read_split_summary(split), "path": str(split)}
    results.set("native_blas", "numpy_client", common.numpy_blas())
    if args.only:
        missing = missing_requirements(args.only)
        if missing:
            print(f"{args.only}: {', '.join(missing)} not installed; pip install -e '.[bench]'", file=sys.stderr)
            return 2
        try:
            RUNNERS[args.only](args, split, results)
        except Exception:
            results.add_error(args.only, traceback.format_exc())
            raise
        print_table(results.document)
        return 0
    skipped = {"spark": args.skip_spark, "implicit": args.skip_implicit, "numpy": args.skip_numpy, "dmf": args.skip_dmf}
    failures = 0
    for system in SYSTEMS:
        if skipped[system]:
            continue
        missing = [] if system == "spark" and args.spark_python else missing_requirements(system)
        if missing:
            logger.warning("%s skipped: %s not installed (pip install -e '.[bench]')", system, ", ".join(missing))
            continue
        logger.info("running %s", system)
        completed = subprocess.run(child_arguments(args, system), stdout=subprocess.DEVNULL)
        if completed.returncode != 0:
            failures += 1
            logger.error("%s failed with exit code %d; its error is in %s", system, completed.returncode, args.output)
    print_table(json.loads(args.output.read_text()))
    print(f"results: {args.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
