"""Benchmark: ``splitnet plan`` on a 72-point profile (72 points x 5 codecs + baselines).

Writes a generated profile and rate-accuracy sweep of 72 split points (the size of
``unet-vgg16``'s graph; the numbers are made up, the layouts are the real ones),
then times ``splitnet plan ... --json -`` in a fresh interpreter (imports, reading,
costing 363 candidates, ranking, crossovers from 0.1 Mbit/s to 1 Gbit/s) and, apart,
with ``--plot``. Target: < 1 s without the plot. Not a timed test.

Usage:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_plan.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests._plan_docs import many_points, write  # noqa: E402


def _time(argv: list[str], env: dict) -> float:
    code = "import sys; from splitnet.cli.main import main; sys.exit(main(sys.argv[1:]))"
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=ROOT, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        profile, rate = many_points(72)
        command = ["plan", "toy", "--input", "3x64x64", "--bandwidth", "20Mbit/s"]
        command += ["--rtt", "30ms", "--max-drop", "0.5"]
        command += ["--profile", write(Path(tmp) / "p.json", profile)]
        command += ["--rate-accuracy", write(Path(tmp) / "r.json", rate)]
        import_only = _time(["--version"], env)
        plain = [_time([*command, "--json", "-"], env) for _ in range(args.repeat)]
        plot = [
            _time([*command, "--plot", str(Path(tmp) / "plan.png")], env)
            for _ in range(args.repeat)
        ]
    print(
        f"splitnet plan, 72 points x 5 codecs + 3 baselines, fresh interpreter, {args.repeat} runs"
    )
    print(
        f"  --json -:  median {statistics.median(plain):.3f} s ({', '.join(f'{t:.3f}' for t in plain)})"
    )
    print(
        f"  --plot:    median {statistics.median(plot):.3f} s ({', '.join(f'{t:.3f}' for t in plot)})"
    )
    print(f"  (splitnet --version, the interpreter and the CLI alone: {import_only:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
