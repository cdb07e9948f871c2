"""One parameter spec per estimator, declared once as dataclass fields.

An estimator declares each parameter as a field: ``rank: int = param(50, "length k of
the factor vectors", minimum=1)``. From those fields dmf derives the constructor (the
dataclass ``__init__``), ``get_params``, validation (type and range, with an error that
names the parameter), the numpydoc ``Parameters`` section, the manifest's ``params`` and
the pipelines' command-line options. Adding a parameter is one edit.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import textwrap
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["int", "float", "bool", "choice"]
_SPEC = "dmf.param"
#: Largest seed: seeds are stored in JSON and Parquet metadata as signed 64-bit integers.
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ParamSpec:
    """What one parameter may be: its kind, range or choices, and whether None is allowed."""

    name: str
    default: Any
    kind: Kind
    help: str
    minimum: float | None = None
    maximum: float | None = None
    open_minimum: bool = False
    choices: tuple = ()
    optional: bool = False
    none_means: str = ""

    def check(self, value: Any) -> None:
        """Raise ``TypeError`` (wrong kind) or ``ValueError`` (out of range) naming the parameter."""
        if value is None:
            if not self.optional:
                raise TypeError(f"{self.name} must be {self.describe()}, got None")
            return
        if self.kind == "bool":
            if not isinstance(value, (bool, _numpy_bool())):
                raise TypeError(f"{self.name} must be True or False, got {value!r} ({type(value).__name__})")
            return
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise ValueError(f"{self.name} must be one of {', '.join(map(repr, self.choices))}, got {value!r}")
            return
        wanted = numbers.Integral if self.kind == "int" else numbers.Real
        if isinstance(value, (bool, _numpy_bool())) or not isinstance(value, wanted):
            raise TypeError(f"{self.name} must be {self.describe()}, got {value!r} ({type(value).__name__})")
        if self.kind == "float" and not math.isfinite(value):
            raise ValueError(f"{self.name} must be a finite number, got {value!r}")
        too_low = self.minimum is not None and (value <= self.minimum if self.open_minimum else value < self.minimum)
        too_high = self.maximum is not None and value > self.maximum
        if too_low or too_high:
            raise ValueError(f"{self.name} must be {self.describe()}, got {value!r}")

    def describe(self) -> str:
        """The allowed values in words, e.g. ``an integer >= 1``."""
        if self.kind == "bool":
            text = "True or False"
        elif self.kind == "choice":
            text = "one of " + ", ".join(map(repr, self.choices))
        else:
            text = "an integer" if self.kind == "int" else "a number"
            bounds = []
            if self.minimum is not None:
                bounds.append(f"{'>' if self.open_minimum else '>='} {self.minimum:g}")
            if self.maximum is not None:
                bounds.append(f"<= {self.maximum:g}")
            text += (" " + " and ".join(bounds)) if bounds else ""
        return text + (" or None" if self.optional else "")

    def type_name(self) -> str:
        name = {"int": "int", "float": "float", "bool": "bool", "choice": "{" + ", ".join(map(repr, self.choices)) + "}"}
        return name[self.kind] + (" or None" if self.optional else "")


def _numpy_bool():
    import numpy as np

    return np.bool_


def param(default: Any, help: str, *, kind: Kind | None = None, minimum: float | None = None,
          maximum: float | None = None, open_minimum: bool = False, choices: tuple = (),
          none_means: str = "") -> Any:
    """Declare an estimator parameter (a dataclass field carrying its :class:`ParamSpec`).

    ``kind`` is inferred from ``choices`` or the default when not given; ``none_means``
    (what None does) makes None an allowed value.
    """
    if kind is None:
        kind = "choice" if choices else "bool" if isinstance(default, bool) else "int" if isinstance(default, int) else "float"
    spec = ParamSpec("", default, kind, help, minimum, maximum, open_minimum, tuple(choices),
                     optional=bool(none_means) or default is None, none_means=none_means)
    return dataclasses.field(default=default, metadata={_SPEC: spec})


def param_specs(estimator) -> tuple[ParamSpec, ...]:
    """The parameter specs of an estimator class or instance, in declaration order."""
    return tuple(dataclasses.replace(f.metadata[_SPEC], name=f.name, default=f.default)
                 for f in dataclasses.fields(estimator) if _SPEC in f.metadata)


def parameters_doc(estimator, indent: str = "    ") -> str:
    """A numpydoc ``Parameters`` section of the estimator's specs."""
    lines = ["Parameters", "----------"]
    for spec in param_specs(estimator):
        lines.append(f"{spec.name} : {spec.type_name()}, default {spec.default!r}")
        text = spec.help + (f" None: {spec.none_means}." if spec.none_means else "")
        lines.extend("    " + line for line in textwrap.wrap(text, 84))
    return ("\n" + indent).join(lines)


# -- parameters several estimators share (each with its own default) ----------------------------

def rank(default: int) -> Any:
    return param(default, "Length k of the user and item factor vectors.", minimum=1)


def max_iter(default: int) -> Any:
    return param(default, "Epochs; one epoch updates all users, then all items.", minimum=1)


def seed(default: int = 0) -> Any:
    return param(default, "Seed of every random choice (initial factors): the model depends on the seed "
                 "and the data only, never on n_blocks or the workers.", minimum=0, maximum=MAX_SEED)


def n_blocks() -> Any:
    return param(None, "User blocks and item blocks; does not change the result.", kind="int", minimum=1,
                 none_means="one block per side per worker thread of the cluster")


def feature_reg(default: float = 10.0) -> Any:
    return param(default, "Ridge penalty of the attribute-to-factor mapping that gives users and items without "
                 "ratings factors from their attributes (fit(..., user_features=, item_features=)).", minimum=0,
                 open_minimum=True)


def solver() -> Any:
    return param("cg", "Per row: 'cg' takes cg_steps conjugate-gradient steps from the previous epoch's factors "
                 "(Takács et al. 2011; compiled, O(n_u·k) per step); 'cholesky' solves exactly (O(n_u·k²)).",
                 choices=("cg", "cholesky"))


#: How the solves of a half-step receive the other side's factors.
EXCHANGES = ("auto", "all", "routed")


def exchange() -> Any:
    return param("auto", "How each solve receives the other side's factors: 'all' gathers the whole side on every "
                 "worker; 'routed' sends each block only the rows its ratings reference (Spark's in/out blocks; "
                 "fewer bytes when blocks reference a small part of the other side); 'auto' routes when one copy of "
                 "the larger side's table exceeds 256 MiB. Does not change the result.", choices=EXCHANGES)


def cg_steps() -> Any:
    return param(3, "Conjugate-gradient steps per half-step (solver='cg').", minimum=1)


def nonnegative() -> Any:
    return param(False, "Constrain factors to be >= 0 (NMF: a nonnegative least-squares solve per row); biases "
                 "stay unconstrained.")


def require_penalty(reg: float, damping: float) -> None:
    """Refuse ``reg == damping == 0``: a row's normal equations (a half-step or a fold-in) may be singular."""
    if reg == 0 and damping == 0:
        raise ValueError("reg and damping are both 0: the normal equations may be singular; set reg > 0")


#: What to predict for a pair whose user or item is unknown (the ``unknown`` parameter).
UNKNOWN_POLICIES = ("bias", "nan", "drop")


def unknown(default: str = "bias") -> Any:
    return param(default, "Pairs with a user or item unseen in training: 'bias' predicts the bias model (global "
                 "mean plus whichever bias is known), 'nan' predicts NaN, 'drop' leaves the pair out. Metrics "
                 "count such pairs.", choices=UNKNOWN_POLICIES)
