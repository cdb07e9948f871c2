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

from dmf._lazy import lazy_exports
from dmf._version import __version__

__all__ = [
    "ALS", "BPMF", "SGD", "SVD", "Estimator", "FittedModel", "ImplicitALS", "Metric", "error_totals", "load", "mae", "ranking_metrics",
    "model_selection", "read_ratings", "rmse", "__version__",
]
# imported on first use, so that ``import dmf.model.specs`` or a pipeline's --help needs no Dask
__getattr__, __dir__ = lazy_exports(globals(), {
    "ALS": "dmf.estimators", "BPMF": "dmf.estimators", "SGD": "dmf.estimators", "SVD": "dmf.estimators", "Estimator": "dmf.estimators",
    "ImplicitALS": "dmf.estimators", "load": "dmf.estimators", "FittedModel": "dmf.model",
    "Metric": "dmf.stages.metrics", "error_totals": "dmf.stages.metrics", "mae": "dmf.stages.metrics",
    "rmse": "dmf.stages.metrics", "ranking_metrics": "dmf.stages.ranking", "read_ratings": "dmf.data.ratings",
    "model_selection": "dmf.model_selection",
})
