"""Scoring stages of a fitted model: pair predictions and blockwise top-k recommendations.

A :class:`ScoringState` (ids, factors, biases) reaches the workers once per stage as one
graph key; partitions and user blocks are scored in parallel. The users × items score
matrix is never materialised whole: each task scores ``_USERS_PER_CHUNK`` users at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf import _dask
from dmf.blocks import block_bounds, build_blocks
from dmf.columns import ITEM, ITEM_INDEX, PREDICTION, RANK, SCORE, USER, USER_INDEX
from dmf._compiled import top_k_of_products
from dmf.kernels import RatingBlock, predict_ratings
from dmf.vocabulary import IdVocabulary

UnknownPolicy = Literal["bias", "nan", "drop"]
UNKNOWN_POLICIES = ("bias", "nan", "drop")
#: Users scored per BLAS call: a 256 x items float32 product (27 MB at 26.7 k items) is as
#: fast per user as 1,024 (measured) with a quarter of the memory.
_USERS_PER_CHUNK = 256


@dataclass
class ScoringState:
    """Everything needed to score (user, item) pairs.

    ``offset`` is the global mean added to every known pair (0 without biases);
    ``fallback_mean`` is the prediction for a pair whose user and item are both unknown;
    biases are zeros when the model has none. ``clip`` is the (low, high) prediction range
    or None.
    """

    user_ids: IdVocabulary
    item_ids: IdVocabulary
    user_factors: np.ndarray
    item_factors: np.ndarray
    user_biases: np.ndarray
    item_biases: np.ndarray
    offset: float
    fallback_mean: float
    clip: tuple[float, float] | None

    def score_pairs(self, users, items) -> tuple[np.ndarray, np.ndarray]:
        """Predictions (float64) for id arrays, and a mask of pairs that used the fallback.

        A pair with an unknown user or item falls back to the bias model: the global mean
        plus whichever bias is known.
        """
        user_index = self.user_ids.index_of(users)
        item_index = self.item_ids.index_of(items)
        known_user, known_item = user_index >= 0, item_index >= 0
        both = known_user & known_item
        prediction = np.full(len(user_index), self.fallback_mean, dtype=np.float64)
        prediction[known_user] += self.user_biases[user_index[known_user]]
        prediction[known_item] += self.item_biases[item_index[known_item]]
        prediction[both] += predict_ratings(
            self.user_factors, self.item_factors, user_index[both], item_index[both], self.offset - self.fallback_mean
        )
        if self.clip is not None:
            np.clip(prediction, *self.clip, out=prediction)
        return prediction, ~both


def _check_policy(unknown: str) -> None:
    if unknown not in UNKNOWN_POLICIES:
        raise ValueError(f"unknown must be one of {UNKNOWN_POLICIES}, got {unknown!r}")


def require_columns(frame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} has no column {missing[0]!r} (columns: {list(frame.columns)})")


def as_dask_frame(frame, what: str) -> dd.DataFrame:
    if isinstance(frame, dd.DataFrame):
        return frame
    if isinstance(frame, pd.DataFrame):
        return dd.from_pandas(frame, npartitions=max(1, -(-len(frame) // 1_000_000)), sort=False)
    raise TypeError(f"{what} must be a pandas or Dask DataFrame, got {type(frame).__name__}")


PREDICTION_META = pd.DataFrame({USER: [], ITEM: [], PREDICTION: pd.Series([], dtype="float32")})


def predict_partition(part: pd.DataFrame, state: ScoringState, unknown: UnknownPolicy) -> pd.DataFrame:
    prediction, fallback = state.score_pairs(part[USER], part[ITEM])
    if unknown == "nan":
        prediction[fallback] = np.nan
    out = pd.DataFrame({USER: part[USER].to_numpy(), ITEM: part[ITEM].to_numpy(), PREDICTION: prediction.astype(np.float32)})
    return out[~fallback] if unknown == "drop" else out


def predict_stage(state_key, pairs: dd.DataFrame, unknown: UnknownPolicy) -> dd.DataFrame:
    """Dask stage: ``user, item, prediction`` for every row of ``pairs``."""
    _check_policy(unknown)
    meta = PREDICTION_META.astype({USER: pairs._meta[USER].dtype, ITEM: pairs._meta[ITEM].dtype})
    return pairs.map_partitions(predict_partition, state_key, unknown, meta=meta)


RECOMMENDATION_META = pd.DataFrame(
    {USER: [], RANK: pd.Series([], dtype="int32"), ITEM: [], SCORE: pd.Series([], dtype="float32")}
)


def top_k_for_block(
    state: ScoringState, user_index: np.ndarray, seen: RatingBlock, k: int
) -> pd.DataFrame:
    """Top-``k`` unseen items of a block of users, best first (``user, rank, item, score``).

    ``user_index`` are the users' rows in ``state`` (rows past the trained users score
    with zero factors and bias: the bias model). ``seen`` holds, for row ``r`` of this
    block, the item indices never to recommend to ``user_index[r]``.
    """
    n_trained = len(state.user_factors)
    item_term = (state.item_biases + state.offset).astype(np.float32)
    item_factors_t = np.ascontiguousarray(state.item_factors.T)
    products = np.empty((_USERS_PER_CHUNK, len(state.item_factors)), dtype=np.float32)
    frames = []
    for begin in range(0, len(user_index), _USERS_PER_CHUNK):
        users = user_index[begin : begin + _USERS_PER_CHUNK]
        chunk = products[: len(users)]
        trained = users < n_trained
        if trained.all():
            np.matmul(state.user_factors[users], item_factors_t, out=chunk)
        else:  # users past the trained ones score with zero factors and bias: the bias model
            chunk[...] = 0.0
            chunk[trained] = state.user_factors[users[trained]] @ item_factors_t
        user_bias = np.zeros(len(users), dtype=np.float32)
        user_bias[trained] = state.user_biases[users[trained]]
        seen_indptr = seen.indptr[begin : begin + len(users) + 1]
        columns, values, counts = top_k_of_products(
            chunk, user_bias, item_term, seen_indptr - seen_indptr[0], seen.cols[seen_indptr[0] : seen_indptr[-1]], k
        )
        keep = np.arange(columns.shape[1])[None, :] < counts[:, None]
        rows = np.broadcast_to(np.arange(len(users))[:, None], columns.shape)[keep]
        frames.append(
            pd.DataFrame(
                {
                    USER: state.user_ids.ids[users[rows]],
                    RANK: np.broadcast_to(np.arange(1, columns.shape[1] + 1, dtype=np.int32), columns.shape)[keep],
                    ITEM: state.item_ids.ids[columns[keep]],
                    SCORE: values[keep],
                }
            )
        )
    if not frames:
        return RECOMMENDATION_META.astype(_id_dtypes(state))
    return pd.concat(frames, ignore_index=True)


def _id_dtypes(state: ScoringState) -> dict:
    return {USER: state.user_ids.ids.dtype, ITEM: state.item_ids.ids.dtype}


def recommend_stage(
    state: ScoringState,
    k: int,
    users,
    exclude: dd.DataFrame | None,
    n_blocks: int,
    client,
) -> dd.DataFrame:
    """Dask stage: top-``k`` recommendations for ``users`` (default: all trained users).

    Users unknown to the model get the bias model's ranking (item biases). Items in
    ``exclude`` for a user are never recommended to that user.
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if users is None:
        requested = np.arange(len(state.user_ids), dtype=np.int64)
    else:
        wanted = pd.Index(pd.unique(pd.Series(users)))
        extended = state.user_ids.extended(wanted)
        state = _with_user_ids(state, extended)
        requested = np.sort(extended.index_of(wanted))
    state_key = _dask.broadcast(state, client)
    position_of = np.full(len(state.user_ids), -1, dtype=np.int64)
    position_of[requested] = np.arange(len(requested))
    if exclude is None:
        exclude = pd.DataFrame({USER: state.user_ids.ids[:0], ITEM: state.item_ids.ids[:0]})
    exclude = as_dask_frame(exclude, "exclude")
    require_columns(exclude, [USER, ITEM], "exclude")
    positions_key = _dask.broadcast(position_of, client)
    seen = exclude[[USER, ITEM]].map_partitions(
        _seen_positions, state_key, positions_key,
        meta=pd.DataFrame({USER_INDEX: pd.Series([], dtype="int64"), ITEM_INDEX: pd.Series([], dtype="int64")}),
    )
    seen_blocks = build_blocks(seen, USER_INDEX, ITEM_INDEX, None, len(requested), n_blocks, "user", duplicates="drop")
    bounds = block_bounds(len(requested), n_blocks)
    task = dask.delayed(top_k_for_block, pure=False)
    parts = [
        task(state_key, requested[bounds[b] : bounds[b + 1]], seen_blocks[b], int(k)) for b in range(len(bounds) - 1)
    ]
    return dd.from_delayed(parts, meta=RECOMMENDATION_META.astype(_id_dtypes(state)), verify_meta=False)


def _seen_positions(part: pd.DataFrame, state: ScoringState, position_of: np.ndarray) -> pd.DataFrame:
    user_index = state.user_ids.index_of(part[USER])
    item_index = state.item_ids.index_of(part[ITEM])
    keep = (user_index >= 0) & (item_index >= 0)
    positions = position_of[user_index[keep]]
    requested = positions >= 0
    return pd.DataFrame({USER_INDEX: positions[requested], ITEM_INDEX: item_index[keep][requested]})


def _with_user_ids(state: ScoringState, user_ids: IdVocabulary) -> ScoringState:
    """The state with users appended (zero factors and biases) for ids it does not know."""
    n_extra = len(user_ids) - len(state.user_ids)
    if n_extra == 0:
        return state
    return ScoringState(
        user_ids,
        state.item_ids,
        state.user_factors,
        state.item_factors,
        np.concatenate([state.user_biases, np.zeros(n_extra, dtype=state.user_biases.dtype)]),
        state.item_biases,
        state.offset,
        state.fallback_mean,
        state.clip,
    )
