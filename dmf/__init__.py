"""dmf: distributed matrix factorization recommender on Dask.

The package follows the pipeline, each stage one subpackage; dependencies point down:

- :mod:`dmf.data` — ratings in (ingest and validation, id vocabularies, splits);
  :mod:`dmf.datasets` — MovieLens files and the synthetic generator;
- :mod:`dmf.model` — the fitted model every estimator produces, parameter specs, model files;
- :mod:`dmf.engine` — the blocked training engine (block layout, epoch loop, kernels);
- :mod:`dmf.stages` — prediction, top-k, rating and ranking metrics over a fitted model;
- :mod:`dmf.estimators` — the public estimators (``ALS``, ``ImplicitALS``, ``SGD``, ``SVD``);
- :mod:`dmf.pipeline` — command-line plumbing and the nightly run (never imported by the rest).
"""

from dmf import model_selection
from dmf._version import __version__
from dmf.data.ratings import read_ratings
from dmf.estimators import ALS, SGD, SVD, Estimator, ImplicitALS, load
from dmf.model import FittedModel
from dmf.stages.metrics import Metric, error_totals, mae, rmse
from dmf.stages.ranking import ranking_metrics

__all__ = [
    "ALS", "SGD", "SVD", "Estimator", "FittedModel", "ImplicitALS", "Metric", "error_totals", "load", "mae", "ranking_metrics",
    "model_selection", "read_ratings", "rmse", "__version__",
]
