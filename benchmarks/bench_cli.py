"""How fast the pipelines answer before any work starts: ``--help``, and a wrong argument
(a missing input path), for every script in ``pipelines/``.

    python benchmarks/bench_cli.py              # median of 5 runs each

Each case is a fresh ``python pipelines/SCRIPT.py ...`` process (interpreter start
included), timed from launch to exit. Target: under 1 s for every case (the arguments are
checked before Dask is imported or a cluster starts). Prints a table and writes JSON
(default ``benchmarks/results/cli-local.json``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 1.0
MISSING = "/no/such/dir"
#: Per script: the arguments of a run whose input path does not exist (expected exit code 2).
WRONG = {
    "train.py": ["--ratings", MISSING, "--output", "/tmp/unused-model"],
    "nightly.py": ["--snapshot", MISSING, "--home", "/tmp/unused-home"],
    "update.py": ["--snapshot", MISSING, "--home", "/tmp/unused-home"],
    "tune.py": ["--ratings", MISSING, "--space", MISSING, "--output", "/tmp/unused-tune"],
    "evaluate.py": ["--model", MISSING, "--test", MISSING],
    "recommend.py": ["--model", MISSING, "--output", "/tmp/unused-recs"],
    "prepare.py": ["/tmp/unused-prepared", "--input", "ml-100"],
}


def timed(arguments: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *arguments], cwd=REPO, capture_output=True)
    return time.perf_counter() - started, done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    for script, wrong in WRONG.items():
        for case, arguments in (("--help", ["--help"]), ("missing path", wrong)):
            runs = [timed([f"pipelines/{script}", *arguments]) for _ in range(args.repeats)]
            seconds = statistics.median(run[0] for run in runs)
            rows.append({"script": script, "case": case, "exit": runs[0][1], "seconds": round(seconds, 3),
                         "target": TARGET_SECONDS, "met": seconds <= TARGET_SECONDS})
    print(common.format_table(rows, [("script", "script", 13), ("case", "case", 13), ("exit", "exit", 5),
                                     ("seconds", "seconds", 8), ("met", "<= 1 s", 7)]))
    output = common.write_run("cli", "local", rows, args.output, repeats=args.repeats)
    print(f"wrote {output}")
    return 0 if all(row["met"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
