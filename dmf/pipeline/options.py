"""Plumbing shared by the pipeline scripts: arguments and TOML config, cluster connection,
JSON summaries, one-line failures. The scripts in ``pipelines/`` stay thin."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

from dmf.progress import ProgressHandler

logger = logging.getLogger(__name__)

#: Exit code of a run refused by a check (e.g. the quality gate), as opposed to a crash (1).
EXIT_REFUSED = 3


class PipelineRefused(Exception):
    """A run that finished its checks and decided not to publish (exit code 3)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown where they say something (not for required options, not "None"); the
    description (with its examples) kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default is None or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def pipeline_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every pipeline shares."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    group = parser.add_argument_group("cluster and configuration")
    group.add_argument("--config", type=Path, help="TOML file of option values (keys as the long option names, "
                       "with - or _); command-line flags override it")
    group.add_argument("--scheduler", default=os.environ.get("DMF_SCHEDULER"),
                       help="scheduler address, tcp://HOST:PORT or tls://HOST:PORT (default: $DMF_SCHEDULER; "
                       "without it a LocalCluster sized to this machine is started)")
    group.add_argument("--tls-ca-file", help="CA certificate for a tls:// scheduler")
    group.add_argument("--tls-cert", help="client certificate for a tls:// scheduler")
    group.add_argument("--tls-key", help="client private key for a tls:// scheduler")
    group.add_argument("--log-level", default="INFO", help="logging level of dmf")
    return parser


class OptionalNumber:
    """An option type: a number, or ``none`` for None (the options whose spec allows None)."""

    def __init__(self, number: type):
        self.number = number
        self.__name__ = f"{number.__name__} or none"

    def __call__(self, text: str):
        return None if str(text).lower() == "none" else self.number(text)


def add_spec_options(parser: argparse.ArgumentParser, owner: type, title: str | None = None,
                     skip: tuple[str, ...] = ()) -> None:
    """One option per spec'd field of ``owner`` (an estimator, or a run's config class) but
    those in ``skip``, derived from its spec: type, choices, default and help; booleans as
    ``--name/--no-name``."""
    from dmf.model.params import param_specs

    group = parser.add_argument_group(title or f"model ({owner.__name__} parameters)")
    for spec in param_specs(owner):
        if spec.name in skip:
            continue
        flag = "--" + spec.name.replace("_", "-")
        text = spec.help.replace("%", "%%") + (f" None: {spec.none_means}." if spec.none_means else "")
        if spec.kind == "bool":
            group.add_argument(flag, dest=spec.name, action=argparse.BooleanOptionalAction, default=spec.default,
                               help=text)
        elif spec.kind == "choice":
            group.add_argument(flag, dest=spec.name, choices=spec.choices, default=spec.default, help=text)
        else:
            number = int if spec.kind == "int" else float
            group.add_argument(flag, dest=spec.name, type=OptionalNumber(number) if spec.optional else number,
                               default=spec.default, metavar=spec.name.upper(), help=text)


#: What the pipelines train, by ``--estimator`` name: the estimator class's name and the
#: defaults that differ from the class's own.
ESTIMATOR_CHOICES = {"als": ("ALS", {}), "implicit": ("ImplicitALS", {}), "nmf": ("ALS", {"nonnegative": True}),
                     "sgd": ("SGD", {}), "svd": ("SVD", {}), "bpmf": ("BPMF", {})}


def chosen_estimator(argv: list[str] | None) -> str:
    """The ``--estimator`` of ``argv`` (or of the ``--config`` file it names), default ``als``."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--estimator")
    first.add_argument("--config", type=Path)
    known, _ = first.parse_known_args(argv)
    if known.estimator is None and known.config is not None and known.config.exists():
        with open(known.config, "rb") as handle:
            known.estimator = tomllib.load(handle).get("estimator")
    return known.estimator if known.estimator in ESTIMATOR_CHOICES else "als"


def add_estimator_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> type:
    """``--estimator {als,implicit,nmf,sgd,svd,bpmf}`` and the chosen estimator's parameters as options
    (derived from its parameter spec, :mod:`dmf.model.specs`, without importing Dask); returns
    the chosen estimator's parameters class (:func:`estimator_class` gives the estimator)."""
    from dmf.model.specs import PARAMETERS

    class_name, defaults = ESTIMATOR_CHOICES[chosen_estimator(argv)]
    parser.add_argument("--estimator", choices=sorted(ESTIMATOR_CHOICES), default="als",
                        help="what to train: ALS with biases, implicit-feedback ALS, ALS with nonnegative "
                        "factors, biased SGD (DSGD), truncated SVD (PureSVD) or Bayesian MF (BPMF, Gibbs sampling; "
                        "the most accurate, 50 to 90 times ALS's fit time); '--estimator NAME --help' lists that "
                        "estimator's parameters")
    add_spec_options(parser, PARAMETERS[class_name], f"model ({class_name} parameters)")
    parser.set_defaults(**defaults)
    return PARAMETERS[class_name]


def estimator_class(args: argparse.Namespace) -> type:
    """The estimator class ``args.estimator`` names."""
    from dmf.estimators import ESTIMATORS

    return ESTIMATORS[ESTIMATOR_CHOICES[args.estimator][0]]


def spec_values(args: argparse.Namespace, owner: type) -> dict:
    """The values of ``owner``'s spec'd fields among the parsed ``args``."""
    from dmf.model.params import param_specs

    return {spec.name: getattr(args, spec.name) for spec in param_specs(owner) if hasattr(args, spec.name)}


def _check_config_value(parser: argparse.ArgumentParser, path: Path, key: str, action: argparse.Action,
                        value) -> None:
    """A TOML value must have the option's type: ``force = "false"`` is an error, not true."""
    flag = action.option_strings[0] if action.option_strings else action.dest
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        ok, wanted = isinstance(value, bool), "true or false (a TOML boolean, unquoted)"
    elif action.nargs not in (None, "?"):
        ok, wanted = isinstance(value, list), "a list"
    elif isinstance(action.type, OptionalNumber):
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) or str(value).lower() == "none"
        wanted = f"a number or \"none\" ({action.type.number.__name__})"
        value = None if ok and str(value).lower() == "none" else value
    elif action.type is int:
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif action.type is float:
        ok, wanted = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        ok, wanted = isinstance(value, str), "a string"
    if ok and action.choices is not None and not isinstance(value, list):
        ok, wanted = value in action.choices, "one of " + ", ".join(map(repr, action.choices))
    if not ok:
        parser.error(f"config file {path}: {key} = {value!r} must be {wanted} (as {flag} on the command line)")


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None,
               existing: tuple[str, ...] = ()) -> argparse.Namespace:
    """Parse ``argv``; values from ``--config`` become defaults that flags override. The paths
    of the options named in ``existing`` must exist (exit 2 naming the path, before any
    cluster is started or any output is written)."""
    required = [action for action in parser._actions if action.required]
    for action in required:  # a config file may supply them; checked after merging
        action.required = False
    first, _ = parser.parse_known_args(argv)
    if first.config is not None:
        if not first.config.exists():
            parser.error(f"config file {first.config} does not exist")
        with open(first.config, "rb") as handle:
            values = tomllib.load(handle)
        actions = {action.dest: action for action in parser._actions}
        settings = {}
        for key, value in values.items():
            dest = key.replace("-", "_")
            if dest not in actions:
                parser.error(f"config file {first.config} has unknown option {key!r}")
            _check_config_value(parser, first.config, key, actions[dest], value)
            settings[dest] = value
        parser.set_defaults(**settings)
    args = parser.parse_args(argv)
    missing = [action.option_strings[0] for action in required if getattr(args, action.dest) is None]
    if missing:
        parser.error(f"the following arguments are required (on the command line or in --config): {', '.join(missing)}")
    for key in ("snapshot", "home", "ratings", "output", "model", "test", "exclude", "users", "warm_start", "predictions",
                "validation", "space"):
        if isinstance(getattr(args, key, None), str):
            setattr(args, key, Path(getattr(args, key)))
    for key in existing:
        path = getattr(args, key, None)
        if path is not None and not Path(path).exists():
            parser.error(f"--{key.replace('_', '-')} {path} does not exist")
    # on a terminal, the running stage's bar stays on the last line below the log lines
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[ProgressHandler(sys.stderr)])
    logging.getLogger("dmf").setLevel(args.log_level.upper())
    # distributed announces every P2P shuffle's start and end at WARNING: not a problem of the run
    logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)
    return args


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator:
    """A distributed Client for ``args.scheduler``, or for a new LocalCluster sized to this machine."""
    from distributed import Client, LocalCluster
    from distributed.security import Security

    # distributed configures its loggers (INFO, its own handler) when first imported: a run
    # prints dmf's lines and distributed's warnings only, unless asked for --log-level DEBUG
    if logging.getLogger("dmf").getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("distributed").setLevel(logging.WARNING)
    security = None
    tls_files = (args.tls_ca_file, args.tls_cert, args.tls_key)
    configured = Security()  # TLS files may also come from the Dask config (DASK_DISTRIBUTED__COMM__TLS__…)
    from_config = bool(configured.tls_ca_file and configured.tls_client_cert)
    if args.scheduler and args.scheduler.startswith("tls://") and not all(tls_files) and not from_config:
        raise ValueError(f"{args.scheduler} is a TLS scheduler: pass --tls-ca-file (the cluster's CA), --tls-cert "
                         "and --tls-key (this client's certificate and key)")
    if any(tls_files):
        if args.scheduler and not args.scheduler.startswith("tls://"):
            raise ValueError(f"TLS files were given but the scheduler address {args.scheduler} is not tls://…; "
                             "address a TLS scheduler as tls://HOST:PORT")
        security = Security(tls_ca_file=args.tls_ca_file, tls_client_cert=args.tls_cert,
                            tls_client_key=args.tls_key, require_encryption=True)
    if args.scheduler:
        try:
            client = Client(args.scheduler, security=security, timeout="30s")
        except (OSError, TimeoutError) as error:
            raise ConnectionError(f"could not connect to the scheduler at {args.scheduler} ({error}); check the "
                                  "address, and if that scheduler uses TLS, address it as tls://HOST:PORT with "
                                  "--tls-ca-file/--tls-cert/--tls-key") from None
        with client:
            _announce(client)
            yield client
        return
    n_workers = max(1, os.cpu_count() or 1)
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        _announce(client)
        yield client


def _announce(client) -> None:
    n_workers = len(client.nthreads())
    print(f"scheduler {client.scheduler.address}, {n_workers} workers, dashboard {client.dashboard_link}", flush=True)


def versions() -> dict:
    import dask
    import distributed
    import numpy
    import pandas
    import pyarrow

    from dmf._version import __version__

    return {"dmf": __version__, "dask": dask.__version__, "distributed": distributed.__version__,
            "numpy": numpy.__version__, "pandas": pandas.__version__, "pyarrow": pyarrow.__version__,
            "python": platform.python_version()}


def summary(args: argparse.Namespace, **sections) -> dict:
    """A run summary: the arguments, the given sections, versions and the time written."""
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return {"arguments": arguments, **sections, "versions": versions(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def run(main: Callable[[], int | None]) -> None:
    """Run a pipeline's ``main``; on failure print one line with the reason and exit non-zero."""
    prog = Path(sys.argv[0]).name
    try:
        code = main()
    except PipelineRefused as refusal:
        print(f"{prog}: refused: {refusal}", file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - the one place that turns errors into exit codes
        logger.debug("pipeline failed", exc_info=True)
        reason = " ".join(str(error).split()) or type(error).__name__
        print(f"{prog}: error: {type(error).__name__}: {reason}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)


class Timer:
    """Named wall-clock timings: ``with timer("fit"): ...``; ``timer.seconds`` maps name → s."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 3)
        logger.info("%s took %.1f s", name, self.seconds[name])
