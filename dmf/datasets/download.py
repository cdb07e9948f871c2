"""Fetch a MovieLens zip into a local cache: download, verify size and SHA-256, unpack atomically.

The cache of a release is the directory ``<data_home>/<name>/``. It only ever appears complete:
the zip is downloaded to a temporary file, verified, unpacked into a temporary directory
beside the target, and that directory is renamed into place with a ``.dmf-fetch.json``
marker recording the URL and checksum. A zip that fails verification is deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

from dmf.datasets.releases import get_release

logger = logging.getLogger(__name__)

MARKER = ".dmf-fetch.json"
_CHUNK = 1 << 20


def default_data_home() -> Path:
    """Cache directory: ``$DMF_DATA_HOME`` if set, else ``~/dmf_data``."""
    return Path(os.environ.get("DMF_DATA_HOME", Path.home() / "dmf_data")).expanduser()


def fetch_movielens(
    name: str,
    data_home: str | os.PathLike | None = None,
    *,
    url: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    timeout: float = 60.0,
) -> Path:
    """Path of the unpacked release ``name``, downloading the official zip if it is not cached.

    Parameters
    ----------
    name
        Release name, e.g. ``"ml-100k"``, ``"ml-20m"`` (see :data:`dmf.datasets.RELEASES`).
    data_home
        Cache directory (default :func:`default_data_home`). A zip placed by hand at
        ``<data_home>/<name>.zip`` is verified and unpacked without any download.
    url, sha256, size
        Override the official URL, SHA-256 (hex) and size in bytes, e.g. for a mirror.
        Releases without pinned values (``ml-latest``) are accepted with a warning.
    timeout
        Seconds to wait for the server to answer.

    Returns
    -------
    pathlib.Path
        The release's folder, e.g. ``<data_home>/ml-100k/ml-100k`` (the zip's own top folder).

    Raises
    ------
    ConnectionError
        The server could not be reached; the message names the URL and where to put the zip.
    ValueError
        The downloaded or hand-placed zip has the wrong size or SHA-256; it is deleted and
        nothing is left in the cache.
    """
    release = get_release(name)
    home = Path(data_home) if data_home is not None else default_data_home()
    target = home / release.name
    if (target / MARKER).exists():
        logger.info("using cached %s at %s", release.name, target)
        return target / release.folder
    url = url or release.url
    expected_sha = sha256 if sha256 is not None else release.sha256
    expected_size = size if size is not None else release.zip_bytes
    home.mkdir(parents=True, exist_ok=True)
    manual_zip = home / f"{release.name}.zip"
    if manual_zip.exists():
        logger.info("verifying %s placed by hand", manual_zip)
        archive, from_download = manual_zip, False
    else:
        archive, from_download = _download(url, home, release.name, manual_zip, timeout), True
    try:
        digest = _verify(archive, url, expected_size, expected_sha)
        _unpack(archive, target, {"name": release.name, "url": url, "sha256": digest,
                                  "bytes": archive.stat().st_size, "fetched_at": time.time()})
    except BaseException:
        archive.unlink(missing_ok=True)
        raise
    if from_download:
        archive.unlink(missing_ok=True)
    folder = target / release.folder
    if not folder.is_dir():
        raise ValueError(f"{url} holds no top-level folder {release.folder!r}; see {target}")
    return folder


def _download(url: str, home: Path, name: str, manual_zip: Path, timeout: float) -> Path:
    partial = home / f".{name}.zip.part-{uuid.uuid4().hex}"
    logger.info("downloading %s to %s", url, home)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, _CHUNK)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        reason = f"HTTP {error.code} {error.reason}" if isinstance(error, urllib.error.HTTPError) else getattr(
            error, "reason", error)
        raise ConnectionError(
            f"could not download {url}: {reason}. If this machine is offline, download the zip "
            f"elsewhere and place it at {manual_zip} (it is verified and unpacked on the next call)"
        ) from error
    return partial


def _verify(archive: Path, url: str, expected_size: int | None, expected_sha: str | None) -> str:
    actual_size = archive.stat().st_size
    digest = hashlib.sha256()
    with open(archive, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    actual_sha = digest.hexdigest()
    if expected_size is not None and actual_size != expected_size:
        raise ValueError(f"{url} gave {actual_size} bytes, expected {expected_size} (sha256 {actual_sha}); "
                         "the file was deleted")
    if expected_sha is not None and actual_sha != expected_sha.lower():
        raise ValueError(f"{url} has sha256 {actual_sha}, expected {expected_sha}; the file was deleted")
    if expected_sha is None:
        logger.warning("%s has no pinned checksum; accepting sha256 %s", url, actual_sha)
    return actual_sha


def unpack_zip(archive: str | os.PathLike, target: str | os.PathLike, marker: dict | None = None) -> Path:
    """Unpack ``archive`` into ``target`` atomically (temporary directory, then rename).

    Members with absolute paths or ``..`` are refused. An existing ``target`` is returned as
    it is when it holds the marker file; otherwise ``FileExistsError``.
    """
    target = Path(target)
    if (target / MARKER).exists():
        return target
    _unpack(Path(archive), target, marker or {"archive": str(archive)})
    return target


def _unpack(archive: Path, target: Path, marker: dict) -> None:
    if target.exists():
        raise FileExistsError(f"{target} exists but was not written by dmf (no {MARKER}); remove it")
    temporary = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    temporary.mkdir(parents=True)
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.namelist():
                if member.startswith(("/", "\\")) or ".." in Path(member).parts:
                    raise ValueError(f"{archive} has an unsafe member path {member!r}; not unpacking")
            bundle.extractall(temporary)
        (temporary / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        os.rename(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.info("unpacked %s into %s", archive.name, target)
