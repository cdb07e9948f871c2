"""The fitted model: the one value every estimator produces and every stage consumes.

Training returns a :class:`FittedModel`; warm start reads one; persistence writes and reads
one; prediction, top-k, metrics and the nightly run take one. It holds no Dask objects and
no client, so it can be sent to workers, saved and loaded without a cluster.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dmf.data.ids import IdVocabulary


@dataclass(frozen=True, eq=False)
class SeenItems:
    """What each training user interacted with, in CSR form.

    User row ``u`` (its index in the model's user vocabulary) saw the item indices
    ``items[indptr[u]:indptr[u + 1]]``. These are the pairs of the training ratings (for
    implicit feedback with a ``threshold`` also those below it, which the model did not train
    on but the user did rate), plus any added with :meth:`with_pairs` (the nightly adds its
    held-out pairs: rated, so never to recommend).

    Attributes
    ----------
    indptr : ndarray of int64, shape (n_users + 1,)
    items : ndarray of int32, shape (n_interactions,)
    """

    indptr: np.ndarray
    items: np.ndarray

    def __post_init__(self) -> None:
        if self.indptr.ndim != 1 or len(self.indptr) == 0 or self.indptr[0] != 0 or self.indptr[-1] != len(self.items):
            raise ValueError(f"seen items: row pointers must start at 0 and end at {len(self.items)} interactions")
        if len(self.indptr) > 1 and np.any(np.diff(self.indptr) < 0):
            raise ValueError("seen items: row pointers must not decrease")

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def concatenate(cls, parts: list) -> SeenItems:
        """One CSR over all users from per-block ``(row pointers, items)`` parts, in block order."""
        counts = np.concatenate([np.diff(indptr) for indptr, _ in parts])
        indptr = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(indptr, np.concatenate([items for _, items in parts]).astype(np.int32, copy=False))

    def with_pairs(self, user_rows: np.ndarray, item_rows: np.ndarray) -> SeenItems:
        """These seen items plus (user row, item index) pairs, appended to each row (a pair
        already present may repeat; exclusion does not mind)."""
        user_rows = np.asarray(user_rows, dtype=np.int64)
        order = np.argsort(user_rows, kind="stable")
        user_rows, item_rows = user_rows[order], np.asarray(item_rows, dtype=np.int32)[order]
        old_counts = np.diff(self.indptr)
        extra_counts = np.bincount(user_rows, minlength=self.n_users)
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(old_counts + extra_counts, out=indptr[1:])
        items = np.empty(indptr[-1], dtype=np.int32)
        old_rows = np.repeat(np.arange(self.n_users), old_counts)
        items[indptr[old_rows] + (np.arange(len(self.items)) - self.indptr[old_rows])] = self.items
        within = np.arange(len(user_rows)) - np.searchsorted(user_rows, user_rows, side="left")
        items[indptr[user_rows] + old_counts[user_rows] + within] = item_rows
        return SeenItems(indptr, items)

    def of_rows(self, user_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CSR ``(indptr, items)`` of the given user rows, in that order; rows that are -1 or
        past the trained users have nothing seen."""
        user_rows = np.asarray(user_rows, dtype=np.int64)
        known = (user_rows >= 0) & (user_rows < self.n_users)
        starts = np.where(known, self.indptr[np.where(known, user_rows, 0)], 0)
        counts = np.where(known, self.indptr[np.where(known, user_rows, 0) + 1] - starts, 0)
        indptr = np.zeros(len(user_rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        positions = np.repeat(starts - indptr[:-1], counts) + np.arange(indptr[-1], dtype=np.int64)
        return indptr, self.items[positions]


@dataclass(frozen=True, eq=False)
class FittedModel:
    """A fitted factorization ``r̂(u, i) = μ + b_u + b_i + p_u · q_i``.

    Attributes
    ----------
    estimator : str
        Name of the estimator class that produced it (``"ALS"``, ``"ImplicitALS"``, ...).
    params : dict
        That estimator's parameters (``get_params()``), JSON values.
    user_ids, item_ids : IdVocabulary
        Row ``j`` of the factor matrices belongs to id ``j`` of the vocabulary.
    user_factors, item_factors : ndarray of float32, shape (n, rank)
    user_biases, item_biases : ndarray of float32, shape (n,), or None
        None when the model has no biases (then μ is not added to predictions either).
    global_mean : float
        Mean training rating μ.
    rating_range : (float, float)
        Smallest and largest training rating (predictions may be clipped to it).
    n_ratings : int
        Training ratings (after any transformation by the estimator).
    n_blocks : int
        Blocks per side the model was trained with (does not change the result).
    history : list of dict
        One record per epoch (``epoch``, a training metric, ``seconds``, ...).
    seen : SeenItems or None
        The training interactions; None when they were not kept (older model directories,
        or ``save(..., seen=False)``).
    """

    estimator: str
    params: dict
    user_ids: IdVocabulary
    item_ids: IdVocabulary
    user_factors: np.ndarray
    item_factors: np.ndarray
    user_biases: np.ndarray | None
    item_biases: np.ndarray | None
    global_mean: float
    rating_range: tuple[float, float]
    n_ratings: int
    n_blocks: int
    history: list[dict] = field(default_factory=list)
    seen: SeenItems | None = None

    def __post_init__(self) -> None:
        for side, ids, factors, biases in (("user", self.user_ids, self.user_factors, self.user_biases),
                                           ("item", self.item_ids, self.item_factors, self.item_biases)):
            if factors.ndim != 2 or factors.shape[0] != len(ids):
                raise ValueError(f"{side} factors have shape {factors.shape}, expected ({len(ids)}, rank): "
                                 f"one row per {side} id")
            if biases is not None and biases.shape != (len(ids),):
                raise ValueError(f"{side} biases have shape {biases.shape}, expected ({len(ids)},)")
        if self.user_factors.shape[1] != self.item_factors.shape[1]:
            raise ValueError(f"user factors have rank {self.user_factors.shape[1]}, item factors "
                             f"{self.item_factors.shape[1]}")
        if (self.user_biases is None) != (self.item_biases is None):
            raise ValueError("a model has biases on both sides or on neither")
        if self.seen is not None and self.seen.n_users != len(self.user_ids):
            raise ValueError(f"seen items cover {self.seen.n_users} users, the model has {len(self.user_ids)}")

    @property
    def rank(self) -> int:
        return int(self.user_factors.shape[1])

    @property
    def has_biases(self) -> bool:
        return self.user_biases is not None

    @property
    def offset(self) -> float:
        """What every prediction starts from: μ with biases, 0 without."""
        return float(self.global_mean) if self.has_biases else 0.0

    def replace(self, **changes) -> FittedModel:
        """A copy with ``changes`` (fields of this class)."""
        return dataclasses.replace(self, **changes)

    def without_seen(self) -> FittedModel:
        """The model without its training interactions (what a scoring task needs)."""
        return self if self.seen is None else self.replace(seen=None)

    def with_rows(self, side: str, ids, factors: np.ndarray, biases: np.ndarray | None,
                  interactions: tuple[np.ndarray, np.ndarray] | None = None) -> FittedModel:
        """A model with the ``side`` (``"users"`` or ``"items"``) rows of ``ids`` added, or
        replaced where the id is known. ``interactions`` are (row position in ``ids``, index on
        the other side) pairs that become the rows' seen items (users) or are added to the
        users' seen items (items); the seen items of replaced users are replaced."""
        if side not in ("users", "items"):
            raise ValueError(f"side must be 'users' or 'items', got {side!r}")
        old_ids = self.user_ids if side == "users" else self.item_ids
        new_ids = IdVocabulary(old_ids.ids.union(pd.Index(ids)))
        old_position = new_ids.index_of(old_ids.ids)
        folded_position = new_ids.index_of(pd.Index(ids))
        old_factors = self.user_factors if side == "users" else self.item_factors
        merged = np.zeros((len(new_ids), self.rank), dtype=np.float32)
        merged[old_position] = old_factors
        merged[folded_position] = factors
        merged_biases = None
        if self.has_biases:
            merged_biases = np.zeros(len(new_ids), dtype=np.float32)
            merged_biases[old_position] = self.user_biases if side == "users" else self.item_biases
            merged_biases[folded_position] = biases
        changes = {"user_ids" if side == "users" else "item_ids": new_ids,
                   "user_factors" if side == "users" else "item_factors": merged,
                   "user_biases" if side == "users" else "item_biases": merged_biases}
        if self.seen is not None or interactions is not None:
            changes["seen"] = self._seen_with(side, old_position, folded_position, interactions, len(new_ids))
        return self.replace(**changes)

    def _seen_with(self, side, old_position, folded_position, interactions, n_new) -> SeenItems:
        """Seen items after :meth:`with_rows`: rows renumbered, folded rows' interactions in (a
        model without seen items starts from none)."""
        seen = self.seen
        if seen is None:
            seen = SeenItems(np.zeros(len(self.user_ids) + 1, dtype=np.int64), np.empty(0, dtype=np.int32))
        if side == "items":
            rows = np.repeat(np.arange(seen.n_users), np.diff(seen.indptr))
            items = old_position[seen.items]
            if interactions is not None:
                rows = np.concatenate([rows, interactions[1]])
                items = np.concatenate([items, folded_position[interactions[0]]])
            order = np.lexsort((items, rows))
            indptr = np.zeros(seen.n_users + 1, dtype=np.int64)
            np.cumsum(np.bincount(rows, minlength=seen.n_users), out=indptr[1:])
            return SeenItems(indptr, items[order].astype(np.int32))
        # Users: ids stay sorted, so old rows keep their order and each row's items are copied
        # as a block to the row's new place; no sort over all interactions.
        replaced = np.zeros(n_new, dtype=bool)
        replaced[folded_position] = True
        counts = np.zeros(n_new, dtype=np.int64)
        old_counts = np.diff(seen.indptr)
        counts[old_position] = np.where(replaced[old_position], 0, old_counts)
        new_rows = np.empty(0, dtype=np.int64)
        new_items = np.empty(0, dtype=np.int64)
        if interactions is not None:
            final_rows = folded_position[interactions[0]]
            order = np.lexsort((interactions[1], final_rows))
            new_rows, new_items = final_rows[order], interactions[1][order]
            counts += np.bincount(new_rows, minlength=n_new)
        indptr = np.zeros(n_new + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        items = np.empty(indptr[-1], dtype=np.int32)
        kept = ~replaced[old_position]
        kept_counts = np.where(kept, old_counts, 0)
        source = np.repeat(seen.indptr[:-1] - np.cumsum(np.r_[0, kept_counts[:-1]]), kept_counts)
        target = np.repeat(indptr[old_position] - np.cumsum(np.r_[0, kept_counts[:-1]]), kept_counts)
        ordinal = np.arange(int(kept_counts.sum()))
        items[target + ordinal] = seen.items[source + ordinal]
        if len(new_rows):
            within = np.arange(len(new_rows)) - np.searchsorted(new_rows, new_rows, side="left")
            items[indptr[new_rows] + within] = new_items
        return SeenItems(indptr, items)

    def only_items(self, item_rows: np.ndarray) -> FittedModel:
        """The model restricted to the items at ``item_rows`` (negative rows are left out):
        what ranking a candidate set needs. Seen items are renumbered; others dropped."""
        item_rows = np.unique(np.asarray(item_rows, dtype=np.int64))
        item_rows = item_rows[item_rows >= 0]
        changes = {"item_ids": IdVocabulary(self.item_ids.ids[item_rows]),
                   "item_factors": self.item_factors[item_rows],
                   "item_biases": None if self.item_biases is None else self.item_biases[item_rows]}
        if self.seen is not None:
            new_index = np.full(len(self.item_ids), -1, dtype=np.int64)
            new_index[item_rows] = np.arange(len(item_rows))
            mapped = new_index[self.seen.items]
            keep = mapped >= 0
            rows = np.repeat(np.arange(self.seen.n_users), np.diff(self.seen.indptr))[keep]
            indptr = np.zeros(self.seen.n_users + 1, dtype=np.int64)
            np.cumsum(np.bincount(rows, minlength=self.seen.n_users), out=indptr[1:])
            changes["seen"] = SeenItems(indptr, mapped[keep].astype(np.int32))
        return self.replace(**changes)

    def check_finite(self) -> None:
        """Raise ``ValueError`` naming the table and count of NaN or infinite values."""
        for name in ("user_factors", "item_factors", "user_biases", "item_biases"):
            values = getattr(self, name)
            if values is not None and not np.isfinite(values).all():
                bad = int((~np.isfinite(values)).sum())
                raise ValueError(f"{name} hold {bad} NaN or infinite values: the model is broken (a diverged fit "
                                 "or a damaged file)")
