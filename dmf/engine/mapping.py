"""A learned attribute-to-factor mapping (Gantner et al. 2010): ridge regression from the
feature vectors of trained rows to their factors (and bias), applied to rows that have
attributes but no ratings. Plain NumPy."""

from __future__ import annotations

import numpy as np


def fit_linear_map(features: np.ndarray, targets: np.ndarray, reg: float,
                   row_weights: np.ndarray | None = None) -> np.ndarray:
    """Weights ``(d + 1, t)`` (the last row the unpenalized intercept) minimizing
    ``Σ_rows c_row·‖[x 1] W − t‖² + reg·‖W[:d]‖²``; ``row_weights`` ``c`` default to 1.

    The cold-start stage weighs each trained row by the reliability of its factors
    (:mod:`dmf.stages.coldstart`).
    """
    design = np.hstack([features, np.ones((len(features), 1))])
    weights = np.ones(len(design)) if row_weights is None else np.asarray(row_weights, dtype=np.float64)
    penalty = np.full(design.shape[1], float(reg))
    penalty[-1] = 0.0
    return np.linalg.solve(design.T @ (design * weights[:, None]) + np.diag(penalty),
                           design.T @ (targets * weights[:, None]))


def apply_linear_map(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[X 1] W``: predicted targets of rows with these features."""
    return features @ weights[:-1] + weights[-1]
