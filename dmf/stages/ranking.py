"""Top-k ranking metrics (precision, recall, NDCG, MAP, MRR, hit rate, coverage) as a Dask stage.

The recommendations (``user, rank, item``) and the relevant held-out pairs (``user, item``)
are concatenated and shuffled once on ``user``, so that each partition holds every row of
its users. A plain pandas kernel turns a partition into per-user metric values and sums
them; only those sums (one row per partition) and the number of distinct recommended items
reach the client, as in :mod:`dmf.metrics`.
"""

from __future__ import annotations

import numbers
from typing import Literal

import dask.dataframe as dd
import numpy as np
import pandas as pd

from dmf import scheduler
from dmf.columns import ITEM, RANK, RATING, USER
from dmf.frames import as_dask_frame, require_columns

PrecisionDenominator = Literal["k", "min"]
PRECISION_DENOMINATORS = ("k", "min")

#: Per-user metric columns of :func:`user_ranking_values`, in the order of the result.
USER_METRICS = ["precision", "recall", "ndcg", "average_precision", "reciprocal_rank", "hit"]
_PARTIAL_COLUMNS = [*USER_METRICS, "users", "users_without_recommendations"]
_PARTIAL_META = pd.DataFrame({c: pd.Series([], dtype="float64") for c in _PARTIAL_COLUMNS})
_IS_RELEVANT = "is_relevant"


def user_ranking_values(
    recommendations: pd.DataFrame, relevant: pd.DataFrame, k: int, precision_denominator: PrecisionDenominator = "k"
) -> pd.DataFrame:
    """Ranking metrics of each user with at least one relevant item (pure pandas kernel).

    Parameters
    ----------
    recommendations
        ``user, rank, item`` rows with ``1 <= rank <= k`` (rank 1 = best). Ranks are used
        as positions; scores are ignored. A user may have fewer than ``k`` rows or none.
    relevant
        ``user, item``: the relevant held-out pairs (repeated pairs count once).
    k
        Cut-off of the lists.
    precision_denominator
        ``"k"``: precision = hits / k; ``"min"``: hits / min(k, number of relevant items).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``user`` (every user of ``relevant``, users without recommendations
        included with zeros), float64 columns :data:`USER_METRICS` plus ``n_relevant``,
        ``n_hits`` and ``n_recommended``. See :func:`ranking_metrics` for the definitions.
    """
    if recommendations.duplicated([USER, ITEM]).any() or recommendations.duplicated([USER, RANK]).any():
        example = recommendations[recommendations.duplicated([USER, ITEM], keep=False)
                                  | recommendations.duplicated([USER, RANK], keep=False)].head(4)
        raise ValueError(f"recommendations repeat a (user, item) or (user, rank) pair, e.g. {example.to_dict('records')}; "
                         "each user needs distinct items with distinct ranks")
    if (recommendations[RANK] < 1).any():
        raise ValueError(f"recommendations have rank {recommendations[RANK].min()}; ranks start at 1 (best)")
    relevant = relevant[[USER, ITEM]].drop_duplicates()
    n_relevant = relevant.groupby(USER, sort=False).size().astype(np.float64)
    n_recommended = recommendations.groupby(USER, sort=False).size().reindex(n_relevant.index, fill_value=0)
    hits = recommendations[[USER, ITEM, RANK]].merge(relevant, on=[USER, ITEM], how="inner")
    hits = hits.sort_values([USER, RANK], kind="stable")
    rank = hits[RANK].to_numpy(dtype=np.float64)
    hits = pd.DataFrame({
        USER: hits[USER].to_numpy(),
        "n_hits": 1.0,
        "dcg": 1.0 / np.log2(rank + 1.0),
        "precision_at_hit": (hits.groupby(USER, sort=False).cumcount().to_numpy() + 1.0) / rank,
        "first_rank": rank,
    })
    per_user = hits.groupby(USER, sort=False).agg(
        n_hits=("n_hits", "sum"), dcg=("dcg", "sum"), precision_sum=("precision_at_hit", "sum"),
        first_rank=("first_rank", "min"),
    ).reindex(n_relevant.index)
    n_hits = per_user["n_hits"].fillna(0.0).to_numpy()
    ideal = np.minimum(float(k), n_relevant.to_numpy())
    ideal_positions = int(ideal.max()) if len(ideal) else 0
    ideal_dcg = np.cumsum(1.0 / np.log2(np.arange(2, ideal_positions + 2)))
    values = {
        "precision": n_hits / (float(k) if precision_denominator == "k" else ideal),
        "recall": n_hits / n_relevant.to_numpy(),
        "ndcg": per_user["dcg"].fillna(0.0).to_numpy() / ideal_dcg[ideal.astype(np.int64) - 1],
        "average_precision": per_user["precision_sum"].fillna(0.0).to_numpy() / ideal,
        "reciprocal_rank": (1.0 / per_user["first_rank"]).fillna(0.0).to_numpy(),
        "hit": (n_hits > 0).astype(np.float64),
        "n_relevant": n_relevant.to_numpy(),
        "n_hits": n_hits,
        "n_recommended": n_recommended.to_numpy(dtype=np.float64),
    }
    return pd.DataFrame(values, index=n_relevant.index)


def ranking_partials_for_users(part: pd.DataFrame, k: int, precision_denominator: PrecisionDenominator) -> pd.DataFrame:
    """One row of metric sums over the users of a partition holding all rows of its users."""
    if pd.isna(k):
        raise ValueError("the recommendations are empty, so k cannot default to their largest rank; pass k")
    is_relevant = part[_IS_RELEVANT].to_numpy(dtype=bool)
    values = user_ranking_values(part[~is_relevant], part[is_relevant], int(k), precision_denominator)
    sums = [float(values[c].sum()) for c in USER_METRICS]
    return pd.DataFrame([[*sums, float(len(values)), float((values["n_recommended"] == 0).sum())]],
                        columns=_PARTIAL_COLUMNS)


def _common_id_dtype(recommendations: dd.DataFrame, test: dd.DataFrame, column: str):
    """The dtype both frames' ``column`` is cast to, or a TypeError when ids cannot match."""
    left, right = recommendations._meta[column].dtype, test._meta[column].dtype
    if pd.api.types.is_integer_dtype(left) and pd.api.types.is_integer_dtype(right):
        return np.dtype("int64")
    if pd.api.types.is_string_dtype(left) and pd.api.types.is_string_dtype(right):
        return np.dtype(object) if left != right else left
    if left == right:
        return left
    raise TypeError(f"column {column!r} has dtype {left} in the recommendations but {right} in test, so no id "
                    f"could match; cast one of them, e.g. test[{column!r}].astype({str(left)!r})")


def _catalog_items(catalog_size, catalog):
    """An int, a lazy distinct-item count of ``catalog``, or None (coverage not computed)."""
    if catalog_size is not None and catalog is not None:
        raise ValueError("give catalog_size or catalog, not both")
    if catalog is not None:
        catalog = as_dask_frame(catalog, "catalog")
        require_columns(catalog, [ITEM], "catalog")
        return catalog[ITEM].nunique(split_out=1)
    if catalog_size is not None and (not isinstance(catalog_size, numbers.Integral) or catalog_size < 1):
        raise ValueError(f"catalog_size must be a positive integer, got {catalog_size!r}")
    return catalog_size


def ranking_metrics(
    recommendations,
    test,
    *,
    k: int | None = None,
    relevance_threshold: float | None = None,
    precision_denominator: PrecisionDenominator = "k",
    catalog_size: int | None = None,
    catalog=None,
    client=None,
) -> dict:
    """Top-k ranking metrics of recommendations against held-out pairs, in one Dask pass.

    Only users with at least one relevant test item are evaluated; each metric is the mean
    over them of a per-user value. Users with relevant items but no recommendations count
    with zeros (``users_without_recommendations`` reports how many). With ``R`` the user's
    relevant items, ``hits`` the relevant items at rank ``<= k``, ``m = min(k, |R|)``:

    - precision@k = hits / k (``precision_denominator="k"``, as Spark's ``precisionAt``;
      a list shorter than ``k`` still divides by ``k``) or hits / m (``"min"``, as
      ``implicit``'s ``precision_at_k``);
    - recall@k = hits / |R|;
    - NDCG@k = DCG / IDCG with binary gains, DCG = Σ over hits of 1 / log2(rank + 1), IDCG
      the DCG of m hits at ranks 1..m;
    - MAP@k = mean of AP@k = (1 / m) Σ over hits at rank r of precision@r (hits at rank
      ``<= r`` divided by r); the same normalisation as Spark's ``meanAveragePrecisionAt``
      and ``implicit``, except that Spark also averages users with no relevant item as 0;
    - MRR = mean of 1 / rank of the first hit (0 without a hit within k);
    - hit_rate@k = fraction of users with at least one hit;
    - coverage = distinct items recommended at rank ``<= k`` (to any user, evaluated or
      not) / catalog size.

    Parameters
    ----------
    recommendations
        Pandas or Dask DataFrame ``user, rank, item`` (``score`` ignored: ranks decide, so
        ties in score do not matter), rank 1 = best, as from ``ALS.recommend``.
    test
        Pandas or Dask DataFrame ``user, item`` (and ``rating`` with a threshold). Ids are
        ints or strings of the same kind as in ``recommendations``.
    k
        Use recommendations with ``rank <= k``; default: the largest rank present.
    relevance_threshold
        A test pair is relevant when its ``rating >= relevance_threshold``; None (default)
        makes every test pair relevant (implicit feedback).
    precision_denominator
        ``"k"`` or ``"min"``, see above.
    catalog_size, catalog
        The catalog size, or a frame with an ``item`` column whose distinct items form the
        catalog (e.g. the training ratings). Without either, ``coverage`` is None.
    client
        Dask client; None means the current one.

    Returns
    -------
    dict
        ``precision@k``, ``recall@k``, ``ndcg@k``, ``map@k``, ``mrr``, ``hit_rate@k``,
        ``coverage`` (floats), ``users`` (evaluated users), ``users_without_recommendations``,
        ``recommended_items`` (distinct), ``catalog_size``, ``k``, ``precision_denominator``,
        ``relevance_threshold``.
    """
    if precision_denominator not in PRECISION_DENOMINATORS:
        raise ValueError(f"precision_denominator must be one of {PRECISION_DENOMINATORS}, got {precision_denominator!r}")
    if k is not None and (not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1):
        raise ValueError(f"k must be a positive integer or None (the largest rank present), got {k!r}")
    if relevance_threshold is not None and not isinstance(relevance_threshold, numbers.Real):
        raise TypeError(f"relevance_threshold must be a number or None, got {type(relevance_threshold).__name__}")
    recommendations = as_dask_frame(recommendations, "recommendations")
    test = as_dask_frame(test, "test")
    require_columns(recommendations, [USER, RANK, ITEM], "recommendations")
    require_columns(test, [USER, ITEM] + ([RATING] if relevance_threshold is not None else []), "test")
    if not pd.api.types.is_integer_dtype(recommendations._meta[RANK].dtype):
        raise TypeError(f"recommendations column 'rank' must hold integers, got {recommendations._meta[RANK].dtype}")
    catalog_items = _catalog_items(catalog_size, catalog)
    client = scheduler.resolve_client(client)

    id_dtypes = {c: _common_id_dtype(recommendations, test, c) for c in (USER, ITEM)}
    ranked = recommendations[[USER, ITEM, RANK]].astype({**id_dtypes, RANK: "int64"})
    if k is not None:
        ranked = ranked[ranked[RANK] <= k]
    if relevance_threshold is not None:
        test = test[test[RATING] >= relevance_threshold]
    relevant = test[[USER, ITEM]].astype(id_dtypes).assign(**{RANK: np.int64(0), _IS_RELEVANT: True})
    ranked = ranked.assign(**{_IS_RELEVANT: False})
    n_partitions = max(recommendations.npartitions, test.npartitions)
    by_user = dd.concat([ranked, relevant]).shuffle(on=USER, npartitions=n_partitions)
    cutoff = k if k is not None else ranked[RANK].max()
    partials = by_user.map_partitions(ranking_partials_for_users, cutoff, precision_denominator, meta=_PARTIAL_META)
    totals, recommended_items, cutoff, catalog_items = scheduler.compute(
        [partials.sum(), ranked[ITEM].nunique(split_out=1), cutoff, catalog_items], client, what="ranking metrics"
    )
    users = int(totals["users"])
    if users == 0:
        threshold = "" if relevance_threshold is None else f" with rating >= {relevance_threshold}"
        raise ValueError(f"no test user has a relevant item{threshold}; nothing to evaluate")
    coverage = None
    if catalog_items is not None:
        if recommended_items > catalog_items:
            raise ValueError(f"{recommended_items} distinct items are recommended but the catalog has only "
                             f"{catalog_items}; pass the full catalog (e.g. the training ratings)")
        coverage = float(recommended_items / catalog_items)
    return {
        "precision@k": float(totals["precision"] / users),
        "recall@k": float(totals["recall"] / users),
        "ndcg@k": float(totals["ndcg"] / users),
        "map@k": float(totals["average_precision"] / users),
        "mrr": float(totals["reciprocal_rank"] / users),
        "hit_rate@k": float(totals["hit"] / users),
        "coverage": coverage,
        "users": users,
        "users_without_recommendations": int(totals["users_without_recommendations"]),
        "recommended_items": int(recommended_items),
        "catalog_size": None if catalog_items is None else int(catalog_items),
        "k": int(cutoff),
        "precision_denominator": precision_denominator,
        "relevance_threshold": relevance_threshold,
    }
