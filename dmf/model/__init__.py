"""The fitted model (one value every estimator produces), its parameter specs and its files."""

from dmf.model.fitted import FittedModel, SeenItems
from dmf.model.persistence import load_model, save_model

__all__ = ["FittedModel", "SeenItems", "load_model", "save_model"]
