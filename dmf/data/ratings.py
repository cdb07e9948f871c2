"""Ingest boundary: turn a ratings source into a validated Dask DataFrame with canonical columns.

This is the only module that renames columns. Everything downstream reads
:mod:`dmf.columns`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dmf import scheduler
from dmf.columns import ITEM, RATING, TIMESTAMP, USER
from dmf.data.duplicates import DUPLICATE_POLICIES, DuplicatePolicy, repeated_pair_hashes, resolve_duplicates
from dmf.frames import ROWS_PER_PARTITION, as_dask_frame

logger = logging.getLogger(__name__)

_EXAMPLES = 3


def read_ratings(
    source: str | os.PathLike | pd.DataFrame | dd.DataFrame,
    *,
    user: str = USER,
    item: str = ITEM,
    rating: str = RATING,
    timestamp: str | None = TIMESTAMP,
    duplicates: DuplicatePolicy = "error",
    npartitions: int | None = None,
) -> dd.DataFrame:
    """Read and validate a ratings table.

    Parameters
    ----------
    source
        A Parquet file or directory of Parquet files, a pandas DataFrame or a Dask DataFrame.
    user, item, rating
        Names of the id and rating columns in ``source``; they are renamed to the canonical
        ``user``, ``item``, ``rating``.
    timestamp
        Name of the timestamp column. The default ``"timestamp"`` is used when present and
        skipped when absent; any other name must exist. ``None`` drops timestamps.
    duplicates
        What to do with repeated (user, item) pairs: ``"error"`` raises a ``ValueError`` with
        their count, ``"latest"`` keeps the row with the largest timestamp (needs a timestamp
        column when there are duplicates), ``"mean"`` keeps the mean rating (and the latest timestamp).
    npartitions
        Partitions for a pandas ``source`` (default: one per million rows).

    Returns
    -------
    dask.dataframe.DataFrame
        Columns ``user`` and ``item`` (integers or strings, as given), ``rating`` (float32) and,
        when present, ``timestamp``. Validation runs eagerly, as one pass over the data: it
        checks the values and finds repeated (user, item) pairs by a 64-bit hash of each pair
        (8 bytes a rating move between workers, no rows). Resolving them moves only the rows of
        those pairs; the rest stay in their partitions. With ``duplicates="error"`` a second
        pass counts the repeated pairs exactly for the message. The returned frame is lazy.

    Raises
    ------
    TypeError
        ``source`` is not a path or DataFrame, or an id column is neither integer nor string.
    ValueError
        A column is missing, the table is empty, ids are missing, ratings are NaN, infinite or
        not numbers, or (with ``duplicates="error"``) (user, item) pairs repeat. The message
        names the column, the count and a few example rows.
    """
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {duplicates!r}")
    if isinstance(source, pd.DataFrame):
        _refuse_mixed_ids(source, [user, item])
        source = _integer_ids_as_integers(source, [user, item])
    footers = _parquet_footers(source) if isinstance(source, (str, os.PathLike)) else None
    if footers is not None and os.path.isdir(source):
        check_file_schemas(source, [user, item, rating], timestamp, footers)
    frame = _as_dask_frame(source, npartitions, footers)
    frame = _select_and_rename(frame, user=user, item=item, rating=rating, timestamp=timestamp)

    parts = frame.to_delayed()  # one read of each partition feeds both checks
    summary = dask.delayed(pd.concat, pure=True)([dask.delayed(_partition_problems, pure=True)(part) for part in parts])
    summary, repeated_hashes = scheduler.compute(
        [summary, repeated_pair_hashes(parts)], scheduler.resolve_client(None), what="ingest",
    )
    _raise_for_problems(summary)

    frame = frame.map_partitions(_coerce_ratings, meta=_coerced_meta(frame._meta))
    return resolve_duplicates(frame, repeated_hashes, duplicates)


def _as_dask_frame(source, npartitions: int | None, footers: dict | None) -> dd.DataFrame:
    if footers is not None:  # a Parquet path
        path = os.fspath(source)
        layout = _parquet_layout(footers)
        if layout.groups_per_partition:
            # large files: partitions of whole row groups, about ROWS_PER_PARTITION rows each,
            # so that every worker reads and validates a share (Dask would read a file as one)
            return dd.read_parquet(path, split_row_groups=layout.groups_per_partition)
        frame = dd.read_parquet(path)
        if layout.coalesced_partitions:
            # many small files: adjacent files read together into partitions of about
            # ROWS_PER_PARTITION rows (no shuffle), one task each, so that neither the read nor
            # any later stage pays Dask's cost per task for every file
            return _coalesced(Path(path), list(footers), layout.coalesced_partitions, frame)
        return frame
    if not isinstance(source, (pd.DataFrame, dd.DataFrame)):
        raise TypeError("ratings source must be a Parquet path, a pandas DataFrame or a Dask DataFrame, "
                        f"got {type(source).__name__}")
    return as_dask_frame(source, "ratings source", npartitions)


def _parquet_files(root: Path) -> list[Path]:
    """The data files of a Parquet directory (not hidden, not ``_metadata``-like), sorted."""
    return sorted(path for path in root.rglob("*") if path.is_file()
                  and not any(part.startswith((".", "_")) for part in path.relative_to(root).parts))


def _parquet_footers(source: str | os.PathLike) -> dict[Path, pq.FileMetaData]:
    """The footer of every data file of a Parquet file or directory, read once for the schema
    check and the partition layout."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"ratings source {os.fspath(source)!r} does not exist")
    return {file: pq.read_metadata(file) for file in ([path] if path.is_file() else _parquet_files(path))}


class _ParquetLayout(NamedTuple):
    groups_per_partition: int | None
    coalesced_partitions: int | None


def _parquet_layout(footers: dict[Path, pq.FileMetaData]) -> _ParquetLayout:
    """How to cut the files of ``footers`` into partitions of about ROWS_PER_PARTITION rows:

    - ``groups_per_partition``: row groups per partition when the largest file holds more than
      1.5 partitions' rows in several row groups (else None);
    - ``coalesced_partitions``: the number of partitions to join the files into when there are
      more than twice as many files as that (many small files; else None).
    """
    largest = max(footers.values(), key=lambda meta: meta.num_rows, default=None)
    if largest is None:
        return _ParquetLayout(None, None)
    if largest.num_row_groups >= 2 and largest.num_rows > 1.5 * ROWS_PER_PARTITION:
        return _ParquetLayout(max(1, round(largest.num_row_groups * ROWS_PER_PARTITION / largest.num_rows)), None)
    wanted = max(1, -(-sum(meta.num_rows for meta in footers.values()) // ROWS_PER_PARTITION))
    return _ParquetLayout(None, wanted if len(footers) > 2 * wanted else None)


def _coalesced(root: Path, files: list[Path], n_partitions: int, frame: dd.DataFrame) -> dd.DataFrame:
    """The ``files`` of directory ``root`` (Dask's reading of it: ``frame``) read in
    ``n_partitions`` runs of adjacent files, one task per run; a directory with subdirectories
    (hive partitions) keeps Dask's reader, joined by ``repartition``."""
    if any(file.parent != root for file in files):
        return frame.repartition(npartitions=n_partitions)
    runs = [[str(file) for file in run] for run in np.array_split(np.array(files, dtype=object), n_partitions)]
    return dd.from_map(_read_files, runs, dtypes=frame.dtypes.to_dict(), meta=frame._meta, enforce_metadata=False)


def _read_files(files: list[str], dtypes: dict) -> pd.DataFrame:
    """Parquet files read and joined into one frame with the column types Dask's reader gives."""
    table = pa.concat_tables([pq.read_table(file) for file in files], promote_options="permissive")
    return table.to_pandas().astype(dtypes)


def check_file_schemas(directory: str | os.PathLike, columns: list[str], timestamp: str | None,
                       footers: dict[Path, pq.FileMetaData]) -> None:
    """Every Parquet file of a directory (``footers``: each file's, see :func:`_parquet_footers`)
    must hold ``columns`` (and ``timestamp`` if any file does) with one kind of type each
    (integer, string, floating): a snapshot that drifts (a new file without timestamps, ids
    that became strings) is refused naming the file."""
    root = Path(directory)
    schemas = {path: meta.schema.to_arrow_schema() for path, meta in footers.items()}
    wanted = list(columns)
    if timestamp is not None and any(timestamp in schema.names for schema in schemas.values()):
        wanted.append(timestamp)
    first_seen: dict[str, tuple[str, Path]] = {}
    for path, schema in schemas.items():
        name = path.relative_to(root)
        for column in wanted:
            if column not in schema.names:
                others = sum(column in other.names for other in schemas.values())
                raise ValueError(f"ratings file {name} has no column {column!r}, which {others} other file(s) of "
                                 f"{root} have (columns of {name}: {schema.names}); fix or move that file")
            kind = _kind_of(schema.field(column).type, numbers_alike=column not in columns[:2])
            if column not in first_seen:
                first_seen[column] = (kind, name)
            elif first_seen[column][0] != kind:
                raise ValueError(f"column {column!r} holds {kind} values in ratings file {name} but "
                                 f"{first_seen[column][0]} values in {first_seen[column][1]}; cast one of them")


def _kind_of(arrow_type: pa.DataType, numbers_alike: bool) -> str:
    """The kind of values a column holds, as coarse as reading it allows: any string type is
    "string", any timestamp unit "timestamp"; integers and floats are one kind ("number")
    where ``numbers_alike`` (ratings, timestamps), distinct kinds for ids."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        if numbers_alike:
            return "number"
        return "integer" if pa.types.is_integer(arrow_type) else "floating-point"
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return "timestamp"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or str(arrow_type) == "string_view":
        return "string"
    return str(arrow_type)


def _select_and_rename(frame: dd.DataFrame, *, user, item, rating, timestamp) -> dd.DataFrame:
    wanted = {user: USER, item: ITEM, rating: RATING}
    if timestamp is not None and (timestamp != TIMESTAMP or timestamp in frame.columns):
        wanted[timestamp] = TIMESTAMP
    missing = [name for name in wanted if name not in frame.columns]
    if missing:
        raise ValueError(
            f"ratings table has no column {missing[0]!r} (columns: {list(frame.columns)}); "
            "name the source columns with read_ratings(user=..., item=..., rating=..., timestamp=...)"
        )
    frame = frame[list(wanted)].rename(columns=wanted)
    for column in (USER, ITEM):
        dtype = frame._meta[column].dtype
        if not (pd.api.types.is_integer_dtype(dtype) or _is_text(dtype)):
            raise TypeError(
                f"column {column!r} must hold integer or string ids, got dtype {dtype}; "
                "cast it before reading"
            )
    return frame


def _is_text(dtype) -> bool:
    return pd.api.types.is_string_dtype(dtype) or dtype == object  # noqa: E721 - a NumPy dtype, not a type


_PROBLEM_META = pd.DataFrame(
    {"problem": pd.Series([], dtype=object), "count": pd.Series([], dtype="int64"),
     "examples": pd.Series([], dtype=object), "rows": pd.Series([], dtype="int64")}
)


def _partition_problems(part: pd.DataFrame) -> pd.DataFrame:
    """One row per kind of problem found in a partition, plus a ``rows`` total."""
    numeric = pd.to_numeric(part[RATING], errors="coerce")
    checks = {
        f"column {USER!r} has missing ids": part[USER].isna().to_numpy(),
        f"column {ITEM!r} has missing ids": part[ITEM].isna().to_numpy(),
        f"column {RATING!r} has NaN or missing ratings": part[RATING].isna().to_numpy(),
        f"column {RATING!r} has values that are not numbers": (
            numeric.isna() & part[RATING].notna()
        ).to_numpy(),
        f"column {RATING!r} has infinite ratings or ratings beyond float32 range": (
            np.abs(numeric.to_numpy(dtype="float64", na_value=0.0)) > np.finfo(np.float32).max
        ),
    }
    for column in (USER, ITEM):
        mixed = _mixed_ids(part[column])
        if mixed is not None:
            checks[f"column {column!r} {_MIXED}"] = mixed
    records = [{"problem": "", "count": 0, "examples": "", "rows": len(part)}]
    for problem, mask in checks.items():
        if mask.any():
            examples = part[mask].head(_EXAMPLES).to_dict("records")
            records.append({"problem": problem, "count": int(mask.sum()), "examples": repr(examples), "rows": 0})
    return pd.DataFrame.from_records(records, columns=list(_PROBLEM_META.columns)).astype(
        _PROBLEM_META.dtypes.to_dict()
    )


_MIXED = "mixes strings with other ids (cast it to one type, e.g. .astype(str))"


def _mixed_ids(ids: pd.Series) -> np.ndarray | None:
    """Mask of the non-string ids of an object column that also holds strings, or None.
    1 and "1" would become one id (and every id a string): dmf refuses rather than merges."""
    if ids.dtype != object or pd.api.types.infer_dtype(ids, skipna=True) in ("string", "integer", "empty"):
        return None
    return (ids.notna() & ~ids.map(lambda value: isinstance(value, str))).to_numpy()


def _integer_ids_as_integers(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Object id columns that hold only integers, as int64 (Dask would turn them into strings)."""
    casts = {c: "int64" for c in columns if c in frame.columns and frame[c].dtype == object
             and pd.api.types.infer_dtype(frame[c], skipna=False) == "integer"}
    return frame.astype(casts) if casts else frame


def _refuse_mixed_ids(frame: pd.DataFrame, columns: list[str]) -> None:
    """Check a pandas source before Dask turns its object columns into strings (which merges 1 and "1")."""
    for column in columns:
        mixed = _mixed_ids(frame[column]) if column in frame.columns else None
        if mixed is not None and mixed.any():
            examples = frame[mixed].head(_EXAMPLES).to_dict("records")
            raise ValueError(f"invalid ratings: column {column!r} {_MIXED}: {int(mixed.sum())} of {len(frame)} rows, "
                             f"e.g. {examples}")


def _raise_for_problems(summary: pd.DataFrame) -> None:
    total_rows = int(summary["rows"].sum())
    if total_rows == 0:
        raise ValueError("ratings table is empty (0 rows); nothing to train on")
    problems = summary[summary["problem"] != ""]
    if problems.empty:
        return
    counts = problems.groupby("problem", sort=False)["count"].sum()
    examples = problems.groupby("problem", sort=False)["examples"].first()
    lines = [f"{problem}: {count} of {total_rows} rows, e.g. {examples[problem]}" for problem, count in counts.items()]
    raise ValueError("invalid ratings: " + "; ".join(lines))


def _coerced_meta(meta: pd.DataFrame) -> pd.DataFrame:
    return meta.astype({RATING: "float32"})


def _coerce_ratings(part: pd.DataFrame) -> pd.DataFrame:
    return part.assign(**{RATING: pd.to_numeric(part[RATING]).astype("float32")})
