"""The public estimators; each produces a :class:`~dmf.model.FittedModel`."""

from dmf.estimators.als import ALS, ImplicitALS
from dmf.estimators.base import ESTIMATORS, Estimator, load
from dmf.estimators.bpmf import BPMF
from dmf.estimators.sgd import SGD
from dmf.estimators.svd import SVD

__all__ = ["ALS", "BPMF", "ESTIMATORS", "Estimator", "ImplicitALS", "SGD", "SVD", "load"]
