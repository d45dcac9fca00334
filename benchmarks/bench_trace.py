"""Time tracing + enumerating every split point (issue: well under 10 s for unet-vgg16 at 3x256x1600).

Usage: python benchmarks/bench_trace.py [--model unet-vgg16] [--input 3x256x1600] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from splitnet.cli._args import input_shape
from splitnet.models import create_model
from splitnet.split import trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="unet-vgg16")
    parser.add_argument("--input", type=input_shape, default=(3, 256, 1600))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = create_model(args.model)
    x = torch.zeros(1, *args.input)
    times, split_times = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        g = trace(model, x)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for p in g.points:
            g.split(p)
        split_times.append(time.perf_counter() - t0)
    shape = "x".join(map(str, args.input))
    print(
        f"| model | input | points | trace + enumerate (s, median of {args.repeats}) | split every point (s) |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {args.model} | {shape} | {len(g.points)} | {statistics.median(times):.2f} "
        f"| {statistics.median(split_times):.2f} |"
    )
    print(
        f"\nmachine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )


if __name__ == "__main__":
    main()
