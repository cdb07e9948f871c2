"""Model directories: a JSON manifest plus Parquet tables. No pickle; loading needs no cluster.

Layout::

    model/
      manifest.json   format, format_version, dmf_version, estimator, params, counts, rank,
                      global_mean, rating_range, n_blocks, history, files and their SHA-256
      users.parquet   id, bias (float32, when the model has biases), factors (fixed-size
                      list<float32>[rank]); row j is user index j
      items.parquet   the same for items
      seen.parquet    items: list<int32> per user row (the training interactions, CSR as
                      Arrow stores lists); absent when saved with ``seen=False``

Loading checks every table against the manifest (checksum, row count, rank, finiteness)
and names what does not match. Format version 1 directories (no ``seen.parquet``, no
checksums, format name ``dmf.ALS``) still load.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dmf._version import __version__
from dmf.data.ids import IdVocabulary
from dmf.model.fitted import FittedModel, SeenItems
from dmf.storage import atomic_directory, write_json_atomic

FORMAT = "dmf.model"
_LEGACY_FORMATS = ("dmf.ALS",)
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
USERS, ITEMS, SEEN = "users.parquet", "items.parquet", "seen.parquet"


def manifest_of(model: FittedModel) -> dict:
    """The manifest fields that describe ``model`` (everything but its arrays)."""
    return {
        "estimator": model.estimator,
        "dmf_version": __version__,
        "params": model.params,
        "counts": {"users": len(model.user_ids), "items": len(model.item_ids), "ratings": model.n_ratings},
        "rank": model.rank,
        "global_mean": model.global_mean,
        "rating_range": list(model.rating_range),
        "n_blocks": model.n_blocks,
        "history": model.history,
    }


def save_model(model: FittedModel, directory: str | os.PathLike, *, overwrite: bool = False,
               seen: bool = True) -> Path:
    """Write ``model`` to ``directory`` atomically (a temporary directory renamed into place).

    ``seen`` also writes the training interactions (when the model has them), so that a
    loaded model excludes what each user has seen from recommendations.
    """
    tables = {
        USERS: _factor_table(model.user_ids, model.user_factors, model.user_biases),
        ITEMS: _factor_table(model.item_ids, model.item_factors, model.item_biases),
    }
    if seen and model.seen is not None:
        tables[SEEN] = _seen_table(model.seen)
    with atomic_directory(directory, overwrite=overwrite) as temporary:
        checksums = {}
        for name, table in tables.items():
            pq.write_table(table, temporary / name)
            checksums[name] = _sha256(temporary / name)
        write_json_atomic(temporary / MANIFEST, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                                 **manifest_of(model), "files": checksums})
    return Path(directory)


def load_model(directory: str | os.PathLike) -> FittedModel:
    """Read a model directory written by :func:`save_model` (or by dmf's format version 1)."""
    directory = Path(directory)
    manifest = load_manifest(directory)
    try:
        return _load_checked(directory, manifest)
    except (KeyError, TypeError, IndexError, AttributeError) as problem:
        raise ValueError(f"{directory / MANIFEST} is damaged: {type(problem).__name__}: {problem}") from problem


def _load_checked(directory: Path, manifest: dict) -> FittedModel:
    checksums = manifest.get("files", {})
    if manifest.get("format_version", 1) >= 2:
        missing = [name for name in (USERS, ITEMS) if not isinstance(checksums.get(name), str)]
        if missing or (directory / SEEN).exists() and SEEN not in checksums:
            raise ValueError(f"{directory / MANIFEST} lists no checksum for {(missing or [SEEN])[0]}: the manifest "
                             "was edited or damaged")
    elif not isinstance(checksums, dict) or not all(isinstance(v, str) and len(v) == 64 for v in checksums.values()):
        checksums = {}  # format version 1 listed file names here, not checksums
    for name, expected in checksums.items():
        actual = _sha256(directory / name)
        if actual != expected:
            raise ValueError(f"{directory / name} does not match its checksum in {MANIFEST} "
                             f"({actual[:12]}… != {expected[:12]}…): the file was changed or damaged")
    counts, params = manifest["counts"], manifest["params"]
    rank = int(manifest.get("rank", params.get("rank", 0)))
    user_ids, user_factors, user_biases = _read_factor_table(directory / USERS, rank, counts["users"], "users")
    item_ids, item_factors, item_biases = _read_factor_table(directory / ITEMS, rank, counts["items"], "items")
    seen = _read_seen_table(directory / SEEN, counts["users"], counts["items"]) if (directory / SEEN).exists() else None
    model = FittedModel(
        estimator=manifest.get("estimator", "ALS"), params=params, user_ids=IdVocabulary(user_ids),
        item_ids=IdVocabulary(item_ids), user_factors=user_factors, item_factors=item_factors,
        user_biases=user_biases, item_biases=item_biases, global_mean=float(manifest["global_mean"]),
        rating_range=tuple(float(v) for v in manifest["rating_range"]), n_ratings=int(counts["ratings"]),
        n_blocks=int(manifest["n_blocks"]), history=list(manifest["history"]), seen=seen,
    )
    if not np.isfinite([model.global_mean, *model.rating_range]).all():
        raise ValueError(f"{directory / MANIFEST} holds a non-finite global_mean or rating_range")
    model.check_finite()
    return model


def load_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of a model directory, after checking its format and version."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a dmf model directory (no {MANIFEST})")
    manifest = json.loads(path.read_text())
    if manifest.get("format") not in (FORMAT, *_LEGACY_FORMATS):
        raise ValueError(f"{path} holds format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {manifest['format_version']}; this dmf reads up to {FORMAT_VERSION}: upgrade dmf"
        )
    return manifest


def _factor_table(ids: IdVocabulary, factors: np.ndarray, biases: np.ndarray | None) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(factors, dtype=np.float32).reshape(-1))
    columns = {"id": pa.array(ids.ids.to_numpy())}
    if biases is not None:
        columns["bias"] = pa.array(biases.astype(np.float32))
    columns["factors"] = pa.FixedSizeListArray.from_arrays(flat, factors.shape[1])
    return pa.table(columns)


def _read_factor_table(path: Path, rank: int, count: int, side: str) -> tuple[pd.Index, np.ndarray, np.ndarray | None]:
    table = pq.read_table(path)
    if table.num_rows != count:
        raise ValueError(f"{path} has {table.num_rows} rows but the manifest counts {count} {side}")
    factor_type = table.schema.field("factors").type
    width = getattr(factor_type, "list_size", None)
    if width != rank:
        raise ValueError(f"{path} holds factors of length {width}, the manifest says rank {rank}")
    ids = pd.Index(table.column("id").to_numpy(zero_copy_only=False))
    factors = table.column("factors").combine_chunks().flatten().to_numpy().astype(np.float32).reshape(-1, rank)
    biases = table.column("bias").to_numpy().astype(np.float32) if "bias" in table.column_names else None
    return ids, factors, biases


def _seen_table(seen: SeenItems) -> pa.Table:
    offsets = pa.array(seen.indptr.astype(np.int64))
    return pa.table({"items": pa.LargeListArray.from_arrays(offsets, pa.array(seen.items.astype(np.int32)))})


def _read_seen_table(path: Path, n_users: int, n_items: int) -> SeenItems:
    column = pq.read_table(path).column("items").combine_chunks()
    if len(column) != n_users:
        raise ValueError(f"{path} has {len(column)} rows but the manifest counts {n_users} users")
    indptr = np.asarray(column.offsets.to_numpy(), dtype=np.int64)
    items = np.asarray(column.values.to_numpy(), dtype=np.int32)
    items = items[indptr[0] : indptr[-1]]
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"{path} refers to item index {int(items.max())}, but the model has {n_items} items")
    return SeenItems(indptr - indptr[0], items)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
