"""Shared fixtures: one real LocalCluster per test session, shared MovieLens data paths."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "movielens"
ML100K = SHARED_DATA / "ml-100k"


@pytest.fixture(scope="session")
def cluster():
    """A real distributed.LocalCluster: 2 worker processes, 1 thread each."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", memory_limit="4GiB"
    ) as local_cluster:
        yield local_cluster


@pytest.fixture
def client(cluster):
    """A client of the session cluster, set as the default for the test's duration."""
    from distributed import Client

    with Client(cluster, set_as_default=True) as dask_client:
        yield dask_client


@pytest.fixture(scope="session")
def ml100k() -> Path:
    """Path of GroupLens ml-100k in ../shared; the test is skipped when it is absent."""
    if not (ML100K / "u.data").exists():
        pytest.skip(f"MovieLens ml-100k not found at {ML100K}")
    return ML100K


@pytest.fixture(autouse=True)
def _dmf_logs_at_info(caplog):
    caplog.set_level(logging.INFO, logger="dmf")
