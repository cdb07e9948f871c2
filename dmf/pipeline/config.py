"""The settings of a nightly run (and of the incremental update), declared once with their
specs; importing them imports nothing heavy, so the pipelines' ``--help`` is instant."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dmf.model.params import MAX_SEED, param, param_specs
from dmf.pipeline.options import ESTIMATOR_CHOICES


@dataclass
class NightlyConfig:
    """What a nightly run reads, trains and keeps: the snapshot, the home directory, the
    model's parameters, a prepared test set if any, and the run settings below (declared once,
    with their specs: the pipeline's options are derived from them, and values are validated).

    ``test``: Parquet ratings held out for the quality gate and the metrics instead of the
    snapshot's hashed ``test_fraction`` (e.g. ``prepare.py``'s ``test/``); the snapshot's
    ratings of those (user, item) pairs never train.
    """

    snapshot: Path
    home: Path
    params: dict = field(default_factory=dict)
    test: Path | None = None
    test_fraction: float = param(0.1, "Fraction of the snapshot's (user, item) pairs held out for the quality gate and the "
                                 "metrics, unless a prepared test set is given.",
                                 minimum=0, open_minimum=True, maximum=1)
    split_seed: int = param(0, "Seed of the held-out pairs (a pair's side depends on the seed and the pair only).",
                            minimum=0, maximum=MAX_SEED)
    tolerance: float = param(0.005, "Publish only if the new model's held-out score is no worse than the published "
                             "model's by more than this (RMSE; NDCG@k for models whose scores only rank: implicit, svd).", minimum=0)
    keep: int = param(3, "Published versions to keep (the current one always is).", minimum=1)
    k: int = param(10, "Recommendations per user.", minimum=1)
    relevance_threshold: float | None = param(4.0, "Held-out ratings >= this are relevant for the ranking metrics.",
                                              kind="float", none_means="every held-out pair is relevant")
    duplicates: str = param("latest", "Repeated (user, item) pairs in the snapshot: 'latest' keeps the latest "
                            "rating, 'mean' their mean, 'error' refuses the snapshot.",
                            choices=("latest", "mean", "error"))
    force: bool = param(False, "Retrain even if the snapshot and settings are those of the current version.")
    estimator: str = param("als", "What to train: 'als' (explicit ratings, biases), 'implicit' (implicit-feedback "
                           "ALS, gated on NDCG@k instead of RMSE), 'nmf' (ALS with nonnegative factors), 'sgd' "
                           "(biased SGD matrix factorization, DSGD), 'bpmf' (Bayesian MF by Gibbs sampling) or "
                           "'svd' (truncated SVD, PureSVD; gated on NDCG@k).",
                           choices=tuple(ESTIMATOR_CHOICES))

    def __post_init__(self) -> None:
        for spec in param_specs(self):
            spec.check(getattr(self, spec.name))

    def settings(self) -> dict:
        """Everything but the paths and ``force``: what, besides the snapshot, shapes a run's output."""
        return {"params": self.params, **({"test": str(self.test)} if self.test is not None else {}),
                **{spec.name: getattr(self, spec.name) for spec in param_specs(self) if spec.name != "force"}}
