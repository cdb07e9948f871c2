"""The README's Python example runs as written (on generated ratings shaped like ml-100k)."""

from __future__ import annotations

import re

import numpy as np
from conftest import REPO_ROOT


def test_the_readme_python_example_runs(cluster, tmp_path, monkeypatch):
    from dmf.datasets import generate_ratings

    code = re.search(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S).group(1)
    assert "client = Client()" in code
    code = code.replace("client = Client()", f"client = Client({cluster.scheduler_address!r})", 1)
    generated = generate_ratings("ml-100k", seed=1).compute()
    generated.rename(columns={"user": "userId", "item": "movieId"}).to_parquet(tmp_path / "ratings.parquet")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    try:
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        if "client" in namespace:
            namespace["client"].close()
    assert (tmp_path / "models" / "als" / "manifest.json").exists()
    assert float(namespace["dmf"].rmse(namespace["model"], namespace["test"])) < 1.5
    cold = namespace["cold"]
    assert set(range(1, 2001)) <= set(np.asarray(cold.item_ids_))
