"""dmf: distributed matrix factorization (blocked ALS) recommender on Dask."""

__version__ = "0.1.0"

from dmf.als import ALS, ImplicitALS
from dmf.metrics import Metric, error_totals, mae, rmse
from dmf.ranking import ranking_metrics
from dmf.ratings import read_ratings

__all__ = ["ALS", "ImplicitALS", "Metric", "error_totals", "mae", "ranking_metrics", "read_ratings", "rmse", "__version__"]
