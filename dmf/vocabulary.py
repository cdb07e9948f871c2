"""Id vocabularies: external user/item ids <-> contiguous integer indices."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


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
        values = pd.Index(ids)
        if len(self.ids) and _kind(values) != _kind(self.ids) and len(values):
            return np.full(len(values), -1, dtype=np.int64)
        return self.ids.get_indexer(values).astype(np.int64, copy=False)

    def id_hashes(self) -> np.ndarray:
        """A stable 64-bit hash per id (uint64), independent of the vocabulary's other ids."""
        return stable_id_hashes(self.ids)

    def extended(self, extra_ids) -> "IdVocabulary":
        """A vocabulary whose first ``len(self)`` entries are this one's, then ``extra_ids``.

        Only used for scoring requests; the extension is not sorted after the original ids.
        """
        extended = IdVocabulary.__new__(IdVocabulary)
        extra = pd.Index(extra_ids).difference(self.ids)
        extended.ids = self.ids.append(extra)
        return extended


def _kind(index: pd.Index) -> str:
    return "integer" if pd.api.types.is_integer_dtype(index.dtype) else "text"


def stable_id_hashes(ids: pd.Index) -> np.ndarray:
    """64-bit hashes of ids that depend on each id alone (integers: the value itself)."""
    if pd.api.types.is_integer_dtype(ids.dtype):
        return ids.to_numpy().astype(np.uint64)
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little") for v in ids),
        dtype=np.uint64,
        count=len(ids),
    )
