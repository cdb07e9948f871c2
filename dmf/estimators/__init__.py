"""The public estimators; each produces a :class:`~dmf.model.FittedModel`."""

from dmf.estimators.als import ALS, ImplicitALS
from dmf.estimators.base import ESTIMATORS, Estimator, load
from dmf.estimators.sgd import SGD
from dmf.estimators.svd import SVD

__all__ = ["ALS", "ESTIMATORS", "Estimator", "ImplicitALS", "SGD", "SVD", "load"]
