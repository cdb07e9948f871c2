"""Model directories: a JSON manifest plus Parquet tables of ids, factors and biases. No pickle.

Layout::

    model/
      manifest.json   format, format_version, dmf_version, params, counts, global_mean,
                      rating_range, history (per epoch: epoch, train_rmse, seconds)
      users.parquet   id, bias (float32), factors (fixed-size list<float32>[rank])
      items.parquet   same for items
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dmf.storage import atomic_directory, write_json_atomic

FORMAT = "dmf.ALS"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TABLES = {"users": "users.parquet", "items": "items.parquet"}


def factor_table(ids: pd.Index, factors: np.ndarray, biases: np.ndarray | None) -> pa.Table:
    rank = factors.shape[1]
    flat = pa.array(np.ascontiguousarray(factors, dtype=np.float32).reshape(-1))
    columns = {"id": pa.array(ids.to_numpy())}
    if biases is not None:
        columns["bias"] = pa.array(biases.astype(np.float32))
    columns["factors"] = pa.FixedSizeListArray.from_arrays(flat, rank)
    return pa.table(columns)


def read_factor_table(path: Path, rank: int) -> tuple[pd.Index, np.ndarray, np.ndarray | None]:
    table = pq.read_table(path)
    ids = pd.Index(table.column("id").to_numpy(zero_copy_only=False))
    factors = table.column("factors").combine_chunks().flatten().to_numpy().astype(np.float32).reshape(-1, rank)
    biases = table.column("bias").to_numpy().astype(np.float32) if "bias" in table.column_names else None
    return ids, factors, biases


def save_model(directory: str | os.PathLike, manifest: dict, tables: dict[str, pa.Table], overwrite: bool) -> Path:
    """Write ``manifest`` and ``tables`` (keys of :data:`TABLES`) atomically to ``directory``."""
    with atomic_directory(directory, overwrite=overwrite) as temporary:
        for name, table in tables.items():
            pq.write_table(table, temporary / TABLES[name])
        write_json_atomic(
            temporary / MANIFEST,
            {"format": FORMAT, "format_version": FORMAT_VERSION, "files": TABLES, **manifest},
        )
    return Path(directory)


def load_manifest(directory: str | os.PathLike) -> dict:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a dmf model directory (no {MANIFEST})")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} holds format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {manifest['format_version']}; this dmf reads up to {FORMAT_VERSION}: upgrade dmf"
        )
    return manifest
