"""dmf's defaults on GroupLens' own ml-100k u1.base/u1.test split, and the demo script."""

import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO_ROOT

import dmf

COLUMNS = ["user", "item", "rating", "timestamp"]


@pytest.mark.slow
def test_default_als_reaches_rmse_0_92_on_ml100k_u1(client, ml100k):
    train = pd.read_csv(ml100k / "u1.base", sep="\t", names=COLUMNS)
    test = pd.read_csv(ml100k / "u1.test", sep="\t", names=COLUMNS)
    model = dmf.ALS().fit(train)
    result = dmf.rmse(model, test)
    print(f"ml-100k u1 test RMSE {float(result):.4f} ({result.n_fallback} fallbacks)")
    assert result <= 0.92
    assert result.count == 20_000 and result.n_fallback > 0


@pytest.mark.slow
def test_demo_runs_end_to_end(ml100k, tmp_path):
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / "demo.py"), "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "test RMSE 0.9" in completed.stdout
    recs = pd.read_parquet(tmp_path / "recommendations")
    assert len(recs) == 943 * 10
    assert dmf.ALS.load(tmp_path / "model").n_ratings_ == 80_000
