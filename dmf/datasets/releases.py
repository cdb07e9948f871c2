"""What is known about each GroupLens MovieLens release: URL, checksum, file layout, size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Layout = Literal["100k", "dat", "csv"]

BASE_URL = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class Release:
    """One MovieLens release.

    Attributes
    ----------
    name
        Release name as GroupLens spells the zip, e.g. ``"ml-10m"``.
    folder
        Top-level folder inside the official zip, e.g. ``"ml-10M100K"``.
    layout
        ``"100k"`` (``u.data``/``u.item``/``u.user``), ``"dat"`` (``::``-separated
        ``ratings.dat``/``movies.dat``/``users.dat``) or ``"csv"`` (``ratings.csv``/``movies.csv``).
    zip_bytes, sha256
        Size and SHA-256 of the official zip; ``None`` for releases GroupLens refreshes
        (``ml-latest``), which cannot be pinned.
    n_users, n_items, n_ratings
        Counts of the published ratings file (``None`` where the release changes over time).
    rating_scale
        Smallest and largest rating; ml-10m and later use half stars.
    """

    name: str
    folder: str
    layout: Layout
    zip_bytes: int | None
    sha256: str | None
    n_users: int | None = None
    n_items: int | None = None
    n_ratings: int | None = None
    rating_scale: tuple[float, float] = (0.5, 5.0)
    rating_step: float = 0.5

    @property
    def url(self) -> str:
        """Official download URL of the release's zip."""
        return f"{BASE_URL}/{self.name}.zip"


RELEASES: dict[str, Release] = {
    release.name: release
    for release in (
        Release("ml-100k", "ml-100k", "100k", 4_924_029,
                "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
                943, 1_682, 100_000, (1.0, 5.0), 1.0),
        Release("ml-1m", "ml-1m", "dat", 5_917_549,
                "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
                6_040, 3_706, 1_000_209, (1.0, 5.0), 1.0),
        Release("ml-10m", "ml-10M100K", "dat", 65_566_137,
                "813c411ccb6122564edfe752e7f80c4dcc5aa25fa94c93622f6877a7ba252862",
                69_878, 10_677, 10_000_054),
        Release("ml-20m", "ml-20m", "csv", 198_702_078,
                "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
                138_493, 26_744, 20_000_263),
        Release("ml-25m", "ml-25m", "csv", 261_978_986,
                "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
                162_541, 59_047, 25_000_095),
        Release("ml-latest-small", "ml-latest-small", "csv", 978_202,
                "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436"),
        Release("ml-latest", "ml-latest", "csv", None, None),
    )
}


def get_release(name: str) -> Release:
    """The :class:`Release` called ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return RELEASES[name]
    except KeyError:
        raise ValueError(f"unknown MovieLens release {name!r}; known: {', '.join(RELEASES)}") from None


#: The train/test splits GroupLens ships with ml-100k (u1.base/u1.test ... ub.base/ub.test).
GROUPLENS_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")


def require_source(source: str | Path) -> None:
    """Raise ``FileNotFoundError`` unless ``source`` is an existing path or a MovieLens release
    name; the message lists the release names (``ml-100`` is a typo of one, not a path)."""
    if (isinstance(source, str) and source in RELEASES) or Path(source).exists():
        return
    raise FileNotFoundError(f"ratings source {source} is neither an existing file or folder nor a MovieLens release "
                            f"name ({', '.join(RELEASES)})")
