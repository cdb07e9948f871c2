"""Every estimator passes the contract of tests/contract.py; a new one joins with one class."""

from contract import EstimatorContract, contract_ratings, single_worker_cluster  # noqa: F401 - fixtures

import dmf


class TestALS(EstimatorContract):
    estimator_class, defaults = dmf.ALS, {"rank": 4, "max_iter": 3}


class TestNonnegativeALS(EstimatorContract):
    estimator_class, defaults = dmf.ALS, {"rank": 4, "max_iter": 3, "nonnegative": True}


class TestImplicitALS(EstimatorContract):
    estimator_class, defaults = dmf.ImplicitALS, {"rank": 4, "max_iter": 3}


class TestSGD(EstimatorContract):
    estimator_class, defaults = dmf.SGD, {"rank": 4, "max_iter": 3, "grid": 3}


class TestSVD(EstimatorContract):
    estimator_class, defaults = dmf.SVD, {"rank": 4, "n_iter": 2}


class TestCentredSVD(EstimatorContract):
    estimator_class, defaults = dmf.SVD, {"rank": 4, "n_iter": 2, "center": True}


class TestBPMF(EstimatorContract):
    estimator_class, defaults = dmf.BPMF, {"rank": 4, "n_samples": 5, "burn_in": 2}
