"""Raw ratings -> validated, canonical, partitioned Parquet plus a train/test split.

Output layout (the directory appears only when complete)::

    <output>/ratings/part.00000.parquet ...   all validated ratings
    <output>/train/part.00000.parquet ...     training ratings
    <output>/test/part.00000.parquet ...      test ratings
    <output>/items.parquet, users.parquet     MovieLens metadata, when the source has it
    <output>/summary.json                     parameters, row counts, timings, versions

Every Parquet file has the canonical columns ``user``, ``item``, ``rating`` (float32) and,
when the source has one, ``timestamp``. Each partition is written by the worker that holds
it; only counts and id sets come back to the client.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dmf.columns import ITEM, RATING, TIMESTAMP, USER
from dmf.data.splits import IS_TEST, mark_random, mark_temporal
from dmf.datasets._text import DEFAULT_BLOCKSIZE
from dmf.datasets.movielens import grouplens_split, load_movielens
from dmf.datasets.releases import RELEASES, require_source
from dmf.datasets.synthetic import generate_ratings, synthetic_spec
from dmf.datasets.validation import MOVIELENS_SCALE, ValidatedRatings, validate_ratings
from dmf.storage import atomic_directory, write_json_atomic

logger = logging.getLogger(__name__)

SplitKind = Literal["random", "temporal", "grouplens"]
FORMAT_VERSION = 1


def prepare_dataset(
    output: str | os.PathLike,
    source: str | os.PathLike | None = None,
    *,
    synthetic: str | None = None,
    synthetic_overrides: dict | None = None,
    seed: int = 0,
    split: SplitKind = "random",
    test_fraction: float | None = None,
    test_count: int | None = None,
    grouplens: str = "u1",
    min_train: int = 1,
    rating_scale: tuple[float, float] | None = None,
    columns: dict[str, str | None] | None = None,
    npartitions: int | None = None,
    blocksize: int = DEFAULT_BLOCKSIZE,
    data_home: str | os.PathLike | None = None,
    validate: bool | None = None,
    overwrite: bool = False,
) -> dict:
    """Validate ratings from ``source`` (or a synthetic preset) and write them with a split.

    Parameters
    ----------
    output
        Directory to create (see the module docstring for its layout).
    source
        MovieLens folder, zip or release name; a CSV file (header row; columns named by
        ``columns``); or a Parquet file or folder. Exclusive with ``synthetic``.
    synthetic, synthetic_overrides
        Preset of :func:`dmf.datasets.generate_ratings` (``"ml-100k"`` .. ``"ml-25m"``, ``"netflix"``) and
        :class:`~dmf.datasets.SyntheticSpec` fields to override.
    seed
        Seed of the synthetic data and of the random split.
    split
        ``"random"`` (``test_fraction``, default 0.2), ``"temporal"`` (each user's latest
        ``test_count`` ratings, or latest ``test_fraction``) or ``"grouplens"`` (ml-100k's
        own ``grouplens`` files, ``u1`` .. ``u5``, ``ua``, ``ub``).
    min_train
        Ratings each user keeps in train in a temporal split.
    rating_scale
        Valid (low, high) ratings; default the release's or preset's scale, else 0.5 to 5.
    columns
        Source column names for CSV and Parquet: keys ``user``, ``item``, ``rating``, ``timestamp``.
    npartitions
        Partitions of synthetic data (default one per million ratings).
    blocksize
        Bytes per partition when reading text files.
    validate
        Run :func:`~dmf.datasets.validate_ratings` (two passes over the data plus a duplicate
        check). Default: for every source except synthetic data, which is valid by
        construction (no duplicates, ratings on the scale; tested in ``tests/test_synthetic.py``).
    overwrite
        Replace an existing ``output``.

    Returns
    -------
    dict
        The summary also written to ``summary.json``.

    Raises
    ------
    ValueError
        Invalid ratings (count and examples in the message) or inconsistent parameters;
        nothing is written.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    # absolute on the client: workers of an external cluster do not share its working directory
    output = Path(output).resolve()
    if source is not None and os.path.exists(source):
        source = Path(source).resolve()
    if (source is None) == (synthetic is None):
        raise ValueError("pass exactly one of source (a path or release name) or synthetic (a preset name)")
    if split != "temporal" and test_count is not None:
        raise ValueError("test_count applies to split='temporal' only")
    if split == "random" and test_fraction is None:
        test_fraction = 0.2
    if split == "temporal" and test_fraction is None and test_count is None:
        test_count = 1
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; pass overwrite=True (--overwrite) to replace it")

    names = {"user": USER, "item": ITEM, "rating": RATING, "timestamp": TIMESTAMP, **(columns or {})}
    loaded = _load_source(source, synthetic, synthetic_overrides or {}, seed, npartitions, blocksize, data_home,
                          id_columns=(names["user"], names["item"]))
    scale = tuple(rating_scale) if rating_scale is not None else loaded["scale"]
    timings["load_seconds"] = time.perf_counter() - started

    checkpoint = time.perf_counter()
    if validate is None:
        validate = loaded["kind"] != "synthetic"
    if not validate and any(names[key] not in (key, None) for key in names):
        raise ValueError("columns can only be renamed with validation on; pass validate=True")
    if validate:
        validated = validate_ratings(loaded["ratings"], rating_scale=scale, **names)
    else:
        validated = ValidatedRatings(loaded["ratings"], input_rows=-1, rating_scale=scale)
    frames: list[tuple[dd.DataFrame, list[tuple[str, str]]]]
    if split == "grouplens":
        if loaded["folder"] is None:
            raise ValueError("split='grouplens' needs the ml-100k folder, zip or release name as source")
        base, test = grouplens_split(loaded["folder"], grouplens)
        frames = [
            (validated.ratings, [("ratings", "all")]),
            (validate_ratings(base, rating_scale=scale).ratings, [("train", "all")]),
            (validate_ratings(test, rating_scale=scale).ratings, [("test", "all")]),
        ]
    elif split == "random":
        frames = [(mark_random(validated.ratings, test_fraction, seed),
                   [("ratings", "all"), ("train", "train"), ("test", "test")])]
    elif split == "temporal":
        frames = [(mark_temporal(validated.ratings, test_count=test_count, test_fraction=test_fraction,
                                 min_train=min_train), [("ratings", "all"), ("train", "train"), ("test", "test")])]
    else:
        raise ValueError(f"split must be 'random', 'temporal' or 'grouplens', got {split!r}")
    timings["validate_seconds"] = time.perf_counter() - checkpoint

    checkpoint = time.perf_counter()
    with atomic_directory(output, overwrite=overwrite) as staging:
        written = write_partitioned(frames, staging)
        for name in ("items", "users"):
            if loaded.get(name) is not None:
                pq.write_table(pa.Table.from_pandas(loaded[name], preserve_index=False), staging / f"{name}.parquet")
        timings["write_seconds"] = time.perf_counter() - checkpoint
        timings["total_seconds"] = time.perf_counter() - started
        summary = _summary(loaded, validated.input_rows, written, scale, timings, locals_=dict(
            seed=seed, split=split, test_fraction=test_fraction, test_count=test_count,
            grouplens=grouplens if split == "grouplens" else None, min_train=min_train,
            columns=names, npartitions=npartitions, blocksize=blocksize, validated=validate))
        write_json_atomic(staging / "summary.json", summary)
    logger.info("prepared %s: %d ratings (%d train, %d test) in %.1f s", output, written["rows"]["ratings"],
                written["rows"]["train"], written["rows"]["test"], timings["total_seconds"])
    return summary



def _load_source(source, synthetic, overrides, seed, npartitions, blocksize, data_home, id_columns) -> dict:
    if synthetic is not None:
        spec = synthetic_spec(synthetic, **overrides)
        return {"ratings": generate_ratings(spec, seed=seed, npartitions=npartitions), "scale": spec.rating_scale,
                "folder": None, "kind": "synthetic", "description": {"preset": synthetic, **asdict(spec)}}
    path = Path(source)
    is_release_name = isinstance(source, str) and source in RELEASES and not path.exists()
    if is_release_name or path.is_dir() and not _is_parquet_folder(path) or path.suffix == ".zip":
        movielens = load_movielens(source, data_home=data_home, blocksize=blocksize)
        release = RELEASES.get(movielens.path.name) or next(
            (r for r in RELEASES.values() if r.folder == movielens.path.name), None)
        scale = release.rating_scale if release is not None else MOVIELENS_SCALE
        return {"ratings": movielens.ratings, "scale": scale, "folder": movielens.path, "kind": "movielens",
                "items": movielens.items, "users": movielens.users,
                "description": {"path": str(movielens.path), "layout": movielens.layout}}
    require_source(source)
    if path.suffix in (".csv", ".tsv", ".txt"):
        ratings, kind = _read_csv(path, blocksize, id_columns), "csv"
    else:
        ratings, kind = dd.read_parquet(path), "parquet"
    return {"ratings": ratings, "scale": MOVIELENS_SCALE, "folder": None, "kind": kind,
            "description": {"path": str(path)}}


def _read_csv(path: Path, blocksize: int, id_columns: tuple[str, str]) -> dd.DataFrame:
    """A CSV with a header; numeric id columns are read as nullable Int64 so that a missing id
    is reported by validation (with its count) instead of turning the column into floats."""
    separator = "\t" if path.suffix == ".tsv" else ","
    sample = dd.read_csv(path, sep=separator, blocksize=blocksize)
    numeric_ids = {column: "Int64" for column in id_columns
                   if column in sample.columns and pd.api.types.is_numeric_dtype(sample._meta[column])}
    return dd.read_csv(path, sep=separator, blocksize=blocksize, dtype=numeric_ids) if numeric_ids else sample


def _is_parquet_folder(path: Path) -> bool:
    return any(path.glob("*.parquet")) and not any((path / name).exists() for name in ("u.data", "ratings.dat",
                                                                                        "ratings.csv"))


def write_partitioned(frames: list[tuple[dd.DataFrame, list[tuple[str, str]]]], directory: Path) -> dict:
    """Write every partition of each frame as ``<directory>/<target>/part.NNNNN.parquet``.

    ``frames`` pairs a Dask DataFrame with its targets: ``(name, "all" | "train" | "test")``;
    ``"train"``/``"test"`` select rows by the ``is_test`` column, which is not written.
    Returns ``{"rows": {target: count}, "users": n, "items": n}``, distinct users and items
    counted over the ``"all"`` targets.
    """
    tasks = []
    for frame, targets in frames:
        for name, _ in targets:
            (directory / name).mkdir(exist_ok=True)
        write = dask.delayed(_write_partition, pure=False)
        tasks += [write(part, index, str(directory), targets, dask_key_name=f"write-parquet-{id(frame)}-{index}")
                  for index, part in enumerate(frame.to_delayed())]
    results = dask.compute(*tasks)
    rows: dict[str, int] = {}
    users, items = [], []
    for counts, part_users, part_items in results:
        for name, count in counts.items():
            rows[name] = rows.get(name, 0) + count
        users.append(part_users)
        items.append(part_items)
    return {"rows": rows, "users": len(np.unique(np.concatenate(users))) if users else 0,
            "items": len(np.unique(np.concatenate(items))) if items else 0}


def _write_partition(part: pd.DataFrame, index: int, directory: str, targets: list[tuple[str, str]]):
    counts = {}
    users = items = np.array([], dtype=np.int64)
    for name, which in targets:
        rows = part if which == "all" else part[part[IS_TEST] == (which == "test")]
        rows = rows.drop(columns=[IS_TEST], errors="ignore").reset_index(drop=True)
        table = pa.Table.from_pandas(rows, preserve_index=False).replace_schema_metadata(None)
        pq.write_table(table, os.path.join(directory, name, f"part.{index:05d}.parquet"))
        counts[name] = len(rows)
        if which == "all":
            users, items = rows[USER].unique(), rows[ITEM].unique()
    return counts, _plain_array(users), _plain_array(items)


def _plain_array(values) -> np.ndarray:
    """A NumPy array of ids (nullable integer ids have no missing values after validation)."""
    if isinstance(values, np.ndarray):
        return values
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.to_numpy(dtype=np.int64)
    return np.asarray(values, dtype=object)


def _summary(loaded: dict, input_rows: int, written: dict, scale, timings: dict, locals_: dict) -> dict:
    import distributed

    from dmf._version import __version__

    rows = written["rows"]
    if input_rows < 0:  # not validated: nothing was dropped
        input_rows = rows.get("ratings", 0)
    return {
        "format_version": FORMAT_VERSION,
        "source": {"kind": loaded["kind"], **loaded["description"]},
        "parameters": {**locals_, "rating_scale": list(scale)},
        "rows": {"input": input_rows, "duplicates_dropped": input_rows - rows.get("ratings", 0), **rows},
        "users": written["users"],
        "items": written["items"],
        "timings": {key: round(value, 3) for key, value in timings.items()},
        "versions": {"dmf": __version__, "dask": dask.__version__, "distributed": distributed.__version__,
                     "pandas": pd.__version__, "pyarrow": pa.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }
