"""A real Dask cluster of subprocesses on 127.0.0.1 for tests: one scheduler, N workers.

`SubprocessCluster` starts ``dask scheduler`` and ``dask worker`` through the repository's own
launch scripts (``cluster/start-scheduler.sh`` and ``cluster/start-worker.sh``, which ``exec``
dask, so each process's PID is the dask process's PID) with ``cluster/dask.yaml`` as the Dask
configuration, optionally over mutual TLS with certificates made by
``cluster/make-test-certs.sh``. Workers run without a nanny, one thread and 2 GiB each, so
`SubprocessCluster.kill_worker` really removes a worker from the cluster.

Example::

    with SubprocessCluster(n_workers=2, tls=True) as cluster:
        with Client(cluster.address, security=cluster.security) as client:
            ...
        subprocess.run([sys.executable, "pipelines/train.py", ...],
                       env=os.environ | cluster.client_env(), check=True)

Every process gets its own session (process group); `SubprocessCluster.close` terminates each
group, then kills what is left, and an ``atexit`` hook does the same if a test forgets. On Linux
the processes also receive SIGTERM when the thread that started them exits (PR_SET_PDEATHSIG),
so a killed pytest leaves no scheduler behind: start the cluster from the main thread.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_DIR = REPO_ROOT / "cluster"

_LOG_TAIL_CHARACTERS = 4000


def dask_command() -> str:
    """Path of the ``dask`` console script of the running interpreter's environment.

    The script beside ``sys.executable`` is preferred (a venv that is not activated still has
    its ``dask`` there), then ``dask`` on ``PATH``.
    """
    beside_python = Path(sys.executable).parent / "dask"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which("dask")
    if on_path is None:
        raise FileNotFoundError(
            f"no `dask` command beside {sys.executable} or on PATH; install distributed in this environment"
        )
    return on_path


def make_test_certificates(directory: Path) -> Path:
    """Run ``cluster/make-test-certs.sh`` into ``directory``; return it.

    The directory then holds ``ca.pem``, ``ca-key.pem``, ``dask.pem`` and ``dask-key.pem``.
    """
    completed = subprocess.run(
        ["bash", str(CLUSTER_DIR / "make-test-certs.sh"), str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"make-test-certs.sh failed ({completed.returncode}):\n{completed.stderr}")
    return directory


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent thread exits."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_parent_death_signal() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return set_parent_death_signal


@dataclass
class _Process:
    """One started process: its Popen, log file and (for workers) the address it serves."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    log_file: IO[bytes]
    address: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self) -> str:
        self.log_file.flush()
        text = self.log_path.read_text(errors="replace")
        return text[-_LOG_TAIL_CHARACTERS:]


class SubprocessCluster:
    """A Dask scheduler and workers as real subprocesses on 127.0.0.1, for tests.

    Parameters
    ----------
    n_workers
        Workers started by `start`; more can be added with `start_worker`.
    tls
        Serve and connect over mutual TLS (``tls://`` address) with throwaway certificates
        made by ``cluster/make-test-certs.sh`` in the cluster's directory.
    nthreads
        Threads per worker process.
    memory_limit
        ``dask worker --memory-limit`` of each worker, e.g. ``"2GiB"``.
    config_dir
        Directory of Dask YAML files given to every process as ``DASK_CONFIG``; the
        repository's ``cluster/`` by default. ``None`` gives an empty directory (Dask defaults).
    startup_timeout
        Seconds to wait for the scheduler and for each batch of workers.
    dashboard
        Serve the scheduler dashboard on a free port (it is off by default).
    directory
        Where scheduler file, logs, certificates and worker scratch space go; a new temporary
        directory (removed by `close`) when ``None``.

    Workers run with ``--no-nanny``: killing a worker process removes that worker, and no
    nanny restarts it. Worker indices (`kill_worker`) are positions in `worker_pids`, which
    lists the live workers in the order they were started.
    """

    def __init__(
        self,
        n_workers: int = 2,
        *,
        tls: bool = False,
        nthreads: int = 1,
        memory_limit: str = "2GiB",
        config_dir: Path | None = CLUSTER_DIR,
        startup_timeout: float = 30.0,
        dashboard: bool = False,
        directory: Path | None = None,
    ) -> None:
        self.n_workers = n_workers
        self.tls = tls
        self.nthreads = nthreads
        self.memory_limit = memory_limit
        self.config_dir = config_dir
        self.startup_timeout = startup_timeout
        self.dashboard = dashboard
        self.directory = directory
        self._scheduler: _Process | None = None
        self._workers: list[_Process] = []
        self._workers_started = 0
        self._work_dir: Path | None = None
        self._owns_work_dir = False
        self._address: str | None = None
        self._tls_dir: Path | None = None
        self._dask_config_dir: Path | None = None
        self._preexec = _parent_death_signal()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start the scheduler and `n_workers` workers; return once all workers are connected.

        Raises
        ------
        RuntimeError
            A process exited or the workers did not connect within `startup_timeout`
            (the message holds the end of the process's log). Everything started is closed.
        """
        if self._scheduler is not None:
            raise RuntimeError("this SubprocessCluster is already started; use a new one")
        if self.n_workers < 0:
            raise ValueError(f"n_workers must be >= 0, got {self.n_workers}")
        atexit.register(self.close)
        try:
            self._prepare_directory()
            self._start_scheduler()
            for _ in range(self.n_workers):
                self._workers.append(self._spawn_worker())
            self._wait_for_new_workers(self._workers)
        except BaseException:
            self.close()
            raise
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Terminate the workers, then the scheduler; SIGKILL whatever outlives ``timeout`` s.

        Idempotent. Each process's whole process group is signalled, so nothing it started
        survives either. The temporary directory is removed if the cluster created it.
        """
        atexit.unregister(self.close)
        _stop_processes(self._workers, timeout)
        self._workers = []
        if self._scheduler is not None:
            _stop_processes([self._scheduler], timeout)
            self._scheduler = None
        if self._owns_work_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ connection details

    @property
    def address(self) -> str:
        """The scheduler's address, ``tcp://127.0.0.1:PORT`` or ``tls://127.0.0.1:PORT``."""
        if self._address is None:
            raise RuntimeError("the cluster is not started; call start() or use it in a with statement")
        return self._address

    @property
    def security(self):
        """A `distributed.security.Security` for a client of this cluster, or ``None`` without TLS."""
        if not self.tls:
            return None
        from distributed.security import Security

        tls_dir = self.tls_dir
        return Security(
            tls_ca_file=str(tls_dir / "ca.pem"),
            tls_client_cert=str(tls_dir / "dask.pem"),
            tls_client_key=str(tls_dir / "dask-key.pem"),
            require_encryption=True,
        )

    @property
    def tls_dir(self) -> Path:
        """Directory holding ``ca.pem``, ``dask.pem`` and ``dask-key.pem`` (TLS clusters only)."""
        if self._tls_dir is None:
            raise RuntimeError("this cluster has no TLS certificates (started without tls=True?)")
        return self._tls_dir

    @property
    def log_dir(self) -> Path:
        """Directory of ``scheduler.log`` and ``worker-<n>.log``."""
        if self._work_dir is None:
            raise RuntimeError("the cluster is not started")
        return self._work_dir / "logs"

    def client_env(self) -> dict[str, str]:
        """Environment variables a subprocess (a pipeline) needs to connect to this cluster.

        ``DMF_SCHEDULER`` (the address), ``DASK_CONFIG`` (the cluster's Dask configuration) and,
        for TLS, the client certificate settings of Dask's config::

            DASK_DISTRIBUTED__COMM__TLS__CA_FILE, DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT,
            DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY, DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True

        with which ``distributed.Client(os.environ["DMF_SCHEDULER"])`` connects without any
        ``security=`` argument. Merge into the parent's environment: ``os.environ | env``.
        """
        env = {"DMF_SCHEDULER": self.address}
        if self._dask_config_dir is not None:
            env["DASK_CONFIG"] = str(self._dask_config_dir)
        if self.tls:
            env |= {
                "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(self.tls_dir / "ca.pem"),
                "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(self.tls_dir / "dask.pem"),
                "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(self.tls_dir / "dask-key.pem"),
                "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
            }
        return env

    def client_args(self) -> list[str]:
        """Pipeline command-line flags for this cluster: ``--scheduler ADDRESS`` and, for TLS,
        ``--tls-ca-file``, ``--tls-cert`` and ``--tls-key`` (the pipelines' documented flags)."""
        args = ["--scheduler", self.address]
        if self.tls:
            args += [
                "--tls-ca-file", str(self.tls_dir / "ca.pem"),
                "--tls-cert", str(self.tls_dir / "dask.pem"),
                "--tls-key", str(self.tls_dir / "dask-key.pem"),
            ]
        return args

    # ------------------------------------------------------------------ processes

    def scheduler_pid(self) -> int:
        """PID of the ``dask scheduler`` process."""
        if self._scheduler is None:
            raise RuntimeError("the cluster is not started")
        return self._scheduler.pid

    def worker_pids(self) -> list[int]:
        """PIDs of the live ``dask worker`` processes, in the order they were started.

        These are the PIDs the workers themselves report (``client.run(os.getpid)``).
        """
        return [worker.pid for worker in self._workers]

    def worker_addresses(self) -> list[str]:
        """Addresses of the live workers as the scheduler knows them, in `worker_pids` order."""
        return [worker.address or "" for worker in self._workers]

    def kill_worker(self, index: int = 0, *, wait: bool = True) -> int:
        """SIGKILL the worker at position ``index`` of `worker_pids`; return its PID.

        With ``wait`` (the default), return only once the scheduler has removed the worker,
        i.e. lists exactly the remaining workers; otherwise return right after the kill.
        """
        if not -len(self._workers) <= index < len(self._workers):
            raise IndexError(f"worker index {index} out of range: {len(self._workers)} live workers")
        worker = self._workers.pop(index)
        _signal_group(worker.popen, signal.SIGKILL)
        worker.popen.wait(timeout=self.startup_timeout)
        worker.log_file.close()
        if wait:
            self.wait_for_workers(len(self._workers))
        return worker.pid

    def kill_scheduler(self) -> int:
        """SIGKILL the scheduler process; return its PID. Workers stay up (and cannot reconnect)."""
        if self._scheduler is None:
            raise RuntimeError("the scheduler is not running")
        scheduler = self._scheduler
        _signal_group(scheduler.popen, signal.SIGKILL)
        scheduler.popen.wait(timeout=self.startup_timeout)
        return scheduler.popen.pid

    def start_worker(self) -> int:
        """Start one more worker and wait until the scheduler has it; return its PID."""
        worker = self._spawn_worker()
        self._workers.append(worker)
        self._wait_for_new_workers([worker])
        return worker.pid

    def wait_for_workers(self, n_workers: int, timeout: float | None = None) -> None:
        """Wait until the scheduler lists exactly ``n_workers`` workers.

        Raises
        ------
        TimeoutError
            The count did not reach ``n_workers`` within ``timeout`` (default `startup_timeout`) s.
        """
        timeout = self.startup_timeout if timeout is None else timeout
        with self._client() as client:
            deadline = time.monotonic() + timeout
            while True:
                seen = len(client.scheduler_info(n_workers=-1)["workers"])
                if seen == n_workers:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the scheduler lists {seen} workers after {timeout} s, expected {n_workers}")
                time.sleep(0.05)

    # ------------------------------------------------------------------ internals

    def _prepare_directory(self) -> None:
        if self.directory is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="dmf-cluster-"))
            self._owns_work_dir = True
        else:
            self._work_dir = Path(self.directory)
            self._work_dir.mkdir(parents=True, exist_ok=True)
        (self._work_dir / "logs").mkdir(exist_ok=True)
        if self.config_dir is None:
            self._dask_config_dir = self._work_dir / "empty-dask-config"
            self._dask_config_dir.mkdir(exist_ok=True)
        else:
            self._dask_config_dir = Path(self.config_dir)
        if self.tls:
            self._tls_dir = make_test_certificates(self._work_dir / "certs")

    def _process_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DASK_CONFIG"] = str(self._dask_config_dir)
        env["DMF_DASK_BIN"] = dask_command()
        env["DMF_WORKER_NTHREADS"] = str(self.nthreads)
        env.pop("DMF_TLS_DIR", None)
        env.pop("DMF_SCHEDULER", None)
        return env

    def _spawn(self, name: str, command: list[str]) -> _Process:
        assert self._work_dir is not None
        log_path = self.log_dir / f"{name}.log"
        log_file = open(log_path, "ab")
        try:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self._process_env(),
                cwd=self._work_dir,
                start_new_session=True,
                preexec_fn=self._preexec,
            )
        except BaseException:
            log_file.close()
            raise
        return _Process(name=name, popen=popen, log_path=log_path, log_file=log_file)

    def _tls_args(self) -> list[str]:
        return ["--tls-dir", str(self.tls_dir)] if self.tls else []

    def _start_scheduler(self) -> None:
        assert self._work_dir is not None
        scheduler_file = self._work_dir / "scheduler.json"
        dashboard = ["--dashboard-address", "127.0.0.1:0"] if self.dashboard else ["--no-dashboard"]
        command = [
            "bash", str(CLUSTER_DIR / "start-scheduler.sh"), *self._tls_args(),
            "--host", "127.0.0.1", "--port", "0",  # port 0: the kernel picks a free port, race-free
            *dashboard, "--scheduler-file", str(scheduler_file),
        ]
        self._scheduler = self._spawn("scheduler", command)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            address = _read_scheduler_address(scheduler_file)
            if address is not None:
                self._address = address
                return
            _raise_if_exited(self._scheduler)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the scheduler wrote no {scheduler_file.name} within {self.startup_timeout} s; "
                    f"its log ends with:\n{self._scheduler.log_tail()}"
                )
            time.sleep(0.05)

    def _spawn_worker(self) -> _Process:
        assert self._work_dir is not None
        number = self._workers_started
        self._workers_started += 1
        name = f"worker-{number}"
        local_directory = self._work_dir / name
        local_directory.mkdir(exist_ok=True)
        command = [
            "bash", str(CLUSTER_DIR / "start-worker.sh"), self.address, *self._tls_args(),
            "--no-nanny", "--name", name, "--host", "127.0.0.1", "--no-dashboard",
            "--nthreads", str(self.nthreads), "--memory-limit", self.memory_limit,
            "--local-directory", str(local_directory),
            # A worker whose scheduler is gone exits by itself after this long.
            "--death-timeout", "30s",
        ]
        return self._spawn(name, command)

    def _wait_for_new_workers(self, new_workers: list[_Process]) -> None:
        """Wait until every live worker is connected; learn the new workers' addresses."""
        expected = len(self._workers)
        with self._client() as client:
            deadline = time.monotonic() + self.startup_timeout
            while len(client.scheduler_info(n_workers=-1)["workers"]) < expected:
                for worker in new_workers:
                    _raise_if_exited(worker)
                if time.monotonic() > deadline:
                    tails = "\n".join(f"--- {w.name}.log:\n{w.log_tail()}" for w in new_workers)
                    raise RuntimeError(
                        f"{expected} workers expected, the scheduler lists "
                        f"{len(client.scheduler_info(n_workers=-1)['workers'])} after {self.startup_timeout} s\n{tails}"
                    )
                time.sleep(0.05)
            address_by_pid = {pid: address for address, pid in client.run(os.getpid).items()}
        for worker in new_workers:
            if worker.pid not in address_by_pid:
                raise RuntimeError(
                    f"no connected worker reports PID {worker.pid} of {worker.name}; connected: {address_by_pid}"
                )
            worker.address = address_by_pid[worker.pid]

    def _client(self):
        from distributed import Client

        return Client(self.address, security=self.security, timeout=self.startup_timeout, set_as_default=False)


def _read_scheduler_address(scheduler_file: Path) -> str | None:
    """The address in a scheduler file, or ``None`` while it is absent or half-written."""
    try:
        return json.loads(scheduler_file.read_text())["address"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def _raise_if_exited(process: _Process) -> None:
    returncode = process.popen.poll()
    if returncode is not None:
        raise RuntimeError(f"{process.name} exited with status {returncode}; its log ends with:\n{process.log_tail()}")


def _signal_group(popen: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to the process group the process leads (it was started in its own session)."""
    try:
        os.killpg(popen.pid, signum)
    except ProcessLookupError:
        pass


def _stop_processes(processes: list[_Process], timeout: float) -> None:
    """SIGTERM each process group, wait up to ``timeout`` s in all, then SIGKILL the rest."""
    for process in processes:
        if process.popen.poll() is None:
            _signal_group(process.popen, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for process in processes:
        # SIGKILL the group even when the leader has exited: nothing it started may survive.
        _signal_group(process.popen, signal.SIGKILL)
        if process.popen.poll() is None:
            process.popen.wait()
        process.log_file.close()
