"""The seed-004 loop end to end on a tiny model: train -> export -> publish as version 2 ->
the server picks it up -> the daemon moves, while frames stream; prints the timeline.

    OMP_NUM_THREADS=1 nice -n 10 python experiments/redeploy_demo.py \\
        --out experiments/results/redeploy_demo

Version 1 is a width-0.125 ``unet-vgg16`` trained briefly on synthetic steel frames; it
is exported, published to the server's repository and to the device's folder of
versions, and served (``splitnet serve --poll-interval --version-policy latest:2``,
its own process) to a daemon (``splitnet device --bundle MODEL_DIR``, its own process)
that streams synthetic frames. Meanwhile version 2 is trained longer on more frames (the
"field data" of the seed), exported and published to the server's repository (copied
aside, then renamed); once the server's repository index says it is READY it is
published to the device's folder and the daemon gets SIGHUP. Each result names the
version that answered it; the masks are scored against the frames' ground truth per
version. Writes ``timeline.txt`` (what is printed) and ``timeline.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "unet-vgg16"
SPLIT = "encoder.block2.pool"
INPUT = (3, 32, 192)
NAME = f"{MODEL}.{SPLIT}"
STREAM_SEED = 7  # the daemon's frames: a seed the training never drew from


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.time()  # wall clock: the daemon's records carry it too
        self.events: list[dict] = []
        self.lines: list[str] = []

    def now(self) -> float:
        return time.time() - self.t0

    def __call__(self, what: str, **data) -> None:
        t = self.now()
        self.events.append({"t_s": round(t, 2), "event": what, **data})
        self.say(f"{t:7.1f} s  {what}")

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)


def _train(work: Path, tag: str, *, n: int, epochs: int, seed: int, max_seconds=None, start=None):
    """Trains (or, from ``start``'s checkpoint, goes on training) the tiny U-Net."""
    from splitnet.train import TrainConfig, last_path, train

    out = work / f"{tag}.pt"
    if start is not None:  # retraining: the deployed model's weights and optimizer, more data
        shutil.copy(last_path(start), last_path(out))
        shutil.copy(start, out)
    result = train(
        TrainConfig(
            model=MODEL,
            data=f"synthetic:n={n},size={INPUT[1]}x{INPUT[2]}",
            out=str(out),
            epochs=epochs,
            batch=8,
            lr=3e-3,
            input_shape=INPUT,
            model_kwargs={"width": 0.125},
            seed=seed,
            progress=False,
            max_seconds=max_seconds,
            resume=start is not None,
        )
    )
    return out, result


def _export(work: Path, tag: str, weights: Path) -> Path:
    from splitnet.export import export_bundle

    out = work / "bundles" / tag
    export_bundle(
        MODEL,
        input_shape=INPUT,
        split=SPLIT,
        out_dir=out,
        weights=weights,
        codec="q6",
        model_args={"width": 0.125},
        parity_frames=1,
    )
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "splitnet.cli.main", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kw,
    )


async def _index(port: int) -> dict[str, str]:
    """version -> state of the model in the server's repository index."""
    import grpc

    from splitnet.wire import inference_pb2 as pb
    from splitnet.wire import inference_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        r = await stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=5)
        return {m.version: m.state for m in r.models if m.name == NAME}


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.1):
    deadline = time.perf_counter() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(poll_s)


def _scores(results: Path, frames: int) -> list[dict]:
    """Per answered frame: its version and the mean Dice of its mask (one class per pixel,
    as the server answers) against the synthetic ground truth."""
    import numpy as np
    from PIL import Image

    from splitnet.synthetic import make_frame

    out = []
    for i in range(frames):
        png = results / f"{i:08d}.png"
        if not png.is_file():
            continue
        version = Image.open(png).text.get("version", "")
        mask = np.asarray(Image.open(png))  # 0: background, k + 1: class k
        predicted = mask[None] == np.arange(1, 5)[:, None, None]
        _, truth = make_frame(STREAM_SEED, i, INPUT[1], INPUT[2])
        # Severstal's convention: a class absent from both prediction and truth scores 1
        dice = []
        for p, t in zip(predicted, truth.astype(bool), strict=True):
            total = p.sum() + t.sum()
            dice.append(1.0 if total == 0 else 2.0 * (p & t).sum() / total)
        out.append({"frame": i, "version": version, "dice": float(np.mean(dice))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="experiments/results/redeploy_demo")
    ap.add_argument("--frames", type=int, default=1200)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--v1", default="200:3", help="N:EPOCHS of version 1's training")
    ap.add_argument(
        "--v2", default="400:6", help="N:EPOCHS more of version 2's retraining from version 1"
    )
    ap.add_argument("--v2-seconds", type=float, default=60.0, help="version 2's training budget")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="redeploy-"))
    server_repo, device_dir = work / "server-repo", work / "device" / NAME
    results = work / "results"
    log = Timeline()
    log.say(f"{MODEL} width 0.125 at {INPUT[0]}x{INPUT[1]}x{INPUT[2]}, split at {SPLIT}, q6")
    log.say(f"work folder: {work}")
    from splitnet.bundle import publish_version

    n1, e1 = map(int, args.v1.split(":"))
    ckpt1, r1 = _train(work, "v1", n=n1, epochs=e1, seed=0)
    log(f"version 1 trained ({e1} epochs, {n1} frames)", val_dice=r1.best_metric)
    bundle1 = _export(work, "v1", ckpt1)
    log("version 1 exported")
    publish_version(bundle1, server_repo / NAME, version=1)
    publish_version(bundle1, device_dir, version=1)
    log("version 1 published to the server's repository and the device's folder")

    port = _free_port()
    server = _cli(
        "serve", "--repository", str(server_repo), "--port", str(port), "--metrics-port", "-1",
        "--device", "cpu", "--poll-interval", "0.5", "--version-policy", "latest:2",
    )  # fmt: skip
    _wait(lambda: "serving" in (server.stdout.readline() or "") or server.poll(), 120, "server")
    log("server up, serving version 1", index=asyncio.run(_index(port)))
    shutil.rmtree(results, ignore_errors=True)
    daemon = _cli(
        "device", "--bundle", str(device_dir), "--server", f"127.0.0.1:{port}",
        "--source", "synthetic", "--seed", str(STREAM_SEED), "--fps", str(args.fps),
        "--frames", str(args.frames), "--window", "16",
        "--out", str(results), "--json",
    )  # fmt: skip
    log("daemon started on version 1", frames=args.frames, fps=args.fps)
    try:
        n2, e2 = map(int, args.v2.split(":"))
        ckpt2, r2 = _train(work, "v2", n=n2, epochs=e1 + e2, seed=1, max_seconds=args.v2_seconds,
                           start=ckpt1)  # fmt: skip
        from splitnet.train import last_path

        more = len(r2.history) - e1
        v2_val = r2.history[-1]["mean_dice"]
        log(f"version 2 retrained from version 1 while the stream runs ({more} more epochs, "
            f"{n2} frames)", epochs=more, val_dice=v2_val)  # fmt: skip
        bundle2 = _export(work, "v2", last_path(ckpt2))  # the retrained weights, last epoch
        log("version 2 exported")
        streamed = len(list(results.glob("*.png")))
        if daemon.poll() is not None:
            raise SystemExit("the stream ended before version 2 was ready: raise --frames")
        publish_version(bundle2, server_repo / NAME)
        log("version 2 published to the server's repository (copy to .2.partial, rename)",
            answered_so_far=streamed)  # fmt: skip
        index = _wait(
            lambda: (i := asyncio.run(_index(port))).get("2") == "READY" and i, 60, "the server"
        )
        log("server loaded version 2 (repository poll): requests without a version now go "
            "to 2, version 1 stays for the frames of the old head", index=index)  # fmt: skip
        publish_version(bundle2, device_dir)
        daemon.send_signal(signal.SIGHUP)
        log("version 2 published to the device's folder; daemon sent SIGHUP")
        output, _ = daemon.communicate(timeout=600)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    summary = json.loads(output[output.index("{") :])
    for r in summary["reloads"]:
        t = r["unix_time"] - log.t0
        log.say(f"{t:7.1f} s  daemon moved from version {r['from']} to {r['to']} (error: "
                f"{r['error']}); first frame on it: {r['first_frame']}")  # fmt: skip
        log.events.append({"t_s": round(t, 2), "event": "daemon moved", **r})
    log.events.sort(key=lambda e: e["t_s"])
    log("stream done", ok=summary["ok"], failed=summary["failed"], dropped=summary["dropped"],
        unacknowledged=summary["unacknowledged"], versions=summary["versions"])  # fmt: skip

    scores = _scores(results, args.frames)
    log.say("")
    log.say(f"answers: {summary['ok']} ok, {summary['failed']} failed, {summary['dropped']} "
            f"dropped, {summary['unacknowledged']} unacknowledged of {summary['frames_captured']} "
            f"captured; by version: {summary['versions']}")  # fmt: skip
    first = summary["reloads"][0]["first_frame"] if summary["reloads"] else None
    mismatched = [
        s["frame"]
        for s in scores
        if s["version"] != ("1" if first is None or s["frame"] < first else "2")
    ]
    log.say(f"frames answered by the other version than their head's: {len(mismatched)}")
    for version, val in (("1", r1.best_metric), ("2", v2_val)):
        mine = [s["dice"] for s in scores if s["version"] == version]
        if mine:
            log.say(f"version {version}: {len(mine)} frames, streamed mean Dice "
                    f"{100 * sum(mine) / len(mine):.1f}% (validation at training: {100 * val:.1f}%)")  # fmt: skip
    (out / "timeline.txt").write_text("\n".join(log.lines) + "\n")
    (out / "timeline.json").write_text(
        json.dumps({"events": log.events, "summary": summary, "frames": scores}, indent=1)
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
