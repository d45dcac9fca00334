"""The REST endpoint against gRPC: one request at a time, the same server, the same frame.

Latency of unary inference (loopback, this machine) by gRPC ``ModelInfer``, by REST
with the binary tensor extension (the mask answered as JSON numbers, or as bytes too),
and by REST with the payload as JSON numbers, on a
unet-vgg16 tail split at encoder.block3.pool (width 0.25, q4 codec). The client runs
in the server's process and loop (it shares the CPUs): the figures compare the
protocols' overhead, not absolute latency.

Usage: python benchmarks/bench_rest.py [--input 3x64x384] [--requests 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
from tqdm import tqdm

from splitnet.server import InferenceServer, ServerConfig, load_repository
from splitnet.server._http import HEADER_LENGTH
from splitnet.wire import inference_pb2_grpc as pb_grpc
from splitnet.wire import make_infer_request


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in seconds)
    return statistics.median(ms), ms[min(len(ms) - 1, int(0.95 * len(ms)))]


async def measure(repository: Path, requests: int) -> dict[str, tuple[float, float, int]]:
    models = load_repository(repository, device="cpu")
    name, model = next(iter(models.items()))
    rng = np.random.default_rng(0)
    tensors = [np.abs(rng.normal(size=t.shape)).astype(np.float32) for t in model.manifest.crossing]
    payload = model.manifest.make_codec().encode(tensors)
    config = ServerConfig(
        repository=repository, port=0, http_port=0, metrics_port=None, device="cpu"
    )
    server = InferenceServer(config, models=models)
    await server.start()
    spec = {"name": "payload", "datatype": "UINT8", "shape": [len(payload)]}
    header = json.dumps({"inputs": [spec | {"parameters": {"binary_data_size": len(payload)}}]})
    binary = header.encode() + payload
    header_out = json.dumps(
        {
            "inputs": [spec | {"parameters": {"binary_data_size": len(payload)}}],
            "parameters": {"binary_data_output": True},
        }
    )
    binary_out = header_out.encode() + payload
    as_json = json.dumps({"inputs": [spec | {"data": list(payload)}]}).encode()
    url = f"http://127.0.0.1:{server.http_port}/v2/models/{name}/infer"
    results = {}
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
            httpx.AsyncClient() as client,
        ):
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            request = make_infer_request(name, payload)

            async def grpc_call():
                await stub.ModelInfer(request)

            async def rest_binary():
                r = await client.post(
                    url, content=binary, headers={HEADER_LENGTH: str(len(header))}
                )
                r.raise_for_status()

            async def rest_binary_out():
                r = await client.post(
                    url, content=binary_out, headers={HEADER_LENGTH: str(len(header_out))}
                )
                r.raise_for_status()

            async def rest_json():
                r = await client.post(url, content=as_json)
                r.raise_for_status()

            cases = [
                ("gRPC ModelInfer", grpc_call, request.ByteSize()),
                ("REST, binary input, JSON output", rest_binary, len(binary)),
                ("REST, binary input and output", rest_binary_out, len(binary_out)),
                ("REST, JSON data", rest_json, len(as_json)),
            ]
            for _, call, _ in cases:
                for _ in range(3):  # warm-up: connections, the tail's first runs
                    await call()
            # interleaved, so that the machine's drifting load falls on every case alike
            times = {label: [] for label, _, _ in cases}
            for _ in tqdm(range(requests), desc="requests per case"):
                for label, call, _ in cases:
                    start = time.perf_counter()
                    await call()
                    times[label].append(time.perf_counter() - start)
            for label, _, size in cases:
                results[label] = (*_percentiles(times[label]), size)
    finally:
        await server.stop(0)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", default="3x64x384")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--bundle", type=Path, help="a repository folder instead of a fresh export")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repository = args.bundle
        if repository is None:
            from splitnet.cli._args import input_shape
            from splitnet.export import export_bundle

            repository = Path(tmp)
            export_bundle(
                "unet-vgg16",
                input_shape=input_shape(args.input),
                split="encoder.block3.pool",
                out_dir=repository / "unet",
                codec="q4",
                model_args={"width": 0.25},
                parity_frames=1,
            )
        results = asyncio.run(measure(repository, args.requests))
    print(
        f"| unary, one at a time, {args.requests} requests, input {args.input} | request bytes | p50 ms | p95 ms |"
    )
    print("|---|---|---|---|")
    for label, (p50, p95, size) in results.items():
        print(f"| {label} | {size:,} | {p50:.1f} | {p95:.1f} |")
    print(f"\nmachine: {platform.machine()}, {platform.python_version()}")


if __name__ == "__main__":
    main()
