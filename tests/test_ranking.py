"""Ranking metrics: hand-computed known answers, a brute-force reference, partition invariance."""

from math import log2

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import get_task_stream

from dmf.stages.ranking import ranking_metrics, user_ranking_values

# Top-3 lists; u1's first two items tie in score (ranks decide), u3 has only two
# recommendations, u4 has recommendations but no test item, u5 and u6 have test items only.
RECOMMENDATIONS = pd.DataFrame(
    [("u1", 1, "a", 0.9), ("u1", 2, "b", 0.9), ("u1", 3, "c", 0.5),
     ("u2", 1, "c", 0.8), ("u2", 2, "d", 0.7), ("u2", 3, "a", 0.1),
     ("u3", 1, "a", 0.6), ("u3", 2, "b", 0.6),
     ("u4", 1, "a", 0.9), ("u4", 2, "b", 0.8), ("u4", 3, "c", 0.7)],
    columns=["user", "rank", "item", "score"],
)
TEST = pd.DataFrame(
    [("u1", "a", 5.0), ("u1", "c", 4.0), ("u1", "e", 2.0),
     ("u2", "d", 3.0), ("u2", "f", 5.0),
     ("u3", "b", 5.0),
     ("u5", "a", 4.0),
     ("u6", "z", 1.0)],
    columns=["user", "item", "rating"],
)
CATALOG = pd.DataFrame({"item": list("abcdefz")})

# Every test pair relevant, k = 3. Hits: u1 at ranks 1 and 3 of {a, c, e}; u2 at rank 2 of
# {d, f}; u3 at rank 2 of {b}; u5 and u6 have no recommendations (zeros); u4 is left out.
USERS = 5
IMPLICIT_K3 = {
    "precision@k": (2 / 3 + 1 / 3 + 1 / 3 + 0 + 0) / USERS,
    "recall@k": (2 / 3 + 1 / 2 + 1 / 1 + 0 + 0) / USERS,
    "ndcg@k": ((1 + 1 / log2(4)) / (1 + 1 / log2(3) + 1 / log2(4))
               + (1 / log2(3)) / (1 + 1 / log2(3))
               + (1 / log2(3)) / 1) / USERS,
    "map@k": ((1 / 1 + 2 / 3) / 3 + (1 / 2) / 2 + (1 / 2) / 1) / USERS,
    "mrr": (1 / 1 + 1 / 2 + 1 / 2) / USERS,
    "hit_rate@k": 3 / USERS,
    "coverage": 4 / 7,  # a, b, c, d of a..f and z
}


def _assert_metrics(result: dict, expected: dict, rel: float = 1e-12) -> None:
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, rel=rel), name


def _as_ints(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["user"] = out["user"].str[1:].astype("int32") * 1000
    out["item"] = out["item"].map(lambda item: ord(item)).astype("int64")
    return out


@pytest.mark.parametrize("ids", ["strings", "ints"])
def test_known_answer_every_metric(client, ids):
    recs, test, catalog = RECOMMENDATIONS, TEST, CATALOG
    if ids == "ints":
        recs, test, catalog = _as_ints(recs), _as_ints(test), CATALOG.assign(item=CATALOG["item"].map(ord))
    with get_task_stream(client) as stream:
        result = ranking_metrics(dd.from_pandas(recs, npartitions=2), test, catalog=catalog)
    _assert_metrics(result, IMPLICIT_K3)
    assert result["users"] == USERS and result["users_without_recommendations"] == 2
    assert result["k"] == 3 and result["precision_denominator"] == "k"
    assert result["recommended_items"] == 4 and result["catalog_size"] == 7
    # The per-user kernel ran on the cluster, on the user-partitioned frame.
    names = {t["key"][0] if isinstance(t["key"], tuple) else t["key"] for t in stream.data}
    assert any(name.startswith("ranking_partials_for_users") for name in names)


def test_min_denominator_and_k_larger_than_the_lists(client):
    # k = 10: precision divides by 10 (or by min(10, |relevant|)); a u3 list of two items
    # and u1's three are shorter than k. The other metrics do not change (|relevant| <= 3).
    by_k = ranking_metrics(RECOMMENDATIONS, TEST, k=10, catalog_size=7)
    by_min = ranking_metrics(RECOMMENDATIONS, TEST, k=10, catalog_size=7, precision_denominator="min")
    assert by_k["precision@k"] == pytest.approx((2 / 10 + 1 / 10 + 1 / 10) / USERS)
    assert by_min["precision@k"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 1) / USERS)
    assert by_min["precision_denominator"] == "min" and by_min["k"] == 10
    for result in (by_k, by_min):
        _assert_metrics(result, {key: v for key, v in IMPLICIT_K3.items() if key != "precision@k"})
    # At k = 3 "min" divides u1 by min(3, 3), u2 by min(3, 2), u3 by min(3, 1).
    at_3 = ranking_metrics(RECOMMENDATIONS, TEST, k=3, precision_denominator="min")
    assert at_3["precision@k"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 1) / USERS)
    assert at_3["coverage"] is None


def test_cutoff_below_the_list_length(client):
    # k = 1: only rank-1 items count. u1 hits a; u2 (c) and u3 (a) miss.
    result = ranking_metrics(RECOMMENDATIONS, TEST, k=1, catalog_size=7)
    _assert_metrics(result, {
        "precision@k": (1 / 1) / USERS,
        "recall@k": (1 / 3) / USERS,
        "ndcg@k": 1 / USERS,
        "map@k": (1 / min(1, 3)) / USERS,
        "mrr": 1 / USERS,
        "hit_rate@k": 1 / USERS,
        "coverage": 2 / 7,  # a (u1, u3, u4) and c (u2)
    })


def test_explicit_threshold_relevance(client):
    # Relevant = rating >= 4: u1 {a, c}, u2 {f}, u3 {b}, u5 {a}; u6 (rated 1) drops out.
    result = ranking_metrics(RECOMMENDATIONS, TEST, relevance_threshold=4.0)
    users = 4
    _assert_metrics(result, {
        "precision@k": (2 / 3 + 0 + 1 / 3 + 0) / users,
        "recall@k": (2 / 2 + 0 + 1 / 1 + 0) / users,
        "ndcg@k": ((1 + 1 / log2(4)) / (1 + 1 / log2(3)) + 0 + (1 / log2(3)) / 1 + 0) / users,
        "map@k": ((1 / 1 + 2 / 3) / 2 + 0 + (1 / 2) / 1 + 0) / users,
        "mrr": (1 / 1 + 0 + 1 / 2 + 0) / users,
        "hit_rate@k": 2 / users,
    })
    assert result["users"] == users and result["relevance_threshold"] == 4.0
    assert result["users_without_recommendations"] == 1


def test_ranks_not_scores_decide_and_duplicates_count_once(client):
    # Swapping u1's tied scores or shuffling rows changes nothing; a repeated test pair is one.
    recs = RECOMMENDATIONS.sample(frac=1.0, random_state=1).assign(score=0.0)
    test = pd.concat([TEST, TEST.iloc[:2]], ignore_index=True)
    _assert_metrics(ranking_metrics(recs, test, catalog=CATALOG), IMPLICIT_K3)


def test_user_ranking_values_kernel_without_dask():
    recs = RECOMMENDATIONS[RECOMMENDATIONS["rank"] <= 3]
    values = user_ranking_values(recs, TEST, 3, "k").sort_index()
    assert list(values.index) == ["u1", "u2", "u3", "u5", "u6"]
    assert values.loc["u1", "average_precision"] == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert values.loc["u2", "reciprocal_rank"] == pytest.approx(1 / 2)
    assert (values.loc[["u5", "u6"], ["precision", "ndcg", "hit", "n_recommended"]] == 0).all().all()


def test_invalid_input_is_refused_with_the_fix(client):
    with pytest.raises(ValueError, match="precision_denominator"):
        ranking_metrics(RECOMMENDATIONS, TEST, precision_denominator="relevant")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ranking_metrics(RECOMMENDATIONS, TEST, k=0)
    with pytest.raises(ValueError, match="no column 'rating'"):
        ranking_metrics(RECOMMENDATIONS, TEST[["user", "item"]], relevance_threshold=4)
    with pytest.raises(TypeError, match="column 'user' has dtype"):
        ranking_metrics(_as_ints(RECOMMENDATIONS), TEST)
    with pytest.raises(ValueError, match="no test user has a relevant item"):
        ranking_metrics(RECOMMENDATIONS, TEST, relevance_threshold=6)
    with pytest.raises(ValueError, match="catalog has only 2"):
        ranking_metrics(RECOMMENDATIONS, TEST, catalog_size=2)
    with pytest.raises(ValueError, match="pass k"):
        ranking_metrics(RECOMMENDATIONS.iloc[:0], TEST)
    with pytest.raises(ValueError, match="repeat a"):
        ranking_metrics(pd.concat([RECOMMENDATIONS, RECOMMENDATIONS.iloc[:1]]), TEST)


def _brute_force(recs: pd.DataFrame, test: pd.DataFrame, k: int, denominator: str) -> dict:
    """Plain Python per user, straight from the definitions."""
    lists = {u: list(g.sort_values("rank")["item"][g["rank"] <= k]) for u, g in recs.groupby("user")}
    totals = dict.fromkeys(["precision@k", "recall@k", "ndcg@k", "map@k", "mrr", "hit_rate@k"], 0.0)
    relevant_by_user = test.groupby("user")["item"].agg(set)
    for user, relevant in relevant_by_user.items():
        ranked = lists.get(user, [])
        hit_ranks = [r for r, item in enumerate(ranked, start=1) if item in relevant]
        m = min(k, len(relevant))
        totals["precision@k"] += len(hit_ranks) / (k if denominator == "k" else m)
        totals["recall@k"] += len(hit_ranks) / len(relevant)
        totals["ndcg@k"] += sum(1 / log2(r + 1) for r in hit_ranks) / sum(1 / log2(r + 1) for r in range(1, m + 1))
        totals["map@k"] += sum((n + 1) / r for n, r in enumerate(hit_ranks)) / m
        totals["mrr"] += 1 / hit_ranks[0] if hit_ranks else 0.0
        totals["hit_rate@k"] += 1.0 if hit_ranks else 0.0
    return {name: total / len(relevant_by_user) for name, total in totals.items()}


def _random_case(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n_users, n_items = 300, 60
    rows = []
    for user in range(n_users):
        length = int(rng.integers(0, 13))  # some users get no list, some a short one
        for rank, item in enumerate(rng.choice(n_items, size=length, replace=False), start=1):
            rows.append((user, rank, int(item), 0.0))
    recs = pd.DataFrame(rows, columns=["user", "rank", "item", "score"])
    test_users = rng.integers(0, n_users + 40, 1500)  # some test users never recommended to
    test = pd.DataFrame({"user": test_users, "item": rng.integers(0, n_items, 1500)})
    return recs.sample(frac=1.0, random_state=seed), test


@pytest.mark.parametrize("k, denominator", [(5, "k"), (20, "min")])
def test_random_data_matches_brute_force_for_any_partitioning(client, k, denominator):
    recs, test = _random_case(seed=k)
    expected = _brute_force(recs, test, k, denominator)
    results = [
        ranking_metrics(dd.from_pandas(recs, npartitions=rec_parts), dd.from_pandas(test, npartitions=test_parts),
                        k=k, precision_denominator=denominator, catalog_size=60)
        for rec_parts, test_parts in [(1, 1), (3, 5), (7, 2)]
    ]
    for result in results:
        _assert_metrics(result, expected, rel=1e-9)
        assert result["users"] == test["user"].nunique()
        assert result["coverage"] == recs.loc[recs["rank"] <= k, "item"].nunique() / 60
    for result in results[1:]:
        assert {n: result[n] for n in expected} == pytest.approx({n: results[0][n] for n in expected}, rel=1e-12)
