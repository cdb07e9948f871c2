"""Atomic output directories and JSON files: nothing half-written is ever visible."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path``; rename it to ``path`` on success.

    On an exception the temporary directory is removed and ``path`` is untouched. With
    ``overwrite=True`` an existing ``path`` is replaced (moved aside, then deleted, after
    the new directory is in place); without it an existing ``path`` raises
    ``FileExistsError`` before anything is written.
    """
    target = Path(path)
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    temporary.mkdir()
    try:
        yield temporary
        fsync_tree(temporary)  # the contents are on disk before the rename makes them visible
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    replaced = None
    if target.exists() or target.is_symlink():
        replaced = target.parent / f".{target.name}.old-{uuid.uuid4().hex}"
        os.rename(target, replaced)
    os.rename(temporary, target)
    fsync_directory(target.parent)
    if replaced is not None:
        if replaced.is_dir() and not replaced.is_symlink():
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            replaced.unlink()  # a file or a symbolic link that stood at the target


def write_json_atomic(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` as indented JSON via a temporary file and an atomic rename."""
    target = Path(path)
    temporary = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    with open(temporary, "w") as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    fsync_directory(target.parent)


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a directory's entries (renames, new files) to disk."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory below ``root`` (inclusive) to disk: what survives a power
    loss after the rename that publishes it."""
    for directory, _, files in os.walk(root):
        for name in files:
            descriptor = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        fsync_directory(directory)


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
