"""The README's first command: pipelines/quickstart.sh (prepare + nightly on a LocalCluster)."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pandas as pd
import pytest
from conftest import REPO_ROOT


def test_ci_runs_the_readme_test_command():
    readme_commands = re.search(r"```bash\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S).group(1).splitlines()
    assert len(readme_commands) == 2 and "quickstart.sh" in readme_commands[0] and "pytest" in readme_commands[1]
    assert readme_commands[1] in (REPO_ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.slow
def test_quickstart_publishes_then_is_idempotent(tmp_path):
    env = {**os.environ, "DMF_QUICKSTART_DIR": str(tmp_path)}
    command = ["bash", str(REPO_ROOT / "pipelines" / "quickstart.sh"), "--max-iter", "3"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert os.readlink(tmp_path / "home" / "models" / "current") == "v1"
    summary = json.loads((tmp_path / "home" / "models" / "v1" / "summary.json").read_text())
    recommendations = pd.read_parquet(tmp_path / "home" / "models" / "v1" / "recommendations")
    # ml-100k (or its generated stand-in) has 943 users, each with 20+ ratings: all get a top-10
    assert recommendations["user"].nunique() == 943 and recommendations.groupby("user").size().eq(10).all()
    assert 0.85 < summary["metrics"]["rmse"] < 1.1
    assert first.stdout.strip().splitlines()[-1].startswith("quickstart: data: MovieLens ml-100k") or \
        first.stdout.strip().splitlines()[-1] == "quickstart: data: generated ratings shaped like ml-100k (not MovieLens)"
    assert "Shuffle" not in first.stderr  # a successful run prints dmf's own lines
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "unchanged" in second.stdout, second.stdout + second.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "home" / "models").iterdir()) == ["current", "v1"]
