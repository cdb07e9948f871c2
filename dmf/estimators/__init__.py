"""The public estimators; each produces a :class:`~dmf.model.FittedModel`."""

from dmf.estimators.als import ALS, ImplicitALS
from dmf.estimators.base import ESTIMATORS, Estimator, load

__all__ = ["ALS", "ESTIMATORS", "Estimator", "ImplicitALS", "load"]
