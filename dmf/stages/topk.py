"""Top-k stage: the best unseen items for every requested user of a fitted model.

The model (without its training interactions) reaches the workers once per stage as one
graph key; each block of requested users gets the slice of seen items it needs. The
users × items score matrix is never materialised whole: each task scores
``_USERS_PER_CHUNK`` users at a time.
"""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf import scheduler
from dmf.columns import ITEM, ITEM_INDEX, RANK, SCORE, USER, USER_INDEX
from dmf.engine.blocks import build_blocks, seen_pattern
from dmf.engine.kernels import top_k_of_products
from dmf.engine.layout import BlockLayout
from dmf.frames import as_dask_frame, require_columns
from dmf.model.fitted import FittedModel

#: Users scored per BLAS call: a 256 x items float32 product (27 MB at 26.7 k items) is as
#: fast per user as 1,024 (measured) with a quarter of the memory.
_USERS_PER_CHUNK = 256


RECOMMENDATION_META = pd.DataFrame(
    {USER: [], RANK: pd.Series([], dtype="int32"), ITEM: [], SCORE: pd.Series([], dtype="float32")}
)


def top_k_for_block(model: FittedModel, user_rows: np.ndarray, user_ids: np.ndarray, exclude: tuple | None,
                    seen: tuple | None, k: int) -> pd.DataFrame:
    """Top-``k`` items of a block of users, best first (``user, rank, item, score``).

    ``user_rows`` are the users' rows in ``model`` (-1: unknown, scored by the bias model:
    zero factors and bias), ``user_ids`` their external ids. ``exclude`` and ``seen`` are
    CSR ``(indptr, item indices)`` over the block's users (or None): items never to
    recommend to that user.
    """
    never = _union_of_rows([rows for rows in (exclude, seen) if rows is not None], len(user_rows))
    item_biases = model.item_biases if model.has_biases else np.zeros(len(model.item_ids), dtype=np.float32)
    item_term = (item_biases + model.offset).astype(np.float32)
    item_factors_t = np.ascontiguousarray(model.item_factors.T)
    products = np.empty((_USERS_PER_CHUNK, len(model.item_factors)), dtype=np.float32)
    frames = []
    for begin in range(0, len(user_rows), _USERS_PER_CHUNK):
        users = user_rows[begin : begin + _USERS_PER_CHUNK]
        chunk = products[: len(users)]
        trained = users >= 0
        if trained.all():
            np.matmul(model.user_factors[users], item_factors_t, out=chunk)
        else:  # unknown users score with zero factors and bias: the bias model
            chunk[...] = 0.0
            chunk[trained] = model.user_factors[users[trained]] @ item_factors_t
        user_bias = np.zeros(len(users), dtype=np.float32)
        if model.has_biases:
            user_bias[trained] = model.user_biases[users[trained]]
        never_indptr = never[0][begin : begin + len(users) + 1]
        columns, values, counts = top_k_of_products(
            chunk, user_bias, item_term, never_indptr - never_indptr[0],
            never[1][never_indptr[0] : never_indptr[-1]], k,
        )
        keep = np.arange(columns.shape[1])[None, :] < counts[:, None]
        rows = np.broadcast_to(np.arange(len(users))[:, None], columns.shape)[keep]
        frames.append(
            pd.DataFrame(
                {
                    USER: user_ids[begin : begin + len(users)][rows],
                    RANK: np.broadcast_to(np.arange(1, columns.shape[1] + 1, dtype=np.int32), columns.shape)[keep],
                    ITEM: model.item_ids.ids[columns[keep]],
                    SCORE: values[keep],
                }
            )
        )
    if not frames:
        return RECOMMENDATION_META.astype(_id_dtypes(model))
    return pd.concat(frames, ignore_index=True)


def _union_of_rows(parts: list[tuple], n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """One CSR ``(indptr, cols)`` of ``n_rows`` rows holding every part's columns of each row
    (a column may repeat; the top-k pass skips it either way)."""
    if not parts:
        return np.zeros(n_rows + 1, dtype=np.int64), np.empty(0, dtype=np.int64)
    if len(parts) == 1:
        return parts[0]
    rows = np.concatenate([np.repeat(np.arange(n_rows), np.diff(indptr)) for indptr, _ in parts])
    cols = np.concatenate([cols for _, cols in parts])
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr, cols[order]


def _id_dtypes(model: FittedModel) -> dict:
    return {USER: model.user_ids.ids.dtype, ITEM: model.item_ids.ids.dtype}


def requested_users(model: FittedModel, users) -> tuple[np.ndarray, pd.Index]:
    """Rows (-1: unknown) and external ids of the users to recommend for: every training user
    by default; otherwise the given ids, distinct, known users in the model's order first,
    then unknown ones in sorted order."""
    if users is None:
        return np.arange(len(model.user_ids), dtype=np.int64), model.user_ids.ids
    wanted = pd.Index(pd.unique(pd.Series(users)))
    rows = model.user_ids.index_of(wanted)
    known = np.sort(rows[rows >= 0])
    unknown = wanted[rows < 0].sort_values()
    ids = model.user_ids.ids[known].append(unknown)
    return np.concatenate([known, np.full(len(unknown), -1, dtype=np.int64)]), ids


def recommend_stage(model: FittedModel, k: int, users, exclude, exclude_seen: bool, n_blocks: int,
                    client, unknown: str = "bias") -> dd.DataFrame:
    """Dask stage: top-``k`` recommendations for ``users`` (default: all trained users).

    Users unknown to the model get the bias model's ranking (item biases) when ``unknown``
    is ``"bias"``, and no rows otherwise. Items in
    ``exclude`` (pairs ``user, item``) for a user are never recommended to that user, nor,
    with ``exclude_seen``, the items the model saw the user interact with in training.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    rows, ids = requested_users(model, users)
    if unknown != "bias":
        rows, ids = rows[rows >= 0], ids[rows >= 0]
    layout = BlockLayout(len(rows), n_blocks)
    model_key = scheduler.broadcast(model.without_seen(), client)
    excluded = _excluded_blocks(model, exclude, rows, ids, layout, model_key, client) if exclude is not None else None
    seen = exclude_seen and model.seen is not None
    task = dask.delayed(top_k_for_block, pure=False)
    parts = []
    for b, lo, hi in layout:
        seen_rows = scheduler.broadcast(model.seen.of_rows(rows[lo:hi]), client) if seen else None
        parts.append(task(model_key, rows[lo:hi], ids[lo:hi].to_numpy(), excluded[b] if excluded else None,
                          seen_rows, int(k)))
    return dd.from_delayed(parts, meta=RECOMMENDATION_META.astype(_id_dtypes(model)), verify_meta=False)


def _excluded_blocks(model: FittedModel, exclude, rows: np.ndarray, ids: pd.Index, layout: BlockLayout, model_key,
                     client) -> list:
    """Delayed CSR ``(indptr, item indices)`` of ``exclude``'s pairs per block of requested users."""
    exclude = as_dask_frame(exclude, "exclude")
    require_columns(exclude, [USER, ITEM], "exclude")
    position_of = np.full(len(model.user_ids), -1, dtype=np.int64)
    known = rows >= 0
    position_of[rows[known]] = np.flatnonzero(known)
    unknown_ids = ids[~known]  # requested users the model does not know, positions after the known ones
    positions_key = scheduler.broadcast((position_of, unknown_ids, int(known.sum())), client)
    pairs = exclude[[USER, ITEM]].map_partitions(
        _excluded_positions, model_key, positions_key,
        meta=pd.DataFrame({USER_INDEX: pd.Series([], dtype="int64"), ITEM_INDEX: pd.Series([], dtype="int64")}),
    )
    blocks = build_blocks(pairs, USER_INDEX, ITEM_INDEX, None, layout, "user", duplicates="drop")
    pattern = dask.delayed(seen_pattern, pure=True)
    return [pattern(block) for block in blocks]


def _excluded_positions(part: pd.DataFrame, model: FittedModel, positions: tuple) -> pd.DataFrame:
    """Pairs of ``part`` as (position among the requested users, item index); pairs of
    unrequested users and of unknown items are left out."""
    position_of, unknown_ids, n_known = positions
    user_index = model.user_ids.index_of(part[USER])
    item_index = model.item_ids.index_of(part[ITEM])
    position = np.full(len(part), -1, dtype=np.int64)
    position[user_index >= 0] = position_of[user_index[user_index >= 0]]
    if len(unknown_ids):
        missing = user_index < 0
        found = unknown_ids.get_indexer(part[USER].to_numpy()[missing])
        position[np.flatnonzero(missing)[found >= 0]] = n_known + found[found >= 0]
    keep = (position >= 0) & (item_index >= 0)
    return pd.DataFrame({USER_INDEX: position[keep], ITEM_INDEX: item_index[keep]})
