"""Each estimator's parameters, declared once (a dataclass of ``param(...)`` fields).

The estimators inherit these (``class ALS(_BlockedALS, ALSParameters)``): the constructor,
``get_params``, validation, the numpydoc ``Parameters`` section and the pipelines'
command-line options all come from these fields. They live apart from the estimators so
that reading them imports neither Dask nor the engine: ``--help`` of a pipeline lists an
estimator's options in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass

from dmf.model import params
from dmf.model.params import param

_PARAMETERS = dict(kw_only=True, repr=False, eq=False)


@dataclass(**_PARAMETERS)
class ALSParameters:
    """The parameters of :class:`dmf.ALS`."""

    rank: int = params.rank(50)
    reg: float = param(0.06, "λ, the regularization weight per rating on the factors (ALS-WR).", minimum=0)
    bias_reg: float = param(0.0, "Regularization weight per rating on the biases.", minimum=0)
    damping: float = param(6.0, "Count-independent extra penalty on factors; keeps rarely rated users and items, "
                           "which ALS-WR barely regularizes, close to the bias model.", minimum=0)
    bias_damping: float = param(2.0, "Count-independent penalty on biases: a bias shrinks like Σ residual / (n + "
                                "bias_damping), Koren's baseline estimator.", minimum=0)
    max_iter: int = params.max_iter(10)
    seed: int = params.seed()
    n_blocks: int | None = params.n_blocks()
    exchange: str = params.exchange()
    biases: bool = param(True, "Learn the global mean and user and item biases.")
    unknown: str = params.unknown()
    clip: bool = param(True, "Clip predictions to the training ratings' range (recommendation scores are not "
                       "clipped).")
    solver: str = params.solver()
    cg_steps: int = params.cg_steps()
    nonnegative: bool = params.nonnegative()
    feature_reg: float = params.feature_reg()


@dataclass(**_PARAMETERS)
class ImplicitALSParameters:
    """The parameters of :class:`dmf.ImplicitALS`."""

    rank: int = params.rank(32)
    reg: float = param(0.05, "λ, the same for every row (not weighted by counts).", minimum=0, open_minimum=True)
    alpha: float = param(1.0, "Confidence slope: c = 1 + alpha·|r|.", minimum=0)
    threshold: float | None = param(None, "Turn explicit ratings into implicit data: ratings >= threshold become "
                                    "observations of value 1, the others are dropped.", kind="float",
                                    none_means="use the values as given")
    max_iter: int = params.max_iter(15)
    seed: int = params.seed()
    n_blocks: int | None = params.n_blocks()
    exchange: str = params.exchange()
    solver: str = params.solver()
    cg_steps: int = params.cg_steps()
    nonnegative: bool = params.nonnegative()
    unknown: str = params.unknown()
    feature_reg: float = params.feature_reg()


@dataclass(**_PARAMETERS)
class SGDParameters:
    """The parameters of :class:`dmf.SGD`."""

    rank: int = params.rank(100)
    learning_rate: float = param(0.01, "α, the step size of the first epoch.", minimum=0, open_minimum=True)
    reg: float = param(0.06, "β, the regularization weight on the factors per step.", minimum=0)
    bias_reg: float = param(0.0, "Regularization weight on the biases per step.", minimum=0)
    damping: float = param(6.0, "Count-independent penalty on factors: a step on a row with n ratings uses "
                           "reg + damping/n, so an epoch adds up to dmf.ALS's penalty reg·n + damping.", minimum=0)
    bias_damping: float = param(2.0, "Count-independent penalty on biases (as damping).", minimum=0)
    max_iter: int = param(40, "Epochs; one epoch visits every rating once.", minimum=1)
    schedule: str = param("bold-driver", "'bold-driver' adapts the step after each epoch from the training "
                          "loss; 'constant' keeps learning_rate.", choices=("bold-driver", "constant"))
    init_std: float = param(0.1, "Standard deviation of the initial factors (biases start at 0).", minimum=0)
    grid: int = param(8, "Blocks per side of the DSGD grid (grid x grid cells, grid strata per epoch); at most "
                      "grid tasks run at once. Part of the model: it sets the visiting order.", minimum=1)
    seed: int = params.seed()
    biases: bool = param(True, "Learn the global mean and user and item biases.")
    unknown: str = params.unknown()
    clip: bool = param(True, "Clip predictions to the training ratings' range (recommendation scores are not "
                       "clipped).")
    feature_reg: float = params.feature_reg()


@dataclass(**_PARAMETERS)
class SVDParameters:
    """The parameters of :class:`dmf.SVD`."""

    rank: int = params.rank(20)
    n_iter: int = param(4, "Power (subspace) iterations; each is two passes over the ratings.", minimum=0)
    oversample: int = param(10, "Extra columns of the random subspace beyond rank (accuracy of the trailing "
                            "singular vectors).", minimum=0)
    center: bool = param(False, "Subtract the mean rating from the observed entries (missing ones stay 0) and add "
                         "it back to predictions.")
    seed: int = params.seed()
    n_blocks: int | None = params.n_blocks()
    unknown: str = params.unknown()
    clip: bool = param(False, "Clip predictions to the training ratings' range.")
    feature_reg: float = params.feature_reg()


@dataclass(**_PARAMETERS)
class BPMFParameters:
    """The parameters of :class:`dmf.BPMF`."""

    rank: int = params.rank(30)
    n_samples: int = param(180, "Gibbs sweeps averaged into the model after the burn-in (the posterior mean of "
                           "the predictions).", minimum=1)
    burn_in: int = param(20, "Gibbs sweeps discarded before the samples are averaged.", minimum=0)
    alpha: float = param(1.5, "α, the precision of the rating noise (1/σ²).", minimum=0, open_minimum=True)
    seed: int = params.seed()
    n_blocks: int | None = params.n_blocks()
    unknown: str = params.unknown()
    clip: bool = param(True, "Clip predictions to the training ratings' range (recommendation scores are not "
                       "clipped).")
    feature_reg: float = params.feature_reg()


#: The parameters of each estimator, by the estimator's class name.
PARAMETERS: dict[str, type] = {"ALS": ALSParameters, "ImplicitALS": ImplicitALSParameters, "SGD": SGDParameters,
                               "SVD": SVDParameters, "BPMF": BPMFParameters}
