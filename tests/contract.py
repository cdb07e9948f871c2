"""The contract every dmf estimator passes (as implicit's RecommenderBaseTestMixin).

A new estimator joins with one class in ``tests/test_contract.py``::

    class TestSGD(EstimatorContract):
        estimator_class, defaults = dmf.SGD, {"rank": 4, "max_iter": 3}

Everything here is derived from the estimator's parameter spec and public API, so the
suite needs nothing else from it. One model per estimator is fitted once per class on the
session cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT
from distributed import Client, LocalCluster, get_task_stream
from helpers import random_ratings

import dmf
from dmf.model import FittedModel
from dmf.model.params import param_specs

N_USERS, N_ITEMS = 40, 30


@pytest.fixture(scope="session")
def contract_ratings() -> pd.DataFrame:
    return random_ratings(N_USERS, N_ITEMS, 0.3, seed=21)


@pytest.fixture(scope="session")
def single_worker_cluster():
    """A second cluster, of one worker: results must not depend on the worker count."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster


class EstimatorContract:
    """Mixin of the contract tests; subclasses set ``estimator_class`` and the ``defaults``
    (small, fast parameters) that every test starts from."""

    estimator_class: type = None
    defaults: dict = {}

    @classmethod
    def blocks(cls, n_blocks: int) -> dict:
        """``n_blocks`` when the estimator has that parameter (it never changes the result)."""
        return {"n_blocks": n_blocks} if "n_blocks" in {spec.name for spec in param_specs(cls.estimator_class)} else {}

    def make(self, **params):
        return self.estimator_class(**{**self.defaults, **params})

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, cluster, contract_ratings):
        """(estimator fitted with 2 blocks on the 2-worker cluster, its task stream)."""
        with Client(cluster, set_as_default=True) as client, get_task_stream(client) as stream:
            estimator = cls.estimator_class(**{**cls.defaults, **cls.blocks(2), "seed": 5}).fit(contract_ratings)
        return estimator, stream.data, set(cluster.scheduler_info["workers"])

    # -- the fitted model ---------------------------------------------------------------------
    def test_fit_produces_one_fitted_model(self, fitted, contract_ratings):
        estimator, _, _ = fitted
        model = estimator.model_
        assert isinstance(model, FittedModel)
        assert model.estimator == type(estimator).__name__
        assert model.params == estimator.get_params()
        assert estimator.user_factors_ is model.user_factors
        assert len(model.user_ids) == contract_ratings["user"].nunique()
        assert np.isfinite(model.user_factors).all() and np.isfinite(model.item_factors).all()
        assert estimator.history_ and all("seconds" in record for record in estimator.history_)
        if "max_iter" in estimator.get_params():
            assert len(estimator.history_) == estimator.max_iter

    def test_the_cluster_ran_the_fit_on_every_worker(self, fitted):
        _, tasks, workers = fitted
        assert tasks, "no task ran on the cluster"
        assert {task["worker"] for task in tasks} == workers

    def test_get_params_round_trips(self, fitted):
        estimator, _, _ = fitted
        again = type(estimator)(**estimator.get_params())
        assert again.get_params() == estimator.get_params()
        assert repr(again) == repr(estimator)

    # -- parameters ---------------------------------------------------------------------------
    def test_every_parameter_is_validated_by_type_and_range(self):
        specs = param_specs(self.make())
        assert specs, "the estimator declares no parameters"
        for spec in specs:
            wrong_kind = {"int": 1.5, "float": "0.1", "bool": 1, "choice": 7}[spec.kind]
            with pytest.raises((TypeError, ValueError), match=spec.name):
                self.make(**{spec.name: wrong_kind})
            if spec.kind == "int":
                with pytest.raises(TypeError, match=spec.name):
                    self.make(**{spec.name: True})
            if spec.minimum is not None:
                below = spec.minimum - (0 if spec.open_minimum else 1)
                with pytest.raises(ValueError, match=spec.name):
                    self.make(**{spec.name: int(below) if spec.kind == "int" else below})
            if spec.maximum is not None:
                with pytest.raises(ValueError, match=spec.name):
                    self.make(**{spec.name: int(spec.maximum) + 1 if spec.kind == "int" else spec.maximum * 2})
            if spec.kind == "float":
                with pytest.raises(ValueError, match=spec.name):
                    self.make(**{spec.name: float("nan")})
            if not spec.optional:
                with pytest.raises(TypeError, match=spec.name):
                    self.make(**{spec.name: None})

    # -- determinism --------------------------------------------------------------------------
    def test_same_seed_bit_identical_for_any_blocks_and_workers(self, fitted, contract_ratings,
                                                               single_worker_cluster):
        estimator, _, _ = fitted
        with Client(single_worker_cluster, set_as_default=True):
            others = [self.make(**self.blocks(n_blocks), seed=5).fit(contract_ratings) for n_blocks in (1, 3)]
        for other in others:
            for name in ("user_factors_", "item_factors_", "user_biases_", "item_biases_"):
                np.testing.assert_array_equal(getattr(other, name), getattr(estimator, name), err_msg=name)

    # -- scoring ------------------------------------------------------------------------------
    def test_unknown_ids_follow_each_policy(self, fitted, client):
        estimator, _, _ = fitted
        known_user, known_item = estimator.user_ids_[0], estimator.item_ids_[0]
        pairs = pd.DataFrame({"user": [known_user, -1, known_user, -1],
                              "item": [known_item, known_item, -2, -2]})
        model = estimator.model_
        mean = model.global_mean if model.has_biases else 0.0
        by_bias = type(estimator)(**{**estimator.get_params(), "unknown": "bias"})
        by_bias.model_ = model
        predicted = by_bias.predict(pairs).compute()["prediction"].to_numpy(np.float64)
        expected_fallback = [mean + estimator.item_biases_[0], mean + estimator.user_biases_[0], mean]
        if getattr(estimator, "clip", False):
            expected_fallback = np.clip(expected_fallback, *model.rating_range)
        np.testing.assert_allclose(predicted[1:], expected_fallback, rtol=1e-6)
        by_nan = type(estimator)(**{**estimator.get_params(), "unknown": "nan"})
        by_nan.model_ = model
        nan = by_nan.predict(pairs).compute()["prediction"].to_numpy()
        assert np.isfinite(nan[0]) and np.isnan(nan[1:]).all()
        by_drop = type(estimator)(**{**estimator.get_params(), "unknown": "drop"})
        by_drop.model_ = model
        dropped = by_drop.predict(pairs).compute()
        assert list(zip(dropped["user"], dropped["item"])) == [(known_user, known_item)]

    def test_seen_items_are_never_recommended_and_the_opt_out_restores_them(self, fitted, contract_ratings, client,
                                                                            tmp_path):
        estimator, _, _ = fitted
        estimator.save(tmp_path / "model")
        loaded = dmf.load(tmp_path / "model")
        top = loaded.recommend(N_ITEMS).compute()
        rated = set(zip(contract_ratings["user"], contract_ratings["item"]))
        recommended = set(zip(top["user"], top["item"]))
        assert recommended and not recommended & rated
        per_user = top.groupby("user").size()
        rated_per_user = contract_ratings.groupby("user").size()
        assert (per_user == N_ITEMS - rated_per_user.reindex(per_user.index)).all()
        everything = loaded.recommend(N_ITEMS, exclude_seen=False).compute()
        assert len(everything) == N_ITEMS * len(loaded.user_ids_)
        first_user = loaded.user_ids_[0]
        extra = top[top["user"] == first_user].head(2)[["user", "item"]]
        fewer = loaded.recommend(N_ITEMS, users=[first_user], exclude=extra).compute()
        assert not set(fewer["item"]) & set(extra["item"])
        assert len(fewer) == per_user[first_user] - 2

    def test_saved_model_serves_in_a_fresh_process_without_a_cluster(self, fitted, contract_ratings, client,
                                                                     tmp_path):
        estimator, _, _ = fitted
        pairs = contract_ratings.head(25)[["user", "item"]]
        expected = estimator.predict(pairs).compute()["prediction"].to_numpy()
        expected_top = estimator.recommend(3, users=list(estimator.user_ids_[:5])).compute()
        estimator.save(tmp_path / "model")
        code = (
            "import json, sys, pandas as pd, dmf\n"
            "model = dmf.load(sys.argv[1])\n"
            "pairs = pd.DataFrame(json.loads(sys.argv[2]))\n"
            "top = model.recommend(3, users=list(model.user_ids_[:5])).compute()\n"
            "print(json.dumps({'kind': type(model).__name__, 'params': model.get_params(),\n"
            "  'prediction': model.predict(pairs).compute()['prediction'].astype(float).tolist(),\n"
            "  'top': top['item'].tolist(), 'scores': top['score'].astype(float).tolist()}))\n"
        )
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model"), json.dumps(pairs.to_dict("list"), default=int)],
                              capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
        assert done.returncode == 0, done.stderr
        served = json.loads(done.stdout.strip().splitlines()[-1])
        assert served["kind"] == type(estimator).__name__
        assert served["params"] == json.loads(json.dumps(estimator.get_params()))
        np.testing.assert_array_equal(np.float32(served["prediction"]), expected)
        assert served["top"] == expected_top["item"].tolist()
        np.testing.assert_array_equal(np.float32(served["scores"]), expected_top["score"].to_numpy())
