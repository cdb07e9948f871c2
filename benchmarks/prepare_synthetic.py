"""Time and peak memory of ``pipelines/prepare.py --synthetic PRESET`` on its own LocalCluster.

The pipeline starts one single-threaded worker per CPU (2 on a 2-core machine).

Runs the pipeline as a subprocess and samples the resident memory of its whole process tree
(client, scheduler, nannies, workers) every 0.1 s; the peak of that sum is reported. Prints
a table and writes ``benchmarks/results/prepare_synthetic-<preset>.json``.

    python benchmarks/prepare_synthetic.py --preset ml-20m
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="ml-20m")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validate", action="store_true", help="also validate (off by default for synthetic data)")
    parser.add_argument("--keep", action="store_true", help="keep the output directory")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="dmf-bench-"))
    output = scratch / f"synthetic-{args.preset}"
    command = [sys.executable, str(REPO / "pipelines" / "prepare.py"), str(output), "--synthetic", args.preset,
               "--seed", str(args.seed)]
    command += ["--validate"] if args.validate else []
    environment = {key: value for key, value in os.environ.items() if key != "DMF_SCHEDULER"}
    load_before = os.getloadavg()
    started = time.perf_counter()
    child = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    watched = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_rss(watched))
        time.sleep(0.1)
    wall = time.perf_counter() - started
    stdout = child.stdout.read()
    if child.returncode != 0:
        print(stdout)
        print(f"pipeline failed with exit code {child.returncode}", file=sys.stderr)
        return 1
    summary = json.loads((output / "summary.json").read_text())
    disk = sum(path.stat().st_size for path in output.rglob("*") if path.is_file())
    result = {
        "preset": args.preset, "workers": os.cpu_count(), "validated": args.validate,
        "wall_seconds": round(wall, 1), "pipeline_seconds": summary["timings"]["total_seconds"],
        "peak_rss_gib": round(peak / 2**30, 2), "rows": summary["rows"], "users": summary["users"],
        "items": summary["items"], "output_mib": round(disk / 2**20, 1), "timings": summary["timings"],
        "cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "versions": summary["versions"],
    }
    print(f"{'preset':<10}{'ratings':>12}{'wall s':>9}{'pipeline s':>12}{'peak GiB':>10}{'output MiB':>12}")
    print(f"{args.preset:<10}{summary['rows']['ratings']:>12,}{wall:>9.1f}{summary['timings']['total_seconds']:>12.1f}"
          f"{peak / 2**30:>10.2f}{disk / 2**20:>12.1f}")
    results = REPO / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"prepare_synthetic-{args.preset}.json").write_text(json.dumps(result, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
