"""Serving a fitted estimator: fold-in, one user's top-k, similar items and users. A mixin of
:class:`~dmf.estimators.base.Estimator`, which supplies ``fitted_model``, ``_objective`` and
the ratings transforms."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Self

import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf import scheduler
from dmf.columns import ITEM, USER
from dmf.frames import as_dask_frame, require_columns
from dmf.stages.serving import (
    fold_in_frame,
    fold_in_stage,
    recommendation_frame,
    similar_frame,
    similar_rows,
    similar_stage,
    top_k_local,
    unit_rows,
)

if TYPE_CHECKING:
    from distributed import Client

#: Fold-in ratings given as a pandas frame of at most this many rows are folded in locally
#: (no Dask graph); larger ones, and Dask frames, by the fold-in stage on the cluster.
LOCAL_FOLD_IN_ROWS = 200_000
_UNIT_ROWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: (user, item) pairs or ratings: a pandas or Dask DataFrame.
Pairs = pd.DataFrame | dd.DataFrame


class Serving:
    """Fold-in and local answers of a fitted estimator."""

    def fold_in(self, ratings: Pairs, *, side: str = "users", client: Client | None = None) -> Self:
        """A copy of this estimator whose model also holds the ``side`` rows (``"users"`` or
        ``"items"``) that ``ratings`` (``user, item, rating``) rate, solved against the
        model's fixed other side with the training objective; known rows are replaced, and a
        folded-in user's seen items are its ``ratings``. A pandas frame of up to
        ``LOCAL_FOLD_IN_ROWS`` rows is folded in locally, larger frames on the cluster.
        Ratings of ids the other side does not know are left out (and, for implicit feedback
        with a ``threshold``, ratings below it): a known row none of whose ratings remain
        keeps its row and seen items."""
        model = self.fitted_model()
        if isinstance(ratings, pd.DataFrame) and len(ratings) <= LOCAL_FOLD_IN_ROWS:
            folded = fold_in_frame(model, side, ratings, self._objective(), self._ratings_transform())
        else:
            frame = as_dask_frame(ratings, "ratings")
            require_columns(frame, [USER, ITEM, "rating"], "ratings")
            folded = fold_in_stage(model, side, frame, self._objective(), scheduler.resolve_client(client),
                                   self._ratings_transform())
        copy = type(self)(**self.get_params())
        copy.model_ = model.with_rows(side, *folded)
        return copy

    def recommend_user(self, user: Any = None, *, history: pd.DataFrame | None = None, k: int = 10,
                       items: Iterable | None = None, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``k`` items for one user, locally (NumPy only, no Dask graph): a pandas frame
        ``user, rank, item, score`` as :meth:`recommend` gives.

        Parameters
        ----------
        user
            A training user id, or any id for a one-off user given by ``history``.
        history
            Ratings of a one-off user (``item, rating``; a ``user`` column, if any, must hold
            one id): the user is folded in for this call only, and every history item counts
            as seen. If nothing folds in (unknown items only, or none above an implicit
            model's threshold), a known ``user`` keeps its row. Without ``history`` an unknown
            ``user`` gets the bias model's ranking.
        items
            Candidate item ids: rank only these (unknown ids are left out).
        exclude_seen
            Skip the user's training items (or the ``history`` items).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        model = self.fitted_model()
        vector, bias, never = np.zeros(model.rank, np.float32), 0.0, np.empty(0, np.int64)
        folded = False
        if history is not None:
            if USER in history.columns and history[USER].nunique() > 1:
                raise ValueError(f"history holds {history[USER].nunique()} users; recommend_user takes one "
                                 "(fold_in folds in many)")
            frame = history.assign(**{USER: 0})
            ids, factors, biases, _ = fold_in_frame(model, "users", frame, self._objective(),
                                                    self._ratings_transform())
            if len(ids):
                folded, vector, bias = True, factors[0], float(biases[0]) if biases is not None else 0.0
            if exclude_seen:  # every history item, also those a threshold leaves out of the fold-in
                never = model.item_ids.index_of(history[ITEM].to_numpy())
                never = never[never >= 0]
        row = int(model.user_ids.index_of([user])[0])
        if not folded and row >= 0:  # as fold_in: a known user nothing was folded in for keeps its row
            vector = model.user_factors[row]
            bias = float(model.user_biases[row]) if model.has_biases else 0.0
            if exclude_seen and model.seen is not None:
                never = np.concatenate([never, model.seen.of_rows(np.array([row]))[1]])
        candidates = None
        if items is not None:
            candidates = model.item_ids.index_of(pd.Index(list(items)))
            candidates = candidates[candidates >= 0]
        found, scores = top_k_local(model, vector, bias, never, int(k), candidates)
        return recommendation_frame(user, found, scores, model)

    def similar_items(self, items: Iterable | None = None, k: int = 10, *, client: Client | None = None
                      ) -> pd.DataFrame | dd.DataFrame:
        """The ``k`` items most similar to each of ``items`` (cosine similarity of item
        factors, best first): a pandas frame ``item, rank, similar, score`` computed locally;
        with ``items=None``, a Dask DataFrame of the same for the whole catalog."""
        return self._similar("items", items, k, client)

    def similar_users(self, users: Iterable | None = None, k: int = 10, *, client: Client | None = None
                      ) -> pd.DataFrame | dd.DataFrame:
        """As :meth:`similar_items`, for users (``user, rank, similar, score``)."""
        return self._similar("users", users, k, client)

    def _similar(self, side: str, wanted, k: int, client) -> pd.DataFrame | dd.DataFrame:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        model = self.fitted_model()
        ids, factors, column = ((model.item_ids, model.item_factors, ITEM) if side == "items"
                                else (model.user_ids, model.user_factors, USER))
        if wanted is None:
            client = scheduler.resolve_client(client)
            n_blocks = getattr(self, "n_blocks", None) or 2 * scheduler.total_threads(client)
            return similar_stage(ids.ids, factors, int(k), column, n_blocks, client)
        wanted = pd.Index(list(wanted))
        rows = ids.index_of(wanted)
        if (rows < 0).any():
            raise ValueError(f"{int((rows < 0).sum())} {side} unknown to the model, e.g. {list(wanted[rows < 0][:3])}")
        units = _UNIT_ROWS.setdefault(model, {})
        if side not in units:
            units[side] = unit_rows(factors)
        return similar_frame(ids.ids, rows, *similar_rows(units[side], rows, int(k)), column)

