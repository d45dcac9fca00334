"""Streaming benchmarks of the server (loopback, this machine).

1. Throughput of ModelStreamInfer with 1 MiB codec payloads through the whole
   server path (parse, decode, check, batch, a no-op tail, respond), as a ratio
   to a bare grpc.aio bidirectional stream echoing 1 MiB byte messages.
2. Server throughput with 1 against 8 concurrent device streams on a real tail
   (unet-vgg16 split at encoder.block3.pool): the dynamic-batching gain.

Usage: python benchmarks/bench_stream.py [--messages 400] [--input 3x128x800] [--frames 24]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from splitnet import codec
from splitnet.server import InferenceCore, InferenceServer, ServerConfig, TailModel
from splitnet.server._servicer import InferenceServicer
from splitnet.wire import encode_infer_request, stream_infer_method
from splitnet.wire import inference_pb2_grpc as pb_grpc

MIB = 1 << 20
OPTIONS = [
    ("grpc.max_send_message_length", 64 * MIB),
    ("grpc.max_receive_message_length", 64 * MIB),
]


async def _pump(call, requests, window: int) -> float:
    """Writes ``requests`` keeping ``window`` unanswered, reads every answer; returns seconds."""
    slots = asyncio.Semaphore(window)

    async def write():
        for r in requests:
            await slots.acquire()
            await call.write(r)
        await call.done_writing()

    start = time.perf_counter()
    writer = asyncio.create_task(write())
    n = 0
    async for _ in call:
        n += 1
        slots.release()
    await writer
    assert n == len(requests), (n, len(requests))
    return time.perf_counter() - start


async def bare_echo(messages: int, window: int, *, ack: bool = False) -> float:
    """A bare grpc.aio bytes stream answering each 1 MiB message with itself
    (``ack``: with 8 bytes, as a split-inference result is small)."""

    async def echo(request_iterator, context):
        async for m in request_iterator:
            yield m[:8] if ack else m

    server = grpc.aio.server(options=OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Stream": grpc.stream_stream_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS) as ch:
            stream = ch.stream_stream("/bench.Echo/Stream")
            rng = np.random.default_rng(0)
            payloads = [rng.bytes(MIB) for _ in range(messages)]  # distinct, as frames are
            seconds = await _pump(stream(), payloads, window)
    finally:
        await server.stop(0)
    return messages * MIB / seconds / 1e6


class _NullModel:
    """A served model whose tail does nothing: measures the server path alone."""

    name, task, max_batch = "null", "classification", 8

    def __init__(self, n_elements: int) -> None:
        self.shape = (1, n_elements)

    def output_metadata(self):
        return [("classes", "INT64", [-1]), ("probabilities", "FP32", [-1])]

    def check(self, tensors):
        assert len(tensors) == 1 and tensors[0].shape == self.shape
        return list(tensors)

    def run_batch(self, frames):
        return [
            {"classes": np.zeros(1, np.int64), "probabilities": np.ones(1, np.float32)}
            for _ in frames
        ]


async def splitnet_stream(messages: int, window: int) -> float:
    n = MIB // 4 - 64  # a 1 MiB f32 payload (header included)
    payload = codec.get_codec("f32", entropy="none").encode(
        [np.random.default_rng(0).random((1, n), np.float32)]
    )
    core = InferenceCore({"null": _NullModel(n)}, max_batch=8, max_delay_ms=0.5)
    server = grpc.aio.server(options=OPTIONS)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(core), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS) as ch:
            # serialized as the device daemon does it (splitnet.wire.encode_infer_request)
            requests = [
                encode_infer_request("null", payload, parameters={"frame_id": i})
                for i in range(messages)
            ]
            seconds = await _pump(stream_infer_method(ch)(), requests, window)
    finally:
        await server.stop(0)
        await core.close()
    return messages * len(payload) / seconds / 1e6


async def batching_gain(bundle: Path, frames: int, streams: int) -> tuple[float, float]:
    model = TailModel(bundle)
    rng = np.random.default_rng(0)
    payloads = [
        model.manifest.make_codec().encode(
            [
                np.maximum(rng.normal(size=t.shape), 0).astype(np.float32)
                for t in model.manifest.crossing
            ]
        )
        for _ in range(4)
    ]
    server = InferenceServer(
        ServerConfig(repository=bundle, port=0, metrics_port=None, max_batch=8),
        models={model.name: model},
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=OPTIONS) as ch:
            stream = stream_infer_method(ch)
            # warm-up
            await _pump(stream(), [encode_infer_request(model.name, payloads[0])], 1)
            per_stream = frames // streams
            start = time.perf_counter()
            await asyncio.gather(
                *(
                    _pump(
                        stream(),
                        [
                            encode_infer_request(model.name, payloads[i % 4])
                            for i in range(per_stream)
                        ],
                        1,  # each device waits for its answer: throughput comes from concurrency
                    )
                    for _ in range(streams)
                )
            )
            seconds = time.perf_counter() - start
        total, count = server.metrics.totals(server.metrics.batch_size, model.name)
        mean_batch = total / max(count, 1)
    finally:
        await server.stop(0)
    return per_stream * streams / seconds, mean_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--input", default="3x128x800")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--bundle", type=Path, help="use this bundle for the batching benchmark")
    args = parser.parse_args()

    # alternate the two, several times: loopback throughput on a small machine is noisy
    echoes, acks, ours_runs = [], [], []
    for _ in range(args.repeats):
        echoes.append(asyncio.run(bare_echo(args.messages, args.window)))
        acks.append(asyncio.run(bare_echo(args.messages, args.window, ack=True)))
        ours_runs.append(asyncio.run(splitnet_stream(args.messages, args.window)))
    echo, ack, ours = (statistics.median(v) for v in (echoes, acks, ours_runs))
    print(
        f"| stream, 1 MiB messages, window {args.window}, median of {args.repeats} | MB/s | runs |"
    )
    print("|---|---|---|")
    print(f"| bare grpc.aio bytes echo | {echo:.0f} | {', '.join(f'{v:.0f}' for v in echoes)} |")
    print(
        f"| bare grpc.aio bytes, 8-byte answers | {ack:.0f} | {', '.join(f'{v:.0f}' for v in acks)} |"
    )
    print(
        f"| splitnet ModelStreamInfer (decode + batch + no-op tail) | {ours:.0f} "
        f"| {', '.join(f'{v:.0f}' for v in ours_runs)} |"
    )
    print(f"| splitnet / echo | **{ours / echo:.2f}** | |")
    print(f"| splitnet / 8-byte answers | **{ours / ack:.2f}** | |\n")

    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle
        if bundle is None:
            from splitnet.cli._args import input_shape
            from splitnet.export import export_bundle

            bundle = Path(tmp) / "unet"
            export_bundle(
                "unet-vgg16",
                input_shape=input_shape(args.input),
                split="encoder.block3.pool",
                out_dir=bundle,
                codec="q4",
                parity_frames=1,
            )
        one, b1 = asyncio.run(batching_gain(bundle, args.frames, 1))
        eight, b8 = asyncio.run(batching_gain(bundle, args.frames, 8))
    print(
        f"| unet-vgg16 tail at encoder.block3.pool, input {args.input}, {args.frames} frames | frames/s | mean batch |"
    )
    print("|---|---|---|")
    print(f"| 1 device stream | {one:.2f} | {b1:.1f} |")
    print(f"| 8 device streams | {eight:.2f} | {b8:.1f} |")
    print(f"| batching gain | **{eight / one:.2f}x** | |")
    print(f"\nmachine: {platform.machine()}, {platform.python_version()}")


if __name__ == "__main__":
    main()
