"""The cluster/ deployment files and the subprocess cluster harness, on real processes.

A plain and a TLS cluster (scheduler + 2 workers, started by cluster/start-*.sh with
cluster/dask.yaml) serve the module; the kill/replace test starts its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cluster_harness import CLUSTER_DIR, SubprocessCluster, make_test_certificates

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the harness and scripts target Linux")

# Each cluster starts in about 2-4 s; the client timeout keeps refused connections quick.
CONNECT_TIMEOUT = "5s"


def _square_task():
    """A task returning its square and the PID that ran it.

    Nested, so cloudpickle ships it by value: the workers cannot import this test module.
    """

    def square_and_pid(x: int) -> tuple[int, int]:
        return x * x, os.getpid()

    return square_and_pid


def _live_processes_in_groups(group_ids: set[int]) -> list:
    """Non-zombie processes whose process group is one of ``group_ids``."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if os.getpgid(process.info["pid"]) in group_ids and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process.info)
        except ProcessLookupError:
            continue
    return found


@pytest.fixture(scope="module")
def plain_cluster():
    with SubprocessCluster(n_workers=2) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def tls_cluster():
    with SubprocessCluster(n_workers=2, tls=True) as cluster:
        yield cluster


def _client(cluster: SubprocessCluster, **kwargs):
    from distributed import Client

    return Client(cluster.address, security=cluster.security, timeout=CONNECT_TIMEOUT, set_as_default=False, **kwargs)


@pytest.mark.parametrize("cluster_fixture", ["plain_cluster", "tls_cluster"])
def test_tasks_run_on_the_harness_worker_processes(cluster_fixture, request):
    cluster = request.getfixturevalue(cluster_fixture)
    scheme = "tls://" if cluster_fixture == "tls_cluster" else "tcp://"
    assert cluster.address.startswith(scheme + "127.0.0.1:")
    assert (cluster.security is not None) == (cluster_fixture == "tls_cluster")
    with _client(cluster) as client:
        assert sorted(client.run(os.getpid).values()) == sorted(cluster.worker_pids())
        assert os.getpid() not in cluster.worker_pids()
        futures = client.map(_square_task(), range(20), pure=False)
        results = client.gather(futures)
    assert [square for square, _ in results] == [x * x for x in range(20)]
    assert {pid for _, pid in results} <= set(cluster.worker_pids())


def test_processes_use_cluster_config_and_worker_settings(plain_cluster):
    import dask

    def read_config() -> dict:
        import dask as worker_dask

        return {
            "worker-ttl": worker_dask.config.get("distributed.scheduler.worker-ttl"),
            "pause": worker_dask.config.get("distributed.worker.memory.pause"),
            "connect": worker_dask.config.get("distributed.comm.timeouts.connect"),
            "blas": [os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")],
        }

    expected = yaml.safe_load((CLUSTER_DIR / "dask.yaml").read_text())["distributed"]
    with _client(plain_cluster) as client:
        on_scheduler = client.run_on_scheduler(read_config)
        on_workers = client.run(read_config)
        workers = client.scheduler_info(n_workers=-1)["workers"]
    assert on_scheduler["worker-ttl"] == expected["scheduler"]["worker-ttl"] != "5 minutes"
    for settings in on_workers.values():
        assert settings["pause"] == expected["worker"]["memory"]["pause"]
        assert settings["connect"] == expected["comm"]["timeouts"]["connect"]
        assert settings["blas"] == ["1", "1", "1"]
    assert sorted(worker["memory_limit"] for worker in workers.values()) == [2 * 2**30, 2 * 2**30]
    assert sorted(worker["nthreads"] for worker in workers.values()) == [1, 1]
    # This test process never read cluster/dask.yaml: the workers got it from DASK_CONFIG.
    assert dask.config.get("distributed.scheduler.worker-ttl") != expected["scheduler"]["worker-ttl"]


def test_cluster_config_keys_all_exist_in_distributed_defaults():
    """Dask silently ignores misspelled keys; every key of cluster/dask.yaml must be a real one."""
    import distributed

    defaults = yaml.safe_load((Path(distributed.__file__).parent / "distributed.yaml").read_text())
    ours = yaml.safe_load((CLUSTER_DIR / "dask.yaml").read_text())

    def key_paths(tree: dict, prefix: tuple = ()) -> list[tuple]:
        paths = []
        for key, value in tree.items():
            if isinstance(value, dict) and key != "pre-spawn-environ":
                paths += key_paths(value, prefix + (key,))
            else:
                paths.append(prefix + (key,))
        return paths

    unknown = []
    for path in key_paths(ours):
        node = defaults
        for key in path:
            if not isinstance(node, dict) or key not in node:
                unknown.append(".".join(path))
                break
            node = node[key]
    assert key_paths(ours), "cluster/dask.yaml is empty"
    assert unknown == []


def test_tls_scheduler_refuses_plain_and_foreign_certificate_clients(tls_cluster, tmp_path):
    from distributed import Client
    from distributed.security import Security

    plain_address = tls_cluster.address.replace("tls://", "tcp://")
    with pytest.raises((OSError, TimeoutError)):
        Client(plain_address, timeout=CONNECT_TIMEOUT, set_as_default=False)

    foreign = make_test_certificates(tmp_path / "foreign")  # a different CA
    foreign_security = Security(tls_ca_file=str(foreign / "ca.pem"), tls_client_cert=str(foreign / "dask.pem"),
                                tls_client_key=str(foreign / "dask-key.pem"), require_encryption=True)
    with pytest.raises((OSError, TimeoutError)):
        Client(tls_cluster.address, security=foreign_security, timeout=CONNECT_TIMEOUT, set_as_default=False)

    # The cluster's own certificates still connect, so the refusals above are about the credentials.
    with _client(tls_cluster) as client:
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2


def test_client_env_alone_connects_a_subprocess_over_tls(tls_cluster):
    """What a pipeline gets: only environment variables, no security= argument in its code."""
    program = (
        "import json, os\n"
        "from distributed import Client\n"
        "with Client(os.environ['DMF_SCHEDULER'], timeout='10s') as client:\n"
        "    print(json.dumps(sorted(client.run(os.getpid).values())))\n"
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DASK_", "DMF_"))}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    completed = subprocess.run([sys.executable, "-c", program], env=env | tls_cluster.client_env(),
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == sorted(tls_cluster.worker_pids())

    without_certificates = env | {"DMF_SCHEDULER": tls_cluster.address}
    refused = subprocess.run([sys.executable, "-c", program.replace("'10s'", "'3s'")], env=without_certificates,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0


def test_client_args_match_the_pipeline_flags(tls_cluster, plain_cluster):
    assert plain_cluster.client_args() == ["--scheduler", plain_cluster.address]
    args = tls_cluster.client_args()
    assert args[:2] == ["--scheduler", tls_cluster.address]
    flags = dict(zip(args[2::2], args[3::2]))
    assert set(flags) == {"--tls-ca-file", "--tls-cert", "--tls-key"}
    assert all(Path(path).is_file() for path in flags.values())


@pytest.mark.slow
def test_kill_worker_removes_it_and_start_worker_replaces_it():
    with SubprocessCluster(n_workers=2) as cluster, _client(cluster) as client:
        first, second = cluster.worker_pids()
        square = _square_task()
        futures = [client.submit(square, x, workers=[cluster.worker_addresses()[x % 2]], allow_other_workers=True,
                                 pure=False) for x in range(8)]
        before = client.gather(futures)
        assert {pid for _, pid in before} == {first, second}

        killed = cluster.kill_worker(0)
        assert killed == first
        with pytest.raises(ProcessLookupError):
            os.kill(killed, 0)
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1
        assert list(client.run(os.getpid).values()) == [second] == cluster.worker_pids()
        # Results the killed worker held are recomputed on the survivor.
        after = client.gather(futures)
        assert [value for value, _ in after] == [x * x for x in range(8)]
        assert {pid for _, pid in after} == {second}

        replacement = cluster.start_worker()
        assert replacement not in (first, second)
        assert cluster.worker_pids() == [second, replacement]
        assert sorted(client.run(os.getpid).values()) == sorted([second, replacement])
        on_replacement = client.submit(_square_task(), 7, workers=[cluster.worker_addresses()[1]], pure=False).result()
        assert on_replacement == (49, replacement)


def test_close_leaves_no_process_and_no_directory():
    cluster = SubprocessCluster(n_workers=1)
    cluster.start()
    try:
        groups = {cluster.scheduler_pid(), *cluster.worker_pids()}
        work_dir = cluster.log_dir.parent
        assert len(_live_processes_in_groups(groups)) == 2
    finally:
        started = time.monotonic()
        cluster.close()
    assert time.monotonic() - started < 10
    assert _live_processes_in_groups(groups) == []
    assert not work_dir.exists()
    cluster.close()  # idempotent


def test_a_worker_that_cannot_start_fails_fast_with_its_log(tmp_path):
    cluster = SubprocessCluster(n_workers=1, memory_limit="not-a-size", startup_timeout=30)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="worker-0 exited"):
        cluster.start()
    assert time.monotonic() - started < 20
    assert cluster._scheduler is None and cluster.worker_pids() == []


def test_make_test_certs_signs_a_cluster_certificate_for_localhost(tmp_path):
    directory = make_test_certificates(tmp_path / "certs")
    assert sorted(path.name for path in directory.iterdir()) == ["ca-key.pem", "ca.pem", "dask-key.pem", "dask.pem"]
    assert oct((directory / "dask-key.pem").stat().st_mode & 0o777) == "0o600"
    text = subprocess.run(["openssl", "x509", "-in", str(directory / "dask.pem"), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    assert "TLS Web Server Authentication" in text and "TLS Web Client Authentication" in text
    for purpose in ("sslserver", "sslclient"):
        subprocess.run(["openssl", "verify", "-CAfile", str(directory / "ca.pem"), "-purpose", purpose,
                        str(directory / "dask.pem")], capture_output=True, check=True)


@pytest.mark.parametrize(
    ("script", "args"),
    [("make-test-certs.sh", []), ("start-worker.sh", []), ("start-scheduler.sh", ["--tls-dir"]),
     ("start-scheduler.sh", ["--tls-dir", "/nonexistent-dmf-certs"])],
)
def test_scripts_reject_bad_usage_with_a_message(script, args):
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DMF_", "DASK_"))}
    completed = subprocess.run(["bash", str(CLUSTER_DIR / script), *args], capture_output=True, text=True,
                               env=env, timeout=30)
    assert completed.returncode == 2
    assert "usage:" in completed.stderr or "error:" in completed.stderr


@pytest.mark.slow
def test_cron_wrapper_runs_nightly_against_a_tls_cluster(tls_cluster, tmp_path):
    """cluster/cron/dmf-nightly-run with an environment file made of client_env() publishes a model."""
    from helpers import random_ratings

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    random_ratings(60, 40, 0.3, seed=3).to_parquet(snapshot / "part-0.parquet")
    config = tmp_path / "nightly.toml"
    config.write_text('rank = 3\nmax-iter = 2\nduplicates = "error"\n')
    env_file = tmp_path / "nightly.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in tls_cluster.client_env().items()))
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DASK_", "DMF_"))}
    env |= {"DMF_NIGHTLY_ENV": str(env_file), "DMF_NIGHTLY_CONFIG": str(config), "DMF_PYTHON": sys.executable,
            "DMF_NIGHTLY_STDERR": "1"}
    home = tmp_path / "home"
    # --snapshot and --home go on the command line: the pipelines cannot yet take required
    # options from the TOML file (argparse checks them before the file is read).
    completed = subprocess.run(["bash", str(CLUSTER_DIR / "cron" / "dmf-nightly-run"), "--snapshot", str(snapshot),
                                "--home", str(home)], env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert f"scheduler {tls_cluster.address}, 2 workers" in completed.stderr
    assert "finished with exit status 0" in completed.stderr
    assert (home / "models" / "current").resolve().name == "v1"
    assert list((home / "models" / "current").rglob("manifest.json"))

    env_file.write_text("DASK_CONFIG=/nonexistent\n")
    refused = subprocess.run(["bash", str(CLUSTER_DIR / "cron" / "dmf-nightly-run")], env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2
    assert "DMF_SCHEDULER is not set" in refused.stderr
