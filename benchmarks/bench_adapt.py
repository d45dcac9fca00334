"""Runtime adaptation: how fast the daemon on a plan follows a bandwidth step, and its FPS after.

Exports two bundles of one model at a shallow cut (cheap head, many bytes) and a deep
cut (dear head, few bytes), measures each one's cost terms on this machine (head +
encode on OpenVINO, decode + tail in torch, the request's bytes), writes the plan
file, and runs a server and ``AdaptiveDaemon`` on loopback through the link emulator.
The bandwidth steps between a value under the plan's crossover and one over it
(``--low``/``--high``, default: the crossover / 3 and x 3). Per step it reports the
time from the step to the first frame sent on the new best candidate, and the FPS
from 0.5 s after that frame to the next step against the plan's prediction for the
new link (``1000 / max(device, transfer, server)`` ms).

Usage: python benchmarks/bench_adapt.py [--steps 6] [--phase 6] [--model resnet18]
       [--input 3x128x128] [--splits layer1.1.add,layer4.1.add] [--codec f16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _median_ms(fn, n: int = 30) -> float:
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def measure_terms(bundle: Path, frame: np.ndarray):
    """(device_ms, server_ms, wire_bytes) of a bundle on this machine."""
    from splitnet.device import HeadRunner
    from splitnet.server import TailModel
    from splitnet.server._repository import FrameInput
    from splitnet.wire import encode_infer_request

    runner = HeadRunner(bundle)
    codec = runner.manifest.make_codec()
    device_ms = _median_ms(lambda: codec.encode(runner(frame)))
    payload = codec.encode(runner(frame))
    tail = TailModel(bundle)
    server_ms = _median_ms(lambda: tail.run_batch([FrameInput(tail.codec.decode(payload))]))
    request = encode_infer_request(
        runner.manifest.name,
        payload,
        request_id="devicehost-0123abcd/123456",
        parameters={"device_id": "devicehost-0123abcd", "frame_id": 123456},
    )
    return runner.manifest, device_ms, server_ms, len(request)


def crossover(pf, lo: float = 1e5, hi: float = 1e10) -> float | None:
    """The bandwidth where the plan's best candidate changes (the first, by bisection)."""
    grid = np.geomspace(lo, hi, 200)
    best = [pf.best(b).name for b in grid]
    for i in range(len(grid) - 1):
        if best[i] != best[i + 1]:
            a, b = grid[i], grid[i + 1]
            while b / a > 1.001:
                m = (a * b) ** 0.5
                a, b = (m, b) if pf.best(m).name == best[i] else (a, m)
            return (a * b) ** 0.5
    return None


async def run_steps(repo: Path, plan_path: Path, out: Path, bandwidths, phase_s: float, rtt_s):
    from splitnet.device import AdaptiveDaemon, DaemonConfig, LinkEmulator
    from splitnet.server import InferenceServer, ServerConfig

    server = InferenceServer(ServerConfig(repository=repo, port=0, metrics_port=None, device="cpu"))
    await server.start()
    link = LinkEmulator(bandwidths[0], rtt_s / 2)
    daemon = AdaptiveDaemon(
        DaemonConfig(
            plan=plan_path,
            servers=(f"127.0.0.1:{server.port}",),
            frames=10**7,
            out=out,
            window=4,
            emulate_link=link,
        )
    )
    run = asyncio.create_task(daemon.run())
    steps = []
    try:
        await asyncio.sleep(phase_s)
        for bw in bandwidths[1:]:
            link.set(bandwidth_bps=bw)
            steps.append((time.perf_counter(), bw))
            await asyncio.sleep(phase_s)
        daemon.request_stop()
        summary = await asyncio.wait_for(run, 120)
    finally:
        if not run.done():
            run.cancel()
        await server.stop(0)
    return daemon, steps, summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--input", default="3x128x128")
    ap.add_argument("--splits", default="layer1.1.add,layer4.1.add")
    ap.add_argument("--codec", default="f16")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--phase", type=float, default=6.0, help="seconds between steps")
    ap.add_argument("--low", type=float, help="bit/s (default: the crossover / 3)")
    ap.add_argument("--high", type=float, help="bit/s (default: the crossover x 3)")
    ap.add_argument("--rtt-ms", type=float, default=4.0)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    from splitnet.export import export_bundle
    from splitnet.plan import Bounds, Link, PlanCandidate, PlanFile, write_plan_file

    shape = tuple(int(v) for v in args.input.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="bench_adapt_"))
    repo = tmp / "repo"
    frame = np.random.default_rng(0).integers(0, 256, (shape[1], shape[2], 3), dtype=np.uint8)
    cands = []
    for split in args.splits.split(","):
        d = repo / split
        export_bundle(
            args.model,
            input_shape=shape,
            split=split,
            out_dir=d,
            codec=args.codec,
            num_classes=10,
            parity_frames=1,
        )
        m, device_ms, server_ms, nbytes = measure_terms(d, frame)
        cands.append(
            PlanCandidate(
                name=f"{split} {args.codec}",
                bundle=str(d),
                served_name=m.name,
                split=split,
                codec=args.codec,
                device_ms=device_ms,
                wire_bytes=nbytes,
                server_ms=server_ms,
                drop_points=0.0,
            )
        )
        print(f"{split}: device {device_ms:.2f} ms, server {server_ms:.2f} ms, {nbytes} bytes")
    rtt = args.rtt_ms / 1e3
    pf = PlanFile(args.model, shape, "fps", Bounds(), Link(1e9, rtt), tuple(cands))
    x = crossover(pf)
    if x is None and (args.low is None or args.high is None):
        print("the plan's best candidate is the same at every bandwidth: give --low and --high")
        return 1
    low, high = args.low or x / 3, args.high or x * 3
    bandwidths = [high if i % 2 == 0 else low for i in range(args.steps + 1)]
    pf = PlanFile(args.model, shape, "fps", Bounds(), Link(bandwidths[0], rtt), tuple(cands))
    plan_path = tmp / "plan.json"
    write_plan_file(pf, plan_path)
    print(
        f"crossover {x / 1e6:.1f} Mbit/s; steps between {high / 1e6:.1f} and {low / 1e6:.1f} Mbit/s"
    )

    out = tmp / "out"
    daemon, steps, summary = asyncio.run(
        run_steps(repo, plan_path, out, bandwidths, args.phase, rtt)
    )
    frames = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    t0 = daemon._t0
    rows = []
    for k, (at, bw) in enumerate(steps):
        best = pf.best(bw, rtt).name
        end = steps[k + 1][0] if k + 1 < len(steps) else at + args.phase
        sw = [s for s in daemon.switches if s["clock"] > at and s["to"] == best]
        first = sw[0]["first_frame_clock"] if sw and sw[0]["first_frame_clock"] else None
        switch_s = None if first is None or first > end else first - at
        start = (first if switch_s is not None else at) + 0.5
        n = sum(start <= t0 + f["answered_s"] < end for f in frames)
        fps = n / (end - start) if end > start else 0.0
        predicted = pf.score(pf.best(bw, rtt), bw, rtt)
        rows.append(
            {
                "to_mbps": bw / 1e6,
                "best": best,
                "switch_s": switch_s,
                "fps": fps,
                "predicted_fps": predicted,
                "fps_error": fps / predicted - 1,
            }
        )
        print(
            f"step to {bw / 1e6:7.1f} Mbit/s: best {best:18s} switch "
            + (f"{switch_s:.2f} s" if switch_s is not None else "none")
            + f", FPS {fps:6.1f} vs predicted {predicted:6.1f} ({100 * (fps / predicted - 1):+.0f}%)"
        )
    for k, (at, bw) in enumerate(steps):
        print(f"  step {k} at {at - t0:.2f} s to {bw / 1e6:.1f} Mbit/s")
    for s in daemon.switches:
        print(
            f"  switch at {s['at_s']:.2f} s: {s['from']} -> {s['to']} "
            f"(estimated {s['bandwidth_bps'] / 1e6:.1f} Mbit/s, RTT {s['rtt_ms']:.1f} ms)"
        )
    times = [r["switch_s"] for r in rows if r["switch_s"] is not None]
    print(summary.format())
    print(
        f"switch time over {len(times)}/{len(rows)} steps: median "
        f"{statistics.median(times):.2f} s, max {max(times):.2f} s"
        if times
        else "no switch"
    )
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {platform.python_version()}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"steps": rows, "switches": summary.switches}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
