"""Shared pieces of the benchmark scripts: the data split on disk, peak memory, machine facts, results JSON.

Nothing here is part of dmf; the scripts in this directory import it as a sibling module.

- :func:`prepare_split`: synthetic ratings (dmf's generator), a hash-based train/test split,
  written once as Parquet and reused by every system (dmf, Spark, implicit, NumPy);
- :class:`PeakMemory`: the largest sum of resident memory over a process tree (plus any
  extra pids, e.g. Dask workers), sampled in a thread;
- :func:`machine_info`, :func:`versions`: what the JSON records about the run;
- :class:`ResultsFile`: rows merged into one JSON file, one system at a time, so a run can be
  resumed or redone per system.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

USER, ITEM, RATING = "user", "item", "rating"
GIB = 2**30
SCHEMA_VERSION = 1
DEFAULT_DATA_ROOT = Path(os.environ.get("DMF_BENCH_DATA", Path.home() / ".cache" / "dmf-bench"))


# -- data -----------------------------------------------------------------------------------
def prepare_split(scale: str, *, seed: int, test_fraction: float, root: Path = DEFAULT_DATA_ROOT) -> Path:
    """Generate ``scale`` ratings and split them 90/10 (or ``test_fraction``) into Parquet, once.

    The directory holds ``train/`` and ``test/`` (columns ``user``, ``item`` int64, ``rating``
    float32) and ``split.json`` (counts, generator, seconds). A pair is in test when
    ``dmf.data.splits.holdout_mask`` says so; test pairs whose user or item never occurs in train
    are dropped (and counted) so that every system is scored on exactly the same pairs.
    An existing directory is reused; a half-written one is never seen (temporary name, rename).
    """
    target = Path(root) / f"{scale}-seed{seed}-test{test_fraction:g}"
    if (target / "split.json").exists():
        return target
    started = time.perf_counter()
    scratch = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "train").mkdir(parents=True)
    (scratch / "test").mkdir()
    partitions, generator = _synthetic_partitions(scale, seed)
    mask = _holdout_mask_function()

    def write_partition(index: int, part: pd.DataFrame) -> tuple[int, int]:
        part = part[[USER, ITEM, RATING]].reset_index(drop=True)
        held_out = mask(part, test_fraction, seed)
        part[~held_out].to_parquet(scratch / "train" / f"part-{index:04d}.parquet", index=False)
        part[held_out].to_parquet(scratch / f"test-raw-{index:04d}.parquet", index=False)
        return int((~held_out).sum()), int(held_out.sum())

    import dask

    tasks = [dask.delayed(write_partition)(index, part) for index, part in enumerate(partitions)]
    counts = dask.compute(*tasks, scheduler="threads", num_workers=2)
    train = pd.read_parquet(scratch / "train", columns=[USER, ITEM, RATING])
    raw_test = pd.concat([pd.read_parquet(path) for path in sorted(scratch.glob("test-raw-*.parquet"))], ignore_index=True)
    known = raw_test[USER].isin(pd.unique(train[USER])) & raw_test[ITEM].isin(pd.unique(train[ITEM]))
    raw_test[known].reset_index(drop=True).to_parquet(scratch / "test" / "part-0000.parquet", index=False)
    for path in scratch.glob("test-raw-*.parquet"):
        path.unlink()
    summary = {
        "scale": scale, "seed": seed, "test_fraction": test_fraction, "generator": generator,
        "split": "dmf.data.splits.holdout_mask (counter-based uniform of seed, user, item)",
        "ratings": int(sum(n_train + n_test for n_train, n_test in counts)),
        "train_ratings": int(len(train)), "test_ratings": int(known.sum()),
        "test_dropped_unknown": int((~known).sum()),
        "users": int(train[USER].nunique()), "items": int(train[ITEM].nunique()),
        "train_positives_ge_4": int((train[RATING] >= 4).sum()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (scratch / "split.json").write_text(json.dumps(summary, indent=2))
    try:
        scratch.rename(target)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def one_file_copy(split: Path) -> Path:
    """``split/train-one-file.parquet`` (made once): the training ratings in 1 M-row row groups."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    one_file = split / "train-one-file.parquet"
    if not one_file.exists():
        table = ds.dataset(str(split / "train")).to_table()
        pq.write_table(table, str(one_file) + ".tmp", row_group_size=1_000_000)
        Path(str(one_file) + ".tmp").rename(one_file)
    return one_file


def many_files_copy(split: Path, n_files: int = 1000) -> Path:
    """``split/train-<n>-files/`` (made once): the training ratings as ``n_files`` small files, as
    a snapshot grown by many daily files holds them."""
    import pyarrow.parquet as pq

    directory = split / f"train-{n_files}-files"
    if not directory.exists():
        table = pq.read_table(one_file_copy(split))
        temporary = split / f".train-{n_files}-files.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        step = -(-table.num_rows // n_files)
        for number in range(n_files):
            pq.write_table(table.slice(number * step, step), temporary / f"part-{number:05d}.parquet")
        temporary.rename(directory)
    return directory


def read_split_summary(split_dir: Path) -> dict:
    return json.loads((Path(split_dir) / "split.json").read_text())


def _synthetic_partitions(scale: str, seed: int) -> tuple[list, str]:
    """Delayed pandas partitions of the ratings and the generator's name (dmf's, else the fallback)."""
    try:
        from dmf.datasets.synthetic import generate_ratings
    except ImportError:
        return _fallback_partitions(scale, seed), "benchmarks/_bench_common.py fallback generator"
    return list(generate_ratings(scale, seed=seed).to_delayed()), "dmf.datasets.synthetic.generate_ratings"


def _holdout_mask_function() -> Callable[[pd.DataFrame, float, int], np.ndarray]:
    try:
        from dmf.data.splits import holdout_mask
    except ImportError:
        return _fallback_holdout_mask
    return holdout_mask


def _fallback_holdout_mask(part: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    hashes = pd.util.hash_pandas_object(part[[USER, ITEM]], index=False, hash_key=f"bench{seed:011d}"[:16]).to_numpy()
    return hashes < np.uint64(fraction * float(2**64 - 1))


#: (users, items, ratings, rating step) of the MovieLens releases, for the fallback generator.
FALLBACK_SHAPES = {
    "ml-100k": (943, 1_682, 100_000, 1.0), "ml-1m": (6_040, 3_706, 1_000_209, 1.0),
    "ml-10m": (69_878, 10_677, 10_000_054, 0.5), "ml-20m": (138_493, 26_744, 20_000_263, 0.5),
    "ml-25m": (162_541, 59_047, 25_000_095, 0.5),
}


def _fallback_partitions(scale: str, seed: int, users_per_partition: int = 8_000) -> list:
    """Only used when ``dmf.datasets.synthetic`` cannot be imported: same shapes, simpler model.

    Heavy-tailed user activity and item popularity (log-normal), rating = 3.5 + biases + a
    rank-10 interaction + noise, rounded and clipped; duplicate draws are dropped, so the
    total is slightly below the preset's count.
    """
    import dask

    n_users, n_items, n_ratings, step = FALLBACK_SHAPES[scale]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    activity = rng.lognormal(0.0, 1.1, n_users)
    per_user = 20 + np.floor((n_ratings - 20 * n_users) * activity / activity.sum()).astype(np.int64)
    per_user = np.minimum(per_user, n_items // 2)
    popularity = rng.lognormal(0.0, 1.2, n_items)
    popularity /= popularity.sum()
    item_factors = rng.normal(0.0, 0.4, (n_items, 10)).astype(np.float32)
    item_bias = rng.normal(0.0, 0.35, n_items)

    def users_partition(first: int, last: int) -> pd.DataFrame:
        local = np.random.default_rng(np.random.SeedSequence([seed, 1, first]))
        owner = np.repeat(np.arange(first, last), per_user[first:last])
        item = local.choice(n_items, size=owner.size, p=popularity)
        _, keep = np.unique(owner * n_items + item, return_index=True)
        owner, item = owner[keep], item[keep]
        user_factors = local.normal(0.0, 0.4, (last - first, 10)).astype(np.float32)
        user_bias = local.normal(0.0, 0.45, last - first)
        raw = (3.5 + user_bias[owner - first] + item_bias[item]
               + np.einsum("ij,ij->i", user_factors[owner - first], item_factors[item]) + local.normal(0.0, 0.8, owner.size))
        rating = np.clip(np.round(raw / step) * step, step if step == 0.5 else 1.0, 5.0).astype(np.float32)
        return pd.DataFrame({USER: owner + 1, ITEM: item + 1, RATING: rating})

    bounds = list(range(0, n_users, users_per_partition)) + [n_users]
    return [dask.delayed(users_partition)(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]


# -- memory ---------------------------------------------------------------------------------
def cluster_pids(client) -> set[int]:
    """Process ids of a Dask cluster's workers and, where there are any, their nannies (for
    :class:`Measurement`'s peak memory)."""
    pids = set(client.run(os.getpid).values())
    with contextlib.suppress(Exception):
        pids |= set(client.run(os.getpid, nanny=True).values())
    return pids


class PeakMemory:
    """Largest total RSS of this process, its descendants and ``extra_pids()``, sampled every ``interval`` s.

    Used as a context manager around one measurement; ``peak_gib`` holds the result. Pages
    shared between processes are counted once per process (RSS), which overstates slightly.
    """

    def __init__(self, extra_pids: Callable[[], Iterable[int]] | None = None, interval: float = 0.2):
        self.extra_pids = extra_pids
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._extra: set[int] = set()
        self.load_samples: list[float] = []

    def total_rss(self) -> int:
        root = psutil.Process()
        processes = {root.pid: root}
        with contextlib.suppress(psutil.Error):
            processes.update({child.pid: child for child in root.children(recursive=True)})
        for pid in self._extra - processes.keys():
            with contextlib.suppress(psutil.Error):
                processes[pid] = psutil.Process(pid)
        total = 0
        for process in processes.values():
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self.total_rss())
            self.load_samples.append(os.getloadavg()[0])
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        if self.extra_pids is not None:
            self._extra = set(self.extra_pids())
        self.peak_bytes = self.total_rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bench-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self.total_rss())

    @property
    def peak_gib(self) -> float:
        return round(self.peak_bytes / GIB, 2)


class Measurement:
    """Wall time and peak memory of a block: ``with Measurement(...) as m: ...; m.seconds, m.peak_gib``."""

    def __init__(self, extra_pids: Callable[[], Iterable[int]] | None = None):
        self.memory = PeakMemory(extra_pids)
        self.seconds = float("nan")

    def __enter__(self) -> Measurement:
        self.load_before = round(os.getloadavg()[0], 2)
        self.memory.__enter__()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        self.seconds = time.perf_counter() - self._started
        self.memory.__exit__(*exc_info)
        self.load_after = round(os.getloadavg()[0], 2)

    @property
    def peak_gib(self) -> float:
        return self.memory.peak_gib

    def fields(self) -> dict:
        """Row fields common to every measurement."""
        return {
            "seconds": round(self.seconds, 3), "peak_memory_gib": self.peak_gib,
            "load_1min_before": self.load_before, "load_1min_after": self.load_after,
            "load_1min_mean": round(float(np.mean(self.memory.load_samples or [self.load_after])), 2),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }


# -- machine and versions -------------------------------------------------------------------
def machine_info() -> dict:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model, "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / GIB, 1),
        "platform": platform.platform(), "python": platform.python_version(),
    }


def versions() -> dict:
    """Versions of everything that can take part; ``None`` for what is not installed."""
    found: dict[str, str | None] = {}
    for name in ("dmf", "dask", "distributed", "numpy", "pandas", "pyarrow", "scipy", "pyspark", "implicit", "threadpoolctl"):
        try:
            found[name] = getattr(importlib.import_module(name), "__version__", "unknown")
        except ImportError:
            found[name] = None
    found["java"] = java_version()
    found["dmf_git"] = git_state()
    return found


def git_state() -> str | None:
    """``<commit>`` of the checkout the benchmark runs from, ``+dirty`` when dmf/ has uncommitted changes."""
    repo = Path(__file__).resolve().parents[1]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dmf"], cwd=repo, capture_output=True, text=True,
                               timeout=30).stdout.strip()
        return (commit + ("+dirty" if dirty else "")) or None
    return None


def java_version() -> str | None:
    java = shutil.which("java")
    if java is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        completed = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
        lines = (completed.stderr or completed.stdout).strip().splitlines()
        return lines[0] if lines else None
    return None


def numpy_blas() -> list[dict]:
    """The BLAS libraries NumPy/SciPy loaded (threadpoolctl), or [] without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{key: pool.get(key) for key in ("internal_api", "version", "num_threads", "filepath")}
            for pool in threadpool_info() if pool.get("user_api") == "blas"]


# -- results --------------------------------------------------------------------------------
ROW_KEY = ("system", "task", "rank", "variant")


class ResultsFile:
    """A results JSON that several runs fill in: rows are merged by (system, task, rank, variant).

    ``config`` (data scale, seed, split, hyperparameters) must match the file's; a mismatch
    raises ``ValueError`` rather than mixing incomparable rows.
    """

    def __init__(self, path: Path, config: dict):
        self.path = Path(path)
        self.config = config
        self.document = {"schema_version": SCHEMA_VERSION, "config": config, "machine": machine_info(),
                         "versions": versions(), "native_blas": {}, "data": {}, "rows": [], "errors": []}
        if self.path.exists():
            existing = json.loads(self.path.read_text())
            if existing.get("config") != config:
                raise ValueError(
                    f"{self.path} was written with config {existing.get('config')}, this run has {config}; "
                    f"pass another --output or the same settings"
                )
            existing["machine"], existing["versions"] = self.document["machine"], self.document["versions"]
            self.document = {**self.document, **existing}

    @property
    def rows(self) -> list[dict]:
        return self.document["rows"]

    def has(self, **key) -> bool:
        return any(all(row.get(name) == key.get(name) for name in ROW_KEY) for row in self.rows)

    def add_row(self, row: dict) -> None:
        key = tuple(row.get(name) for name in ROW_KEY)
        self.document["rows"] = [kept for kept in self.rows if tuple(kept.get(name) for name in ROW_KEY) != key]
        self.rows.append(row)
        self.save()

    def add_error(self, system: str, message: str) -> None:
        self.document["errors"].append({"system": system, "message": message[-2000:],
                                        "at": datetime.now(UTC).isoformat(timespec="seconds")})
        self.save()

    def set(self, section: str, key: str, value) -> None:
        self.document.setdefault(section, {})[key] = value
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(self.document, indent=2, default=_json_default) + "\n")
        temporary.replace(self.path)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_run(name: str, scale: str, rows: list[dict], output: Path | None, **extra) -> Path:
    """Write a benchmark run (its rows, the machine, versions, git state, time) as JSON to
    ``output`` (default ``benchmarks/results/<name>-<scale>.json``); returns the path."""
    result = {"scale": scale, **extra, "rows": rows, "machine": machine_info(), "versions": versions(),
              "git": git_state(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    output = output or Path(__file__).resolve().parent / "results" / f"{name}-{scale}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    return output


def format_table(rows: list[dict], columns: list[tuple[str, str, int]], left: int = 2) -> str:
    """Plain-text table; ``columns`` are (key, header, width); the first ``left`` columns are left-aligned."""
    lines = [" ".join(f"{header:<{width}}" if i < left else f"{header:>{width}}" for i, (_, header, width) in enumerate(columns))]
    lines.append("-" * (sum(width for _, _, width in columns) + len(columns) - 1))
    for row in rows:
        cells = []
        for i, (key, _, width) in enumerate(columns):
            text = "" if row.get(key) is None else str(row[key])
            cells.append(f"{text:<{width}}" if i < left else f"{text:>{width}}")
        lines.append(" ".join(cells))
    return "\n".join(lines)
