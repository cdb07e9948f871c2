"""MovieLens-like synthetic ratings, generated per partition on the workers.

Every value is a pure function of the seed and the user (or item) id, drawn with
counter-based random numbers (:mod:`dmf.random`), so the data set is identical for
any partition count and no rating ever passes through the client. The model:

- user activity: every user has at least ``min_user_ratings``; the rest of ``n_ratings`` is
  shared in proportion to log-normal weights (heavy tail), capped at ``max_user_fraction`` of
  the items, rounded so that the total is exactly ``n_ratings``;
- item popularity: log-normal weights mixed with a small uniform share; each user draws items
  from that distribution (alias method), without repeats (first distinct draws of the user's
  own random stream);
- rating = ``global_mean`` + user bias + item bias (correlated with popularity) + planted
  low-rank interaction ``p_u . q_i`` + Gaussian noise, rounded to ``rating_step`` stars and
  clipped to ``rating_scale``;
- timestamps: each user is active over a random sub-interval of ``time_range``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass

import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf.columns import ITEM, RATING, TIMESTAMP, USER
from dmf.random import counter_normal, counter_uniform

logger = logging.getLogger(__name__)

_ACTIVITY, _POPULARITY, _USER_FACTORS, _ITEM_FACTORS, _USER_BIAS, _ITEM_BIAS = range(1, 7)
_ITEM_DRAWS, _NOISE, _TIME_START, _TIME_SPAN, _TIME_RATING = range(7, 12)
_ROWS_PER_PARTITION = 1_000_000
_CHUNK_RATINGS = 250_000
_META = pd.DataFrame({
    USER: pd.Series([], dtype="int64"), ITEM: pd.Series([], dtype="int64"),
    RATING: pd.Series([], dtype="float32"), TIMESTAMP: pd.Series([], dtype="int64"),
})


@dataclass(frozen=True)
class SyntheticSpec:
    """Shape and parameters of a synthetic ratings data set (user ids ``1..n_users``, items ``1..n_items``).

    Attributes
    ----------
    n_users, n_items, n_ratings
        Users, item universe and exact number of ratings. Not every item need be rated.
    rank
        Rank of the planted interaction ``p_u . q_i``.
    rating_scale, rating_step
        Smallest and largest rating; ratings are multiples of ``rating_step`` (1 or 0.5).
    time_range
        First and last Unix timestamp (seconds).
    min_user_ratings, activity_sigma, max_user_fraction
        Floor of ratings per user, log-normal sigma of the extra activity, and the cap on a
        user's ratings as a fraction of ``n_items``.
    popularity_sigma, uniform_share
        Log-normal sigma of item popularity and the share of draws that ignore popularity.
    global_mean, user_bias_std, item_bias_std, popularity_bias, interaction_std, noise_std
        Rating model, in stars: ``popularity_bias`` stars per standard deviation of log popularity.
    """

    n_users: int
    n_items: int
    n_ratings: int
    rank: int = 10
    rating_scale: tuple[float, float] = (0.5, 5.0)
    rating_step: float = 0.5
    time_range: tuple[int, int] = (789_652_009, 1_427_784_002)
    min_user_ratings: int = 20
    activity_sigma: float = 1.1
    max_user_fraction: float = 0.5
    popularity_sigma: float = 1.2
    uniform_share: float = 0.05
    global_mean: float = 3.4
    user_bias_std: float = 0.45
    item_bias_std: float = 0.35
    popularity_bias: float = 0.25
    interaction_std: float = 0.55
    noise_std: float = 0.8

    def __post_init__(self) -> None:
        if min(self.n_users, self.n_items, self.n_ratings, self.rank) < 1:
            raise ValueError(f"n_users, n_items, n_ratings and rank must be positive, got {self}")
        cap = self.user_cap
        if self.n_ratings > self.n_users * cap:
            raise ValueError(
                f"{self.n_ratings} ratings do not fit {self.n_users} users rating at most {cap} of "
                f"{self.n_items} items each; raise n_items or max_user_fraction"
            )
        if self.n_ratings < self.n_users * min(self.min_user_ratings, cap):
            raise ValueError(
                f"{self.n_ratings} ratings are fewer than {self.n_users} users x min_user_ratings="
                f"{self.min_user_ratings}; lower min_user_ratings"
            )
        low, high = self.rating_scale
        if not (low < high and self.rating_step > 0):
            raise ValueError(f"rating_scale must be (low, high) with low < high, got {self.rating_scale}")

    @property
    def user_cap(self) -> int:
        """Most ratings a user can have."""
        return max(1, int(self.max_user_fraction * self.n_items))


PRESETS: dict[str, SyntheticSpec] = {
    "ml-100k": SyntheticSpec(943, 1_682, 100_000, rating_scale=(1.0, 5.0), rating_step=1.0,
                             time_range=(874_724_710, 893_286_638)),
    "ml-1m": SyntheticSpec(6_040, 3_706, 1_000_209, rating_scale=(1.0, 5.0), rating_step=1.0,
                           time_range=(956_703_932, 1_046_454_590)),
    "ml-10m": SyntheticSpec(69_878, 10_677, 10_000_054, time_range=(789_652_009, 1_231_131_736)),
    "ml-20m": SyntheticSpec(138_493, 26_744, 20_000_263, time_range=(789_652_004, 1_427_784_002)),
    "ml-25m": SyntheticSpec(162_541, 59_047, 25_000_095, time_range=(789_652_009, 1_574_327_703)),
    # the Netflix Prize set's shape: 1-5 stars, 1999-11-11 .. 2005-12-31
    "netflix": SyntheticSpec(480_189, 17_770, 100_480_507, rating_scale=(1.0, 5.0), rating_step=1.0,
                             time_range=(942_278_400, 1_136_073_599)),
}


def synthetic_spec(preset: str | None = None, **overrides) -> SyntheticSpec:
    """A :class:`SyntheticSpec` from a preset name (``"ml-100k"`` ... ``"ml-25m"``, ``"netflix"``) and overrides."""
    if preset is None:
        return SyntheticSpec(**overrides)
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; known: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[preset], **overrides)


def generate_ratings(
    spec: SyntheticSpec | str,
    *,
    seed: int = 0,
    npartitions: int | None = None,
) -> dd.DataFrame:
    """Synthetic ratings as a lazy Dask DataFrame, one task per contiguous range of users.

    Parameters
    ----------
    spec
        A :class:`SyntheticSpec` or a preset name (see :data:`PRESETS`).
    seed
        Seed; the rows for a given (spec, seed) are identical for every ``npartitions``.
    npartitions
        Partitions (default: one per million ratings). Users are split so partitions hold
        about the same number of ratings.

    Returns
    -------
    dask.dataframe.DataFrame
        ``user``, ``item`` (int64, ids from 1), ``rating`` (float32), ``timestamp`` (int64 seconds);
        within a partition, rows are ordered by user.
    """
    if isinstance(spec, str):
        spec = synthetic_spec(spec)
    counts = user_rating_counts(spec, seed)
    if npartitions is None:
        npartitions = max(1, -(-spec.n_ratings // _ROWS_PER_PARTITION))
    npartitions = max(1, min(int(npartitions), spec.n_users))
    cumulative = np.cumsum(counts)
    cuts = np.searchsorted(cumulative, spec.n_ratings * np.arange(1, npartitions) / npartitions)
    bounds = np.unique(np.concatenate([[0], cuts, [spec.n_users]]))
    ranges = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    logger.info("synthetic ratings: %d users, %d items, %d ratings in %d partitions (seed %d)",
                spec.n_users, spec.n_items, spec.n_ratings, len(ranges), seed)
    return dd.from_map(_generate_partition, ranges, spec=spec, seed=seed, meta=_META,
                       label="generate-synthetic-ratings", enforce_metadata=False)


def user_rating_counts(spec: SyntheticSpec, seed: int) -> np.ndarray:
    """Ratings per user (int64, index ``u`` is user ``u + 1``), summing to ``spec.n_ratings`` exactly."""
    users = np.arange(1, spec.n_users + 1, dtype=np.uint64)
    weights = np.exp(spec.activity_sigma * counter_normal(seed, _ACTIVITY, users))
    floor = min(spec.min_user_ratings, spec.user_cap)
    room = np.full(spec.n_users, float(spec.user_cap - floor))
    extra = float(spec.n_ratings - floor * spec.n_users)
    shares = np.zeros(spec.n_users)
    free = np.ones(spec.n_users, dtype=bool)
    for _ in range(64):  # water-filling: capped users keep their cap, the rest share what is left
        remaining = extra - shares[~free].sum()
        shares[free] = remaining * weights[free] / weights[free].sum()
        over = free & (shares > room)
        if not over.any():
            break
        shares[over] = room[over]
        free &= ~over
    whole = np.floor(shares).astype(np.int64)
    missing = spec.n_ratings - floor * spec.n_users - int(whole.sum())
    if missing > 0:  # largest remainders first, ties by user id; never above the cap
        order = np.lexsort((np.arange(spec.n_users), -(shares - whole)))
        order = order[whole[order] < room[order]]
        whole[order[:missing]] += 1
    return whole + floor


@functools.lru_cache(maxsize=4)
def _cached_counts(spec: SyntheticSpec, seed: int) -> np.ndarray:
    """:func:`user_rating_counts`, computed once per worker process (read-only)."""
    counts = user_rating_counts(spec, seed)
    counts.setflags(write=False)
    return counts


@functools.lru_cache(maxsize=4)
def _item_model(spec: SyntheticSpec, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alias table of item draws, item factors (n_items, rank) and item biases."""
    items = np.arange(1, spec.n_items + 1, dtype=np.uint64)
    log_popularity = spec.popularity_sigma * counter_normal(seed, _POPULARITY, items)
    popularity = np.exp(log_popularity - log_popularity.max())
    probability = (1 - spec.uniform_share) * popularity / popularity.sum() + spec.uniform_share / spec.n_items
    alias_table = _alias_table(probability)
    factors = (_factor_scale(spec) * _normals(seed, _ITEM_FACTORS, items, spec.rank)).astype(np.float32)
    standardized = (log_popularity - log_popularity.mean()) / max(log_popularity.std(), 1e-12)
    biases = spec.item_bias_std * counter_normal(seed, _ITEM_BIAS, items) + spec.popularity_bias * standardized
    return alias_table, factors, biases


def _alias_table(probability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table: draw ``k = floor(u * n)``, keep ``k`` if ``frac(u * n) < keep[k]`` else ``alias[k]``."""
    n = len(probability)
    scaled = probability * (n / probability.sum())
    keep = np.ones(n)
    alias = np.arange(n)
    small = [index for index in range(n) if scaled[index] < 1.0]
    large = [index for index in range(n) if scaled[index] >= 1.0]
    while small and large:
        low, high = small.pop(), large[-1]
        keep[low], alias[low] = scaled[low], high
        scaled[high] -= 1.0 - scaled[low]
        if scaled[high] < 1.0:
            small.append(large.pop())
    return keep, alias


def _draw_items(alias_table: tuple[np.ndarray, np.ndarray], uniform: np.ndarray) -> np.ndarray:
    keep, alias = alias_table
    position = uniform * len(keep)
    index = np.minimum(position.astype(np.int64), len(keep) - 1)
    return np.where(position - index < keep[index], index, alias[index])


def _factor_scale(spec: SyntheticSpec) -> float:
    """Entry scale s such that p.q with N(0, s^2) entries has standard deviation interaction_std."""
    return float(np.sqrt(spec.interaction_std / np.sqrt(spec.rank)))


def _normals(seed: int, stream: int, ids: np.ndarray, width: int) -> np.ndarray:
    return counter_normal(seed, stream, ids[:, None], np.arange(width, dtype=np.uint64)[None, :])


def _generate_partition(user_range: tuple[int, int], spec: SyntheticSpec, seed: int) -> pd.DataFrame:
    """Ratings of users ``lo + 1 .. hi``; a pure function of (spec, seed, user ids).

    Users are processed in chunks of about ``_CHUNK_RATINGS`` ratings to keep temporaries small.
    """
    lo, hi = user_range
    counts = _cached_counts(spec, seed)[lo:hi]
    item_model = _item_model(spec, seed)
    chunk_ends = np.searchsorted(np.cumsum(counts), np.arange(_CHUNK_RATINGS, counts.sum(), _CHUNK_RATINGS))
    edges = np.unique(np.concatenate([[0], chunk_ends + 1, [hi - lo]])).clip(0, hi - lo)
    chunks = [_generate_users(np.arange(lo + a + 1, lo + b + 1, dtype=np.int64), counts[a:b], spec, seed, item_model)
              for a, b in zip(edges[:-1], edges[1:]) if b > a]
    return pd.concat(chunks, ignore_index=True) if len(chunks) != 1 else chunks[0]


def _generate_users(users: np.ndarray, counts: np.ndarray, spec: SyntheticSpec, seed: int,
                    item_model: tuple[np.ndarray, np.ndarray, np.ndarray]) -> pd.DataFrame:
    alias_table, item_factors, item_biases = item_model
    owner, items = _choose_items(users, counts, alias_table, seed)
    row_users = users[owner]
    ids = users.astype(np.uint64)
    user_factors = (_factor_scale(spec) * _normals(seed, _USER_FACTORS, ids, spec.rank)).astype(np.float32)
    user_biases = spec.user_bias_std * counter_normal(seed, _USER_BIAS, ids)
    interaction = np.einsum("ij,ij->i", user_factors[owner], item_factors[items])
    pair = row_users.astype(np.uint64) * np.uint64(spec.n_items + 1) + (items + 1).astype(np.uint64)
    raw = spec.noise_std * counter_normal(seed, _NOISE, pair)
    raw += spec.global_mean + user_biases[owner] + item_biases[items] + interaction
    low, high = spec.rating_scale
    rating = np.clip(np.round(raw / spec.rating_step) * spec.rating_step, low, high)
    return pd.DataFrame({
        USER: row_users,
        ITEM: items.astype(np.int64) + 1,
        RATING: rating.astype(np.float32),
        TIMESTAMP: _timestamps(spec, seed, users, owner, pair),
    })


def _choose_items(users: np.ndarray, counts: np.ndarray, alias_table: tuple[np.ndarray, np.ndarray],
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """For each user, the first ``count`` distinct items of the user's own stream of draws.

    Returns ``(owner, item)``: the position of the user in ``users`` and a 0-based item index,
    ordered by user and then by draw. Users still short of distinct items after a round
    redraw a stream twice as long; the result does not depend on the rounds.
    """
    n_items = len(alias_table[0])
    draws = counts + counts // 4 + 8
    pending = np.arange(len(users))
    owners, chosen = [], []
    while pending.size:
        lengths = draws[pending]
        owner = np.repeat(pending, lengths)
        starts = np.cumsum(lengths) - lengths
        position = np.arange(owner.size, dtype=np.int64) - np.repeat(starts, lengths)
        uniform = counter_uniform(seed, _ITEM_DRAWS, users[owner].astype(np.uint64), position.astype(np.uint64))
        item = _draw_items(alias_table, uniform)
        _, first = np.unique(owner.astype(np.int64) * n_items + item, return_index=True)
        first.sort()  # first occurrence of each (user, item), in stream order
        first_owner = owner[first]
        distinct = np.bincount(first_owner, minlength=len(users))
        rank_in_user = np.arange(first.size) - np.repeat(np.cumsum(distinct) - distinct, distinct)
        done = distinct >= counts
        keep = done[first_owner] & (rank_in_user < counts[first_owner])
        owners.append(first_owner[keep])
        chosen.append(item[first[keep]])
        pending = pending[~done[pending]]
        draws[pending] *= 2
    owner = np.concatenate(owners)
    item = np.concatenate(chosen)
    order = np.argsort(owner, kind="stable")
    return owner[order], item[order]


def _timestamps(spec: SyntheticSpec, seed: int, users: np.ndarray, owner: np.ndarray, pair: np.ndarray) -> np.ndarray:
    """Each user is active from a random start for a random share of the remaining time."""
    first, last = spec.time_range
    ids = users.astype(np.uint64)
    start = first + counter_uniform(seed, _TIME_START, ids) * (last - first)
    span = (last - start) * counter_uniform(seed, _TIME_SPAN, ids) ** 2
    offsets = counter_uniform(seed, _TIME_RATING, pair) * span[owner]
    return np.floor(start[owner] + offsets).astype(np.int64)
