"""Head FPS: OpenVINO (exported bundle) against torch eager, unet-vgg16 at each pool point.

Usage:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_head.py [--input 3x256x1600] [--seconds 3]

Each pool point is exported as a bundle (random weights; FP16 IR), then timed one
frame at a time with the same loop (``splitnet.device.benchmark_callable``):
``--threads`` threads each, OpenVINO's CPU plugin on the raw uint8 frame (normalisation inside the IR) in
FP32 compute and with the device's default precision, and the torch head
(``SplitGraph.split``) in eager mode under ``torch.no_grad`` on the normalised
float tensor. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from splitnet.cli._args import input_shape
from splitnet.device import HeadRunner, benchmark_callable
from splitnet.export import export_bundle, normalize_frame
from splitnet.models import create_model
from splitnet.split import trace


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet-vgg16")
    ap.add_argument("--input", type=input_shape, default=(3, 256, 1600))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both runtimes")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    c, h, w = args.input
    torch.manual_seed(0)
    model = create_model(args.model)
    g = trace(model, torch.zeros(1, c, h, w))
    points = g.select(kind="pool")
    frame = np.random.default_rng(0).integers(0, 256, (h, w, c), dtype=np.uint8)
    print(
        f"{args.model} {c}x{h}x{w}, torch {torch.__version__}, {args.threads} thread(s) each, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for p in points:
            torch.manual_seed(0)
            out = os.path.join(tmp, p.name)
            export_bundle(
                args.model, input_shape=(c, h, w), split=p.name, out_dir=out, parity_frames=1
            )
            head, _ = g.split(p)
            x = normalize_frame(frame, HeadRunner(out).manifest.input)
            res = {}
            for label, precision in (("ov_f32", "f32"), ("ov_default", None)):
                runner = HeadRunner(out, threads=args.threads, precision=precision)
                xi = runner.check_frame(frame)
                res[label] = benchmark_callable(
                    lambda r=runner, xi=xi: r.request.infer({0: xi}),
                    seconds=args.seconds,
                    warmup=args.warmup,
                    label=label,
                )

            def run_torch(head=head, x=x):
                with torch.no_grad():
                    head(x)

            res["torch"] = benchmark_callable(
                run_torch, seconds=args.seconds, warmup=args.warmup, label="torch"
            )
            rows.append((p.name, res))
            print(
                f"  {p.name}: OV f32 {res['ov_f32'].fps:.2f} FPS, OV default "
                f"{res['ov_default'].fps:.2f} FPS, torch {res['torch'].fps:.2f} FPS",
                flush=True,
            )
    print()
    print(
        "| split point | OpenVINO FP32 FPS (p50 ms) | OpenVINO default-precision FPS (p50 ms) "
        "| torch eager FPS (p50 ms) | OV FP32 / torch | OV default / torch |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        a, b, t = r["ov_f32"], r["ov_default"], r["torch"]
        print(
            f"| {name} | {a.fps:.2f} ({a.latency_ms_p50:.1f}) | {b.fps:.2f} ({b.latency_ms_p50:.1f}) "
            f"| {t.fps:.2f} ({t.latency_ms_p50:.1f}) | {a.fps / t.fps:.2f}x | {b.fps / t.fps:.2f}x |"
        )
    print(f"\ntotal {time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
