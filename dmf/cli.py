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
from pathlib import Path
from typing import Callable, Iterator

logger = logging.getLogger(__name__)

#: Exit code of a run refused by a check (e.g. the quality gate), as opposed to a crash (1).
EXIT_REFUSED = 3


class PipelineRefused(Exception):
    """A run that finished its checks and decided not to publish (exit code 3)."""


def pipeline_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every pipeline shares."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """ALS hyperparameters; defaults are :class:`dmf.ALS`'s."""
    from dmf import ALS

    defaults = ALS().get_params()
    group = parser.add_argument_group("model")
    group.add_argument("--rank", type=int, default=defaults["rank"], help="factor length k")
    group.add_argument("--reg", type=float, default=defaults["reg"], help="λ per rating on factors (ALS-WR)")
    group.add_argument("--bias-reg", type=float, default=defaults["bias_reg"], help="λ per rating on biases")
    group.add_argument("--damping", type=float, default=defaults["damping"], help="count-independent factor penalty")
    group.add_argument("--bias-damping", type=float, default=defaults["bias_damping"],
                       help="count-independent bias penalty")
    group.add_argument("--max-iter", type=int, default=defaults["max_iter"], help="epochs")
    group.add_argument("--seed", type=int, default=defaults["seed"], help="seed of the initial factors")
    group.add_argument("--n-blocks", type=int, default=defaults["n_blocks"], help="blocks per side (default: one per worker thread)")
    group.add_argument("--no-biases", dest="biases", action="store_false", help="no global mean and biases")
    group.add_argument("--solver", choices=["cg", "cholesky"], default=defaults["solver"],
                       help="warm-started conjugate-gradient steps, or exact Cholesky solves")
    group.add_argument("--cg-steps", type=int, default=defaults["cg_steps"], help="conjugate-gradient steps per half-step")
    group.add_argument("--nonnegative", action="store_true", help="factors >= 0 (NMF)")


def model_params(args: argparse.Namespace) -> dict:
    return {
        "rank": args.rank, "reg": args.reg, "bias_reg": args.bias_reg, "damping": args.damping,
        "bias_damping": args.bias_damping,
        "max_iter": args.max_iter, "seed": args.seed, "n_blocks": args.n_blocks, "biases": args.biases,
        "solver": args.solver, "cg_steps": args.cg_steps, "nonnegative": args.nonnegative,
    }


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; values from ``--config`` become defaults that flags override."""
    required = [action for action in parser._actions if action.required]
    for action in required:  # a config file may supply them; checked after merging
        action.required = False
    first, _ = parser.parse_known_args(argv)
    if first.config is not None:
        if not first.config.exists():
            parser.error(f"config file {first.config} does not exist")
        with open(first.config, "rb") as handle:
            values = tomllib.load(handle)
        known = {action.dest for action in parser._actions}
        settings = {}
        for key, value in values.items():
            dest = key.replace("-", "_")
            if dest not in known:
                parser.error(f"config file {first.config} has unknown option {key!r}")
            settings[dest] = value
        parser.set_defaults(**settings)
    args = parser.parse_args(argv)
    missing = [action.option_strings[0] for action in required if getattr(args, action.dest) is None]
    if missing:
        parser.error(f"the following arguments are required (on the command line or in --config): {', '.join(missing)}")
    for key in ("snapshot", "home", "ratings", "output", "model", "test", "exclude", "users", "warm_start", "predictions"):
        if isinstance(getattr(args, key, None), str):
            setattr(args, key, Path(getattr(args, key)))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("dmf").setLevel(args.log_level.upper())
    return args


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator:
    """A distributed Client for ``args.scheduler``, or for a new LocalCluster sized to this machine."""
    from distributed import Client, LocalCluster
    from distributed.security import Security

    security = None
    if args.tls_ca_file or args.tls_cert or args.tls_key:
        security = Security(tls_ca_file=args.tls_ca_file, tls_client_cert=args.tls_cert,
                            tls_client_key=args.tls_key, require_encryption=True)
    if args.scheduler:
        with Client(args.scheduler, security=security, timeout="30s") as client:
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

    import dmf

    return {"dmf": dmf.__version__, "dask": dask.__version__, "distributed": distributed.__version__,
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
