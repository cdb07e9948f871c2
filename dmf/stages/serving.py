"""Serving a fitted model: fold-in of new rows, one user's top-k, candidate ranking and similar
items, each as a local call (NumPy only, no Dask graph: milliseconds) and, where many rows
are involved, as a Dask stage.
"""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf import scheduler
from dmf.columns import ITEM, RANK, RATING, SCORE, USER
from dmf.engine.foldin import fold_in_block, rating_block
from dmf.engine.layout import BlockLayout
from dmf.engine.solve import Objective
from dmf.model.fitted import FittedModel

SIMILAR = "similar"
#: Rows compared with the whole side per BLAS call in the similarity stage.
_ROWS_PER_CHUNK = 512


# -- fold-in ------------------------------------------------------------------------------------
def fold_in_frame(model: FittedModel, side: str, ratings: pd.DataFrame, objective: Objective,
                  transform: tuple | None = None) -> tuple:
    """Fold in the ``side`` rows of a pandas frame of ``user, item, rating``, solved on
    ``transform[0](ratings, *transform[1])`` (the estimator's ratings transform) if given.

    Returns (ids, factors float32 (n, rank), biases float32 (n,) or None, interactions), where
    ``interactions`` are (row position in ids, other-side index) pairs of every rating of the
    folded rows, also those the transform drops (rated all the same); ratings of other-side
    ids the model does not know are left out (they have no factors to fold in against).
    """
    row_column, other_column = (USER, ITEM) if side == "users" else (ITEM, USER)
    other_ids = model.item_ids if side == "users" else model.user_ids
    raw = _finite_ratings(ratings)
    ratings = raw if transform is None else transform[0](raw, *transform[1])
    other_index = other_ids.index_of(ratings[other_column].to_numpy())
    known = other_index >= 0
    ids, rows = np.unique(ratings[row_column].to_numpy()[known], return_inverse=True)
    block = rating_block(rows, other_index[known], ratings[RATING].to_numpy()[known], len(ids))
    table = fold_in_block(model, side, block, objective)
    ids = pd.Index(ids)
    raw_rows = ids.get_indexer(raw[row_column].to_numpy())
    raw_others = other_ids.index_of(raw[other_column].to_numpy())
    rated = (raw_rows >= 0) & (raw_others >= 0)
    return ids, table.factors, table.biases, (raw_rows[rated], raw_others[rated])


def _finite_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in (USER, ITEM, RATING) if c not in ratings.columns]
    if missing:
        raise ValueError(f"fold-in ratings have no column {missing[0]!r} (columns: {list(ratings.columns)})")
    values = pd.to_numeric(ratings[RATING], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"fold-in ratings hold {int(bad.sum())} missing, non-numeric or infinite ratings, e.g. "
                         f"{ratings[bad].head(3).to_dict('records')}")
    return ratings


def _fold_in_partition(part: pd.DataFrame, model: FittedModel, side: str, objective: Objective,
                       transform: tuple | None) -> pd.DataFrame:
    ids, factors, biases, interactions = fold_in_frame(model, side, part, objective, transform)
    return pd.DataFrame({"id": ids, "bias": biases if biases is not None else np.zeros(len(ids), np.float32),
                         "factors": list(factors), "rows": _group(interactions, len(ids))})


def _group(interactions: tuple, n_rows: int) -> list:
    """Per row, the other-side indices of its interactions."""
    rows, others = interactions
    if n_rows == 0:
        return []
    order = np.argsort(rows, kind="stable")
    return np.split(others[order], np.cumsum(np.bincount(rows, minlength=n_rows))[:-1])


def fold_in_stage(model: FittedModel, side: str, ratings: dd.DataFrame, objective: Objective, client,
                  transform: tuple | None = None) -> tuple:
    """Dask stage: fold in many rows, one task per partition after a shuffle by id; returns
    what :func:`fold_in_frame` returns, gathered on the client."""
    row_column = USER if side == "users" else ITEM
    meta = pd.DataFrame({"id": ratings._meta[row_column].iloc[:0], "bias": pd.Series([], dtype="float32"),
                         "factors": pd.Series([], dtype=object), "rows": pd.Series([], dtype=object)})

    def run():
        model_key = scheduler.broadcast(model.without_seen(), client)
        parts = ratings.shuffle(on=row_column).map_partitions(_fold_in_partition, model_key, side, objective,
                                                               transform, meta=meta)
        return scheduler.compute([parts], client)[0]

    folded = scheduler.retry_on_worker_loss(run, "fold-in", client)
    factors = np.stack(folded["factors"].to_list()).astype(np.float32) if len(folded) else np.empty((0, model.rank),
                                                                                                  np.float32)
    biases = folded["bias"].to_numpy(np.float32) if model.has_biases else None
    counts = folded["rows"].map(len).to_numpy()
    rows = np.repeat(np.arange(len(folded)), counts)
    others = np.concatenate(folded["rows"].to_list()).astype(np.int64) if len(folded) else np.empty(0, np.int64)
    return pd.Index(folded["id"]), factors, biases, (rows, others)


# -- known pairs --------------------------------------------------------------------------------
def _pair_rows(part: pd.DataFrame, model: FittedModel) -> pd.DataFrame:
    users = model.user_ids.index_of(part[USER].to_numpy())
    items = model.item_ids.index_of(part[ITEM].to_numpy())
    known = (users >= 0) & (items >= 0)
    return pd.DataFrame({"user_row": users[known], "item_row": items[known].astype(np.int32)})


def pair_rows(model: FittedModel, pairs: dd.DataFrame, client) -> tuple[np.ndarray, np.ndarray]:
    """(user rows, item indices) of the pairs of ``pairs`` whose user and item the model knows,
    gathered on the client."""
    meta = pd.DataFrame({"user_row": pd.Series([], dtype="int64"), "item_row": pd.Series([], dtype="int32")})

    def run():
        model_key = scheduler.broadcast(model.without_seen(), client)
        return scheduler.compute([pairs[[USER, ITEM]].map_partitions(_pair_rows, model_key, meta=meta)], client)[0]

    found = scheduler.retry_on_worker_loss(run, "indexing pairs", client)
    return found["user_row"].to_numpy(), found["item_row"].to_numpy()


# -- one user's top-k ---------------------------------------------------------------------------
def top_k_local(model: FittedModel, user_vector: np.ndarray, user_bias: float, never: np.ndarray, k: int,
                candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Item indices and scores of the ``k`` best items for one user vector, best first, ties
    by the lower item index; ``never`` are item indices to skip, ``candidates`` (item
    indices) the only items to consider. Scores are float32, as the top-k stage's."""
    scores = model.item_factors @ user_vector.astype(np.float32)
    item_biases = model.item_biases if model.has_biases else np.zeros(len(scores), dtype=np.float32)
    scores = (scores + np.float32(user_bias)) + (item_biases + model.offset).astype(np.float32)
    scores[never] = -np.inf
    if candidates is not None:
        pool = np.unique(candidates)
        pool = pool[np.isfinite(scores[pool])]
    else:
        pool = np.flatnonzero(np.isfinite(scores))
    if len(pool) > k:
        cut = np.argpartition(-scores[pool], k - 1)[:k]
        threshold = scores[pool][cut].min()
        pool = pool[scores[pool] >= threshold]  # keep every tie at the cut, ordered below
    order = np.lexsort((pool, -scores[pool]))[:k]
    return pool[order], scores[pool[order]]


def recommendation_frame(user, items: np.ndarray, scores: np.ndarray, model: FittedModel) -> pd.DataFrame:
    return pd.DataFrame({USER: [user] * len(items), RANK: np.arange(1, len(items) + 1, dtype=np.int32),
                         ITEM: model.item_ids.ids[items], SCORE: scores.astype(np.float32)})


# -- similar items and users --------------------------------------------------------------------
def unit_rows(factors: np.ndarray) -> np.ndarray:
    """Factors scaled to unit length (zero rows stay zero): cosine similarity is a dot product."""
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    return np.divide(factors, norms, out=np.zeros_like(factors), where=norms > 0)


def similar_rows(unit: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``rows``: the ``k`` most cosine-similar other rows and their similarities
    (best first, ties by lower index), as (indices (n, k'), scores (n, k')) with
    ``k' = min(k, number of rows - 1)``."""
    k = min(k, len(unit) - 1)
    similarity = unit[rows] @ unit.T
    similarity[np.arange(len(rows)), rows] = -np.inf  # never itself
    if k <= 0:
        return np.empty((len(rows), 0), np.int64), np.empty((len(rows), 0), np.float32)
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(similarity, top, axis=1)
    # argpartition picks arbitrary members of a tie at the cut: take the lowest indices instead
    cut = values.min(axis=1)
    tied = (similarity == cut[:, None]).sum(axis=1) > (values == cut[:, None]).sum(axis=1)
    for position in np.flatnonzero(tied):
        row = similarity[position]
        above = np.flatnonzero(row > cut[position])
        top[position] = np.concatenate([above, np.flatnonzero(row == cut[position])[: k - len(above)]])
        values[position] = row[top[position]]
    order = np.lexsort((top, -values), axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(values, order, axis=1)


def similar_frame(ids: pd.Index, rows: np.ndarray, indices: np.ndarray, scores: np.ndarray, column: str
                  ) -> pd.DataFrame:
    """``column, rank, similar, score`` rows of :func:`similar_rows` results."""
    n, k = indices.shape
    return pd.DataFrame({column: np.repeat(ids[rows].to_numpy(), k), RANK: np.tile(np.arange(1, k + 1, dtype=np.int32), n),
                         SIMILAR: ids[indices.reshape(-1)].to_numpy(), SCORE: scores.reshape(-1).astype(np.float32)})


def similar_block(unit_and_ids: tuple, start: int, stop: int, k: int, column: str) -> pd.DataFrame:
    """The similar rows of rows ``start .. stop - 1`` (one task of :func:`similar_stage`)."""
    unit, ids = unit_and_ids
    frames = []
    for begin in range(start, stop, _ROWS_PER_CHUNK):
        rows = np.arange(begin, min(begin + _ROWS_PER_CHUNK, stop))
        frames.append(similar_frame(ids, rows, *similar_rows(unit, rows, k), column))
    return pd.concat(frames, ignore_index=True) if frames else similar_frame(ids, np.empty(0, np.int64),
                                                                              np.empty((0, 0), np.int64),
                                                                              np.empty((0, 0)), column)


def similar_stage(ids: pd.Index, factors: np.ndarray, k: int, column: str, n_blocks: int, client) -> dd.DataFrame:
    """Dask stage: the ``k`` most similar rows of every row (``column, rank, similar, score``)."""
    unit_key = scheduler.broadcast((unit_rows(factors), ids), client)
    task = dask.delayed(similar_block, pure=False)
    parts = [task(unit_key, start, stop, k, column) for _, start, stop in BlockLayout(len(ids), n_blocks)]
    meta = similar_frame(ids, np.empty(0, np.int64), np.empty((0, 0), np.int64), np.empty((0, 0)), column)
    return dd.from_delayed(parts, meta=meta, verify_meta=False)
