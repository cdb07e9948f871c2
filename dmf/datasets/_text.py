"""Partitioned reading of delimited ratings files: one Dask task per byte range of the file.

A line belongs to the byte range in which it starts, so ranges can be read independently on
the workers and the file never passes through the client. ``::`` separators (GroupLens
``.dat`` files) are turned into tabs before parsing so that pandas' C parser can be used.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf.columns import ITEM, RATING, TIMESTAMP, USER

RATING_COLUMNS = [USER, ITEM, RATING, TIMESTAMP]
DEFAULT_BLOCKSIZE = 64 * 2**20
_META = pd.DataFrame({
    USER: pd.Series([], dtype="int64"), ITEM: pd.Series([], dtype="int64"),
    RATING: pd.Series([], dtype="float64"), TIMESTAMP: pd.Series([], dtype="int64"),
})


def read_delimited_ratings(
    path: str | os.PathLike,
    *,
    separator: str,
    header: bool,
    blocksize: int = DEFAULT_BLOCKSIZE,
) -> dd.DataFrame:
    """Read a ``user, item, rating, timestamp`` text file as a Dask DataFrame.

    Parameters
    ----------
    path
        The file; it must be readable by the workers under the same path.
    separator
        Field separator: ``"\\t"``, ``"::"`` or ``","``.
    header
        Whether the first line is a header (skipped; the columns are taken by position).
    blocksize
        Bytes per partition.

    Returns
    -------
    dask.dataframe.DataFrame
        Canonical columns ``user``, ``item`` (int64), ``rating`` (float64), ``timestamp`` (int64).
        A partition with unparsable values keeps them as parsed (float ids with NaN, text
        ratings) so that :func:`dmf.read_ratings` can report them with examples.
    """
    path = Path(path)
    size = path.stat().st_size
    start = 0
    if header:
        with open(path, "rb") as stream:
            start = len(stream.readline())
    blocksize = max(1, int(blocksize))
    ranges = [(str(path), begin, min(begin + blocksize, size)) for begin in range(start, size, blocksize)]
    if not ranges:
        ranges = [(str(path), start, start)]
    return dd.from_map(
        _read_byte_range,
        ranges,
        separator=separator,
        meta=_META,
        label="read-ratings-text",
        enforce_metadata=False,
    )


def _read_byte_range(block: tuple[str, int, int], separator: str) -> pd.DataFrame:
    path, start, end = block
    with open(path, "rb") as stream:
        if start > 0:
            stream.seek(start - 1)
            if stream.read(1) != b"\n":
                stream.readline()
        begin = stream.tell()
        data = stream.read(end - begin) if begin < end else b""
        if data and not data.endswith(b"\n"):
            data += stream.readline()
    return parse_ratings_bytes(data, separator, origin=f"{path} bytes {begin}-{begin + len(data)}")


def parse_ratings_bytes(data: bytes, separator: str, origin: str) -> pd.DataFrame:
    """Parse lines of ``user<sep>item<sep>rating<sep>timestamp`` into canonical columns."""
    if separator == "::":
        data, separator = data.replace(b"::", b"\t"), "\t"
    if not data.strip():
        return _META.copy()
    try:
        frame = pd.read_csv(io.BytesIO(data), sep=separator, header=None, names=RATING_COLUMNS,
                            engine="c", skip_blank_lines=True)
    except (pd.errors.ParserError, ValueError) as error:
        raise ValueError(f"cannot parse ratings in {origin}: {error}") from error
    for column in (USER, ITEM, TIMESTAMP):
        values = frame[column]
        if pd.api.types.is_float_dtype(values) and not values.isna().any() and (values % 1 == 0).all():
            frame[column] = frame[column].astype("int64")
        elif pd.api.types.is_integer_dtype(frame[column]):
            frame[column] = frame[column].astype("int64")
    if pd.api.types.is_numeric_dtype(frame[RATING]):
        frame[RATING] = frame[RATING].astype(np.float64)
    return frame
