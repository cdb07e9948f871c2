"""Loaders for every GroupLens MovieLens layout: ratings as a Dask DataFrame, items and users.

Layouts (see :mod:`dmf.datasets.releases`):

- ``100k``: ``u.data`` (tab separated), ``u.item`` (latin-1, ``|`` separated, 19 genre
  flags), ``u.user``;
- ``dat`` (ml-1m, ml-10m): ``ratings.dat``, ``movies.dat``, ``users.dat``, ``::`` separated;
  ml-1m is latin-1 and ml-10m UTF-8 (text is decoded as UTF-8, falling back to latin-1);
- ``csv`` (ml-20m, ml-25m, ml-latest, ml-latest-small): ``ratings.csv``, ``movies.csv`` with
  headers, LF or CRLF line endings.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import dask.dataframe as dd
import pandas as pd

from dmf.columns import ITEM, USER
from dmf.datasets._text import DEFAULT_BLOCKSIZE, read_delimited_ratings
from dmf.datasets.download import default_data_home, unpack_zip
from dmf.datasets.releases import GROUPLENS_SPLITS, RELEASES, Layout

GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)
_NO_GENRE = {"unknown", "(no genres listed)", ""}
_RATINGS_FILE = {"100k": "u.data", "dat": "ratings.dat", "csv": "ratings.csv"}


@dataclass
class MovieLens:
    """A loaded MovieLens release.

    Attributes
    ----------
    ratings
        Dask DataFrame ``user, item`` (int64), ``rating`` (float64), ``timestamp`` (int64,
        Unix seconds), not yet validated (pass it to :func:`dmf.read_ratings`).
    items
        pandas DataFrame ``item`` (int64), ``title`` (str), ``genres`` (list of str; empty
        when the release lists none), plus ``release_date``, ``video_release_date`` and
        ``imdb_url`` for ml-100k.
    users
        pandas DataFrame ``user`` plus the release's attributes (ml-100k: ``age``, ``gender``,
        ``occupation``, ``zip_code``; ml-1m: ``gender``, ``age`` (group code),
        ``occupation`` (name), ``zip_code``), or ``None`` when the release has no user file.
    path
        The folder the files were read from.
    layout
        ``"100k"``, ``"dat"`` or ``"csv"``.
    """

    ratings: dd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None
    path: Path
    layout: Layout


def load_movielens(
    source: str | os.PathLike,
    *,
    data_home: str | os.PathLike | None = None,
    blocksize: int = DEFAULT_BLOCKSIZE,
) -> MovieLens:
    """Load a MovieLens release from a folder, an official zip, or by name.

    Parameters
    ----------
    source
        A folder holding the release's files, a GroupLens zip (unpacked once into
        ``data_home``), or a release name such as ``"ml-100k"`` (fetched with
        :func:`dmf.datasets.fetch_movielens`).
    data_home
        Cache directory for zips and fetched releases (default: ``$DMF_DATA_HOME`` or ``~/dmf_data``).
    blocksize
        Bytes of the ratings file per partition.

    Returns
    -------
    MovieLens
        Ratings as a partitioned Dask DataFrame, items and users as small pandas frames.
        The ratings file is read by the workers, so it must be on storage they share.
    """
    folder = resolve_movielens_folder(source, data_home=data_home)
    layout = detect_layout(folder)
    return MovieLens(
        ratings=load_ratings(folder, blocksize=blocksize),
        items=load_items(folder),
        users=load_users(folder),
        path=folder,
        layout=layout,
    )


def resolve_movielens_folder(source: str | os.PathLike, *, data_home: str | os.PathLike | None = None) -> Path:
    """The folder holding a release's files for a folder, zip or release name ``source``."""
    path = Path(source)
    if path.is_dir():
        return _descend(path)
    if path.is_file() and zipfile.is_zipfile(path):
        home = Path(data_home) if data_home is not None else default_data_home()
        target = unpack_zip(path, home / f"{path.stem}-unzipped", {"archive": str(path.resolve())})
        return _descend(target)
    if isinstance(source, str) and source in RELEASES:
        from dmf.datasets.download import fetch_movielens

        return fetch_movielens(source, data_home)
    raise FileNotFoundError(
        f"MovieLens source {os.fspath(source)!r} is neither a folder, a zip nor a release name "
        f"({', '.join(RELEASES)})"
    )


def _descend(folder: Path) -> Path:
    """``folder`` itself or its single subfolder, whichever holds a ratings or movies file."""
    if _has_release_files(folder):
        return folder
    candidates = [child for child in sorted(folder.iterdir()) if child.is_dir() and _has_release_files(child)]
    if len(candidates) == 1:
        return candidates[0]
    raise FileNotFoundError(
        f"{folder} holds no MovieLens files (u.data, ratings.dat, ratings.csv, movies.dat or movies.csv)"
    )


def _has_release_files(folder: Path) -> bool:
    names = ("u.data", "u.item", "ratings.dat", "movies.dat", "ratings.csv", "movies.csv")
    return any((folder / name).exists() for name in names)


def detect_layout(folder: str | os.PathLike) -> Layout:
    """``"100k"``, ``"dat"`` or ``"csv"`` from the files present in ``folder``."""
    folder = Path(folder)
    if (folder / "u.data").exists() or (folder / "u.item").exists():
        return "100k"
    if (folder / "ratings.dat").exists() or (folder / "movies.dat").exists():
        return "dat"
    if (folder / "ratings.csv").exists() or (folder / "movies.csv").exists():
        return "csv"
    raise FileNotFoundError(f"{folder} holds no MovieLens ratings or movies file")


def load_ratings(folder: str | os.PathLike, *, blocksize: int = DEFAULT_BLOCKSIZE,
                 file: str | None = None) -> dd.DataFrame:
    """Ratings of the release in ``folder`` (or its ratings-format ``file``, e.g. ``u1.base``).

    See :class:`MovieLens` for the schema.
    """
    folder = Path(folder)
    layout = detect_layout(folder)
    path = folder / (file or _RATINGS_FILE[layout])
    if not path.exists():
        raise FileNotFoundError(f"ratings file {path} does not exist (layout {layout!r})")
    separator = {"100k": "\t", "dat": "::", "csv": ","}[layout]
    return read_delimited_ratings(path, separator=separator, header=layout == "csv", blocksize=blocksize)


def load_items(folder: str | os.PathLike) -> pd.DataFrame:
    """Items (movies) of the release in ``folder``; see :class:`MovieLens` for the schema."""
    folder = Path(folder)
    layout = detect_layout(folder)
    if layout == "100k":
        flags = [f"genre_{index}" for index in range(len(GENRES_100K))]
        frame = pd.read_csv(
            io.StringIO(_read_text(folder / "u.item")), sep="|", header=None,
            names=[ITEM, "title", "release_date", "video_release_date", "imdb_url", *flags],
            dtype={"title": str, "release_date": str, "video_release_date": str, "imdb_url": str},
            keep_default_na=False,
        )
        marks = frame[flags].to_numpy(dtype=bool)
        genres = [[name for name, set_ in zip(GENRES_100K, row) if set_ and name not in _NO_GENRE] for row in marks]
        frame = frame.drop(columns=flags).assign(genres=genres)
        return frame[[ITEM, "title", "genres", "release_date", "video_release_date", "imdb_url"]]
    if layout == "dat":
        rows = [line.split("::") for line in _read_text(folder / "movies.dat").splitlines() if line.strip()]
        frame = pd.DataFrame(
            {ITEM: [int(row[0]) for row in rows], "title": ["::".join(row[1:-1]) for row in rows],
             "genre_text": [row[-1] for row in rows]}
        )
    else:
        frame = pd.read_csv(io.StringIO(_read_text(folder / "movies.csv")), dtype={"title": str, "genres": str},
                            keep_default_na=False)
        frame = frame.rename(columns={"movieId": ITEM, "genres": "genre_text"})
    genres = [[g for g in text.split("|") if g not in _NO_GENRE] for text in frame["genre_text"]]
    frame = frame.assign(genres=genres)[[ITEM, "title", "genres"]]
    return frame.astype({ITEM: "int64", "title": str})


def load_users(folder: str | os.PathLike) -> pd.DataFrame | None:
    """Users of the release in ``folder``, or ``None`` when it has no user file."""
    folder = Path(folder)
    layout = detect_layout(folder)
    if layout == "100k" and (folder / "u.user").exists():
        return pd.read_csv(io.StringIO(_read_text(folder / "u.user")), sep="|", header=None,
                           names=[USER, "age", "gender", "occupation", "zip_code"],
                           dtype={"gender": str, "occupation": str, "zip_code": str})
    if layout == "dat" and (folder / "users.dat").exists():
        text = _read_text(folder / "users.dat").replace("::", "\t")
        frame = pd.read_csv(io.StringIO(text), sep="\t", header=None,
                            names=[USER, "gender", "age", "occupation", "zip_code"],
                            dtype={"gender": str, "zip_code": str})
        names = pd.Series(OCCUPATIONS_1M)
        frame["occupation"] = frame["occupation"].map(names).fillna(frame["occupation"].astype(str))
        return frame
    return None


def _read_text(path: Path) -> str:
    """File contents decoded as UTF-8, or latin-1 when they are not valid UTF-8 (ml-100k, ml-1m)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")




def grouplens_split(folder: str | os.PathLike, name: str) -> tuple[dd.DataFrame, dd.DataFrame]:
    """GroupLens' predefined ml-100k split ``name`` (``u1`` .. ``u5``, ``ua``, ``ub``) as (train, test).

    Reads ``<name>.base`` and ``<name>.test`` from the ml-100k ``folder``; frames are
    unvalidated, in canonical columns.
    """
    if name not in GROUPLENS_SPLITS:
        raise ValueError(f"unknown GroupLens split {name!r}; ml-100k has {', '.join(GROUPLENS_SPLITS)}")
    if detect_layout(folder) != "100k":
        raise ValueError(f"GroupLens splits {GROUPLENS_SPLITS} exist only in ml-100k; {folder} is not ml-100k")
    return load_ratings(folder, file=f"{name}.base"), load_ratings(folder, file=f"{name}.test")
