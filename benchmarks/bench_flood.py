"""Flood benchmark (issue 13): the server's RSS and its own accounting under hostile clients.

Starts ``splitnet serve`` as a process of its own (so that its RSS is its own),
samples its RSS (/proc/PID/status) all along, and throws at it, in turn:

1. ``--streams`` streams that write ``--stream-frames`` good frames each
   (asking for the probabilities: the biggest answers) and never read;
2. ``--big`` concurrent requests just under the receive limit (junk to decode),
   ``--rounds`` times;
3. ``--big`` concurrent 63 MiB requests (refused on receipt);
4. ``--big`` concurrent 63 MiB requests without the token, on a server with one.

Meanwhile a well-behaved client sends one good frame after another; its answers
(statuses, median latency) are reported per phase. Prints one JSON document.

Usage: python benchmarks/bench_flood.py [--repository DIR] [--max-inflight-mb 64]
    (without --repository, the test suite's two small bundles are exported first)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from splitnet.wire import inference_pb2_grpc as pb_grpc
from splitnet.wire import make_infer_request

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # process helpers
from _processes import export_small_unet, free_port, rss_mb  # noqa: E402

MIB = 1 << 20
UNET = "unet-vgg16.encoder.block3.pool"
OPTIONS = [("grpc.max_send_message_length", 100 * MIB)]


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self.stop.is_set():
            self.samples.append((time.perf_counter() - t0, rss_mb(self.pid)))
            time.sleep(0.1)

    def peak_since(self, t: float) -> float:
        return max((r for s, r in self.samples if s >= t), default=float("nan"))

    def now(self) -> float:
        return self.samples[-1][0] if self.samples else 0.0


def start_server(repository: Path, port: int, inflight: int | None, token: Path | None):
    cmd = [sys.executable, "-m", "splitnet.cli.main", "serve", "--repository", str(repository)]
    cmd += ["--port", str(port), "--metrics-port", "-1", "--device", "cpu"]
    if inflight is not None:
        cmd += ["--max-inflight-bytes", str(inflight)]
    if token is not None:
        cmd += ["--token-file", str(token)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=120)
    finally:
        channel.close()
    return proc


async def good_client(port: int, payload: bytes, stop: asyncio.Event, log: list, metadata) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        while not stop.is_set():
            t = time.perf_counter()
            try:
                await stub.ModelInfer(make_infer_request(UNET, payload), metadata=metadata)
                code = "OK"
            except grpc.aio.AioRpcError as e:
                code = e.code().name
            log.append((code, time.perf_counter() - t))
            await asyncio.sleep(0.02)


async def statuses(coros) -> collections.Counter:
    async def one(c):
        try:
            await c
            return "OK"
        except grpc.aio.AioRpcError as e:
            return e.code().name

    return collections.Counter(await asyncio.gather(*(one(c) for c in coros)))


async def flood(port: int, payload: bytes, args, sampler: Sampler, metadata) -> dict:
    stop, log = asyncio.Event(), []
    good = asyncio.create_task(good_client(port, payload, stop, log, metadata))
    phases = {}

    async def phase(name, body):
        start, mark = sampler.now(), len(log)
        result = await body()
        await asyncio.sleep(1.0)
        answers = log[mark:]
        phases[name] = {
            "result": result,
            "peak_rss_mb": round(sampler.peak_since(start), 1),
            "rss_after_mb": round(sampler.samples[-1][1], 1),
            "good_client": dict(collections.Counter(c for c, _ in answers)),
            "good_client_median_ms": round(1000 * statistics.median(t for _, t in answers), 1)
            if answers
            else None,
        }

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)

        async def never_reading():
            calls = [stub.ModelStreamInfer(metadata=metadata) for _ in range(args.streams)]
            written = [0] * len(calls)

            async def write(i, call):
                for f in range(args.stream_frames):
                    await call.write(
                        make_infer_request(
                            UNET,
                            payload,
                            parameters={"device_id": f"hog{i}", "frame_id": f},
                            outputs=["probabilities"],
                        )
                    )
                    written[i] += 1

            writers = [asyncio.create_task(write(i, c)) for i, c in enumerate(calls)]
            await asyncio.sleep(args.stream_seconds)
            for w in writers:
                w.cancel()
            for c in calls:
                c.cancel()
            return {"frames_written_before_blocked": written}

        def big_requests(size):
            async def body():
                junk = b"\1" * size
                out = collections.Counter()
                for _ in range(args.rounds):
                    out += await statuses(
                        stub.ModelInfer(make_infer_request(UNET, junk), metadata=metadata)
                        for _ in range(args.big)
                    )
                return dict(out)

            return body

        await phase("idle", lambda: asyncio.sleep(1.0))
        await phase("streams_never_reading", never_reading)
        await phase("big_under_limit", big_requests(args.near_limit))
        await phase("big_63mib", big_requests(63 * MIB))
    stop.set()
    await good
    return phases


async def unauthenticated(port: int, args, sampler: Sampler) -> dict:
    start = sampler.now()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        junk = b"\1" * (63 * MIB)
        out = collections.Counter()
        for _ in range(args.rounds):
            out += await statuses(
                stub.ModelInfer(make_infer_request(UNET, junk)) for _ in range(args.big)
            )
    await asyncio.sleep(1.0)
    return {
        "result": dict(out),
        "peak_rss_mb": round(sampler.peak_since(start), 1),
        "rss_after_mb": round(sampler.samples[-1][1], 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repository", type=Path)
    p.add_argument("--max-inflight-mb", type=float, default=None)
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--stream-frames", type=int, default=20_000)
    p.add_argument("--stream-seconds", type=float, default=10.0)
    p.add_argument("--big", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    repository = args.repository
    if repository is None:
        repository = tmp / "repo"
        export_small_unet(repository)
    from splitnet.server import load_repository
    from splitnet.server._core import InferenceCore

    models = load_repository(repository)
    m = models[UNET]
    rng = np.random.default_rng(0)
    tensors = [np.abs(rng.normal(size=t.shape)).astype(np.float32) for t in m.manifest.crossing]
    payload = m.manifest.make_codec().encode(tensors)
    core = InferenceCore(models)
    # (an older server, without admission control: its 64 MiB message limit)
    max_request = getattr(core, "max_request_bytes", 64 * MIB)
    args.near_limit = min(max_request, 48 * MIB) - 4096
    inflight = None if args.max_inflight_mb is None else int(args.max_inflight_mb * MIB)
    admission = getattr(core, "admission", None)
    budget = inflight or (admission.max_bytes if admission else None)
    asyncio.run(core.close())

    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "max_inflight_bytes": budget,
        "max_request_bytes": max_request,
        "payload_bytes": len(payload),
    }
    port = free_port()
    server = start_server(repository, port, inflight, None)
    sampler = Sampler(server.pid)
    sampler.start()
    try:
        time.sleep(1.0)
        report["rss_start_mb"] = round(rss_mb(server.pid), 1)
        report["phases"] = asyncio.run(flood(port, payload, args, sampler, None))
        report["rss_end_mb"] = round(rss_mb(server.pid), 1)
    finally:
        sampler.stop.set()
        server.terminate()
        server.wait(30)

    token = tmp / "token"
    token.write_text("s3cret\n")
    port = free_port()
    server = start_server(repository, port, inflight, token)
    sampler = Sampler(server.pid)
    sampler.start()
    try:
        time.sleep(1.0)
        report["auth_rss_start_mb"] = round(rss_mb(server.pid), 1)
        report["unauthenticated_63mib"] = asyncio.run(unauthenticated(port, args, sampler))
    finally:
        sampler.stop.set()
        server.terminate()
        server.wait(30)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
