"""Benchmark: profile every split point of unet-vgg16 at 3x256x1600, end to end.

Times the command ``splitnet profile unet-vgg16 --input 3x256x1600 --all --json -``
in a fresh interpreter (imports, model build, tracing, MAC counting, JSON),
``--repeat`` times, and prints each wall time and the median. Target: < 30 s on
a 2-core machine. Not a timed test.

Usage:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_profile.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["profile", "unet-vgg16", "--input", "3x256x1600", "--all", "--json", "-"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "import sys; from splitnet.cli.main import main; sys.exit(main(sys.argv[1:]))"
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", code, *COMMAND],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        times.append(time.perf_counter() - start)
        points = len(json.loads(out)["points"])
    print(f"splitnet {' '.join(COMMAND)}")
    print(f"points: {points}; wall s: {', '.join(f'{t:.1f}' for t in times)}")
    print(f"median: {statistics.median(times):.1f} s (target < 30 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
