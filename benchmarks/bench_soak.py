"""Soak benchmark (issue 13): N daemons for M minutes against one server, random link cuts.

Starts ``splitnet serve`` as its own process, and ``--daemons`` ``splitnet device``
processes, each through its own loopback fault proxy (``splitnet.wire._faultproxy``).
A seeded schedule cuts one daemon's link at a time (exponential gaps of mean
``--cut-every`` s; down for 0.2-2 s; the server notices each cut 0-2 s after the daemon).
Samples the server's RSS (/proc/PID/status) all along.

Counts, over all daemons:
    sent        frames the daemons put on the wire (each frame once, however often re-sent)
    answered    frames with an answer (summary ``ok``; each one's result file is checked)
    lost        sent and never answered
    duplicated  tail runs beyond one per sent frame (the server's compute count), and
                result files written twice
    dropped     frames a paced source skipped while its window was full (a live camera's
                policy, not a loss: they were never sent)

Writes ``--out``/soak.json and ``--out``/rss.png (RSS over time, cuts marked).
Target: lost = duplicated = 0, RSS after the run within 10% of RSS before it
(after the warm-up, with every daemon connected).

Usage: python benchmarks/bench_soak.py [--daemons 8] [--minutes 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fault tests' process helpers

from _processes import (  # noqa: E402
    daemon_process,
    export_small_unet,
    free_port,
    results,
    rss_mb,
    serve_process,
    stop,
    tail_runs,
)

from splitnet.wire._faultproxy import FaultProxy  # noqa: E402

MODEL = "unet-vgg16.encoder.block3.pool"


async def soak(args, repository: Path, work: Path) -> dict:
    from tqdm import tqdm

    port, metrics = free_port(), free_port()
    server = serve_process(repository, port, metrics, log=work / "serve.log")
    rng = random.Random(args.seed)
    samples: list[tuple[float, float]] = []
    cuts: list[dict] = []
    frames = int(args.fps * args.minutes * 60)
    proxies = [await FaultProxy("127.0.0.1", port).start() for _ in range(args.daemons)]
    outs = [work / f"daemon-{i}" for i in range(args.daemons)]
    t0 = time.monotonic()
    daemons = [
        daemon_process(
            repository / "unet",
            f"127.0.0.1:{p.port}",
            out,
            frames,
            "--fps",
            str(args.fps),
            "--window",
            str(args.window),
            "--seed",
            str(i),
            "--retry-timeout",
            "120",
            log=work / f"daemon-{i}.log",
        )
        for i, (p, out) in enumerate(zip(proxies, outs, strict=True))
    ]
    stop_sampling = asyncio.Event()

    async def sample():
        while not stop_sampling.is_set():
            samples.append((time.monotonic() - t0, rss_mb(server.pid)))
            try:
                await asyncio.wait_for(stop_sampling.wait(), args.sample_every)
            except TimeoutError:
                pass

    sampler = asyncio.create_task(sample())
    try:
        # warm-up: every daemon connected and answered, then the "before" RSS
        await asyncio.sleep(args.warmup)
        before = rss_mb(server.pid)
        end = t0 + args.minutes * 60
        bar = tqdm(total=round(args.minutes * 60), desc="soak", unit="s", disable=args.quiet)
        while time.monotonic() < end and any(d.poll() is None for d in daemons):
            gap = rng.expovariate(1 / args.cut_every)
            await asyncio.sleep(max(0.0, min(gap, end - time.monotonic())))
            bar.n = round(min(time.monotonic(), end) - t0)
            bar.refresh()
            if time.monotonic() >= end:
                break
            i = rng.randrange(args.daemons)
            down, notice = rng.uniform(0.2, 2.0), rng.uniform(0.0, 2.0)
            cuts.append(
                {
                    "t_s": round(time.monotonic() - t0, 2),
                    "daemon": i,
                    "down_s": down,
                    "notice_s": notice,
                }
            )
            proxies[i].cut(server_notices_after_s=notice)
            await asyncio.sleep(down)
            proxies[i].restore()
        bar.close()
        for d in daemons:
            await asyncio.to_thread(d.wait, 600)
        await asyncio.sleep(args.settle)  # the server drops what it held for the streams
        after = rss_mb(server.pid)
        runs = tail_runs(metrics, MODEL)
    finally:
        stop_sampling.set()
        await sampler
        for p in proxies:
            await p.close()
        stop(*daemons, server)
    per = []
    for d, out in zip(daemons, outs, strict=True):
        s = json.loads((out / "summary.json").read_text())
        s["returncode"] = d.returncode
        s["result_files"] = len(results(out))
        per.append(s)
    sent = sum(s["frames_sent"] for s in per)
    answered = sum(s["ok"] for s in per)
    files = sum(s["result_files"] for s in per)
    return {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs (shared)",
        "daemons": args.daemons,
        "minutes": args.minutes,
        "fps_per_daemon": args.fps,
        "seed": args.seed,
        "cuts": len(cuts),
        "frames_captured": sum(s["frames_captured"] for s in per),
        "sent": sent,
        "answered": answered,
        "lost": sent - answered,
        "duplicated_tail_runs": runs - sent,
        "duplicated_result_files": answered - files,
        "dropped": sum(s["dropped"] for s in per),
        "resent": sum(s["resent"] for s in per),
        "reconnects": sum(s["reconnects"] for s in per),
        "fatal": [s["fatal"] for s in per if s["fatal"]],
        "returncodes": [s["returncode"] for s in per],
        "latency_p95_ms_max": max(s["latency_p95_ms"] for s in per),
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "rss_peak_mb": round(max(r for _, r in samples), 1),
        "rss_change": round(after / before - 1, 4),
        "rss_samples": [(round(t, 1), round(r, 1)) for t, r in samples],
        "cut_schedule": cuts,
    }


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, r = zip(*doc["rss_samples"], strict=True)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([x / 60 for x in t], r, lw=1.2, label="server RSS")
    for c in doc["cut_schedule"]:
        ax.axvline(c["t_s"] / 60, color="tab:red", alpha=0.15, lw=0.8)
    ax.axhline(doc["rss_before_mb"] * 1.1, color="gray", ls="--", lw=0.8, label="before + 10%")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MiB")
    ax.set_title(
        f"{doc['daemons']} daemons, {doc['cuts']} link cuts (red): {doc['sent']} sent, "
        f"{doc['lost']} lost, {doc['duplicated_tail_runs']} duplicated"
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--daemons", type=int, default=8)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--fps", type=float, default=2.0, help="frames per second per daemon")
    p.add_argument("--window", type=int, default=16, help="frames in flight per daemon")
    p.add_argument("--cut-every", type=float, default=10.0, metavar="S", help="mean gap of cuts")
    p.add_argument("--warmup", type=float, default=30.0, metavar="S")
    p.add_argument("--settle", type=float, default=5.0, metavar="S")
    p.add_argument("--sample-every", type=float, default=2.0, metavar="S")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repository", type=Path, help="default: a small U-Net bundle, exported")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.daemons < 1 or args.minutes <= 0 or args.fps <= 0 or args.cut_every <= 0:
        p.error("--daemons >= 1, and --minutes, --fps, --cut-every > 0")
    args.warmup = min(args.warmup, args.minutes * 60 / 4)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        repository = args.repository or export_small_unet(work / "repo")
        doc = asyncio.run(soak(args, repository, work))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(doc, indent=2) + "\n")
    plot(doc, args.out / "rss.png")
    short = {k: v for k, v in doc.items() if k not in ("rss_samples", "cut_schedule")}
    print(json.dumps(short, indent=2))
    ok = doc["lost"] == 0 and doc["duplicated_tail_runs"] <= 0 and abs(doc["rss_change"]) <= 0.10
    print("target met" if ok else "target NOT met", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
