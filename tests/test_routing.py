"""Routed factor exchange: the routes against a set-based reference, the same factors as the
all-to-all exchange bit for bit, and fewer bytes between workers where blocks reference a
small part of the other side (on a many-worker LocalCluster)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster
from helpers import random_ratings

import dmf
from dmf.engine.kernels import RatingBlock
from dmf.engine.routing import ROUTE_ABOVE_BYTES, factor_bytes_moved, route_block, routes_chosen


def test_routes_are_the_rows_each_other_block_references():
    rng = np.random.default_rng(5)
    n_rows, n_other = 30, 47
    dense = rng.random((n_rows, n_other)) < 0.08
    dense[7] = False  # a row without ratings
    indptr = np.concatenate([[0], np.cumsum(dense.sum(axis=1))]).astype(np.int64)
    cols = np.nonzero(dense)[1].astype(np.int32)
    block = RatingBlock(start=100, indptr=indptr, cols=cols, values=np.ones(len(cols), np.float32))
    other_bounds = np.array([0, 10, 11, 30, 47])
    compact, *routes = route_block(block, other_bounds)

    distinct = sorted(set(cols.tolist()))
    assert compact.cols.tolist() == [distinct.index(c) for c in cols.tolist()]
    assert compact.start == 100 and compact.indptr is block.indptr
    for d in range(4):
        lo, hi = other_bounds[d], other_bounds[d + 1]
        expected = [r for r in range(n_rows) if dense[r, lo:hi].any()]
        assert routes[d].tolist() == expected and routes[d].dtype == np.int32
    # concatenated in block order, what block d sends is exactly this block's distinct columns
    # (seen from the other side: the same construction on the transposed ratings)
    transposed = dense.T
    t_indptr = np.concatenate([[0], np.cumsum(transposed.sum(axis=1))]).astype(np.int64)
    t_cols = np.nonzero(transposed)[1].astype(np.int32)
    _, *back = route_block(RatingBlock(0, t_indptr, t_cols, np.ones(len(t_cols), np.float32)),
                           np.array([0, n_rows]))
    assert back[0].tolist() == distinct


def test_auto_routes_only_above_the_threshold():
    rows_at_threshold = ROUTE_ABOVE_BYTES // (65 * 4)
    assert not routes_chosen("auto", rows_at_threshold, 1000, rank=64)
    assert routes_chosen("auto", 1000, rows_at_threshold + 1, rank=64)
    assert routes_chosen("routed", 10, 10, rank=2) and not routes_chosen("all", 10**9, 10**9, rank=64)
    with pytest.raises(ValueError, match="exchange must be one of 'auto', 'all', 'routed', got 'some'"):
        routes_chosen("some", 1, 1, rank=1)


@pytest.mark.parametrize(("estimator", "params"), [
    (dmf.ALS, {}),
    (dmf.ALS, {"solver": "cholesky", "biases": False}),
    (dmf.ALS, {"nonnegative": True}),
    (dmf.ImplicitALS, {}),
])
def test_routed_exchange_gives_bit_identical_factors(client, estimator, params):
    ratings = random_ratings(230, 90, 0.1, seed=8)
    common = {"rank": 5, "max_iter": 4, "n_blocks": 5, "seed": 3, **params}
    everywhere = estimator(exchange="all", **common).fit(ratings, client=client)
    routed = estimator(exchange="routed", **common).fit(ratings, client=client)
    np.testing.assert_array_equal(routed.user_factors_, everywhere.user_factors_)
    np.testing.assert_array_equal(routed.item_factors_, everywhere.item_factors_)
    if estimator is dmf.ALS and params.get("biases", True):
        np.testing.assert_array_equal(routed.item_biases_, everywhere.item_biases_)
    def without_seconds(history: list[dict]) -> list[dict]:
        return [{key: value for key, value in record.items() if key != "seconds"} for record in history]

    assert without_seconds(routed.history_) == without_seconds(everywhere.history_)  # the same losses, exactly


def _banded_ratings(n_users: int, n_items: int, width: int, seed: int) -> pd.DataFrame:
    """Each user rates items near their own position: a block references a narrow band of the
    other side, as users of one region or season would."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), 12)
    centre = users * n_items // n_users
    items = np.clip(centre + rng.integers(-width, width + 1, len(users)), 0, n_items - 1)
    frame = pd.DataFrame({"user": users, "item": items, "rating": rng.integers(1, 6, len(users)).astype(np.float32)})
    return frame.drop_duplicates(["user", "item"]).reset_index(drop=True)


def test_many_workers_exchange_fewer_bytes_by_routes_and_the_same_factors():
    ratings = _banded_ratings(2400, 1600, 40, seed=2)
    params = {"rank": 16, "n_blocks": 8, "seed": 1, "max_iter": 4}
    per_epoch, models = {}, {}
    with LocalCluster(n_workers=8, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        for exchange in ("all", "routed"):
            factor_bytes_moved(client)
            models[exchange] = dmf.ALS(exchange=exchange, **params).fit(ratings, client=client)
            per_epoch[exchange] = factor_bytes_moved(client) / params["max_iter"]
    np.testing.assert_array_equal(models["routed"].user_factors_, models["all"].user_factors_)
    np.testing.assert_array_equal(models["routed"].item_factors_, models["all"].item_factors_)
    # all-to-all: each of 8 workers fetches the 7 remote tables of each side, ~7 × (2400 + 1600)
    # rows × 17 float32 per epoch; routed: a block's band reaches about one other block
    table_bytes = (2400 + 1600) * 17 * 4
    assert per_epoch["all"] > 5 * table_bytes
    assert per_epoch["routed"] < 0.3 * per_epoch["all"], per_epoch
