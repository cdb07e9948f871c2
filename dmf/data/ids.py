"""Id vocabularies: external user/item ids <-> contiguous integer indices."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dmf.random import id_hashes

#: Integer ids are looked up in a dense table (``table[id] = index``) when the largest id is
#: below this many times the vocabulary size (plus ``_DENSE_SLACK``): no hash table to build
#: per vocabulary object (0.36 s for ml-20m's users) and 0.03 s per 18 M lookups.
_DENSE_FACTOR = 4
_DENSE_SLACK = 1 << 16


class IdVocabulary:
    """Sorted, unique external ids; an id's index is its position.

    Ids are integers or strings. Sorting makes the mapping depend on the set of ids only,
    never on partitioning or arrival order.
    """

    def __init__(self, ids: pd.Index | np.ndarray | list):
        index = pd.Index(ids)
        if not index.is_unique:
            raise ValueError("vocabulary ids must be unique")
        self.ids = index.sort_values()

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, ids) -> np.ndarray:
        """Indices (int64) of ``ids``; -1 for ids not in the vocabulary."""
        array = np.asarray(ids)
        if array.dtype == object and array.ndim == 1 and len(array) and \
                pd.api.types.infer_dtype(array, skipna=False) == "integer":
            array = array.astype(np.int64)  # integer ids held in an object array are integers
            ids = array
        if array.dtype.kind in "iu" and array.ndim == 1:
            table = self._dense_table()
            if table is not None:
                # negative ids become huge as uint64 and, like ids past the largest, land on
                # the table's last entry, -1
                positions = np.minimum(array.astype(np.int64, copy=False).view(np.uint64), np.uint64(len(table) - 1))
                return table.take(positions.view(np.int64))
        values = pd.Index(ids)
        if len(self.ids) and _kind(values) != _kind(self.ids) and len(values):
            return np.full(len(values), -1, dtype=np.int64)
        return self.ids.get_indexer(values).astype(np.int64, copy=False)

    def _dense_table(self) -> np.ndarray | None:
        """``table[id]`` = index for every id, -1 elsewhere (the last entry, one past the largest
        id, included); None unless the ids are integers from 0 to a bound proportional to the
        vocabulary size. Built once per vocabulary object (per worker, when broadcast)."""
        if "_table" not in self.__dict__:
            ids, table = self.ids, None
            if len(ids) and _kind(ids) == "integer" and ids.min() >= 0 and ids.max() < _DENSE_FACTOR * len(ids) + _DENSE_SLACK:
                table = np.full(int(ids.max()) + 2, -1, dtype=np.int64)
                table[ids.to_numpy(dtype=np.int64)] = np.arange(len(ids), dtype=np.int64)
            self._table = table  # assigned once, complete: threads sharing this object never see half of it
        return self._table

    def __getstate__(self) -> dict:
        # the dense table is rebuilt where it is used, not shipped
        return {"ids": self.ids}

    def id_hashes(self) -> np.ndarray:
        """A stable 64-bit hash per id (uint64), independent of the vocabulary's other ids."""
        return id_hashes(self.ids)

    def extended(self, extra_ids) -> IdVocabulary:
        """A vocabulary whose first ``len(self)`` entries are this one's, then ``extra_ids``.

        Only used for scoring requests; the extension is not sorted after the original ids.
        """
        extended = IdVocabulary.__new__(IdVocabulary)
        extra = pd.Index(extra_ids).difference(self.ids)
        extended.ids = self.ids.append(extra)
        return extended


def _kind(index: pd.Index) -> str:
    return "integer" if pd.api.types.is_integer_dtype(index.dtype) else "text"

