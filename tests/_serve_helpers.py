"""Shared pieces of the server and daemon tests: model names, payloads, a server for a test.

The ``repository`` and ``models`` fixtures (two small bundles, exported once per
session) live in ``conftest.py``.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from splitnet.server import InferenceServer, ServerConfig

UNET = "unet-vgg16.encoder.block3.pool"
RESNET = "resnet18.layer2.0.add"


def server_config(repository, **kw) -> ServerConfig:
    """A config on a free port, metrics off unless asked for."""
    return ServerConfig(
        repository=repository,
        port=kw.pop("port", 0),
        metrics_port=kw.pop("metrics_port", None),
        **kw,
    )


def make_payload(models, name: str, seed: int = 0) -> bytes:
    """A payload of random non-negative crossing tensors for the model ``name``."""
    rng = np.random.default_rng(seed)
    m = models[name]
    tensors = [np.abs(rng.normal(size=t.shape)).astype(np.float32) for t in m.manifest.crossing]
    return m.manifest.make_codec().encode(tensors)


def run_with_server(repository, models, body, **config):
    """Starts a server, runs ``await body(server, port)``, stops the server."""

    async def main():
        server = InferenceServer(server_config(repository, **config), models=models)
        await server.start()
        try:
            return await body(server, server.port)
        finally:
            await server.stop(0)

    return asyncio.run(main())


async def run_script(script: str, *args: str, timeout: float = 120) -> tuple[int, str]:
    """``python -c script args...`` in its own process (the stock tritonclient registers
    protobuf files of the names ours use): its exit code and output."""
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode()


def rpc_status(coro_factory):
    """An async function that awaits ``coro_factory()`` and returns the gRPC status code."""

    async def run():
        try:
            await coro_factory()
        except grpc.aio.AioRpcError as e:
            return e.code()
        return grpc.StatusCode.OK

    return run


async def until_candidate(daemon, run, name: str, timeout_s: float = 90.0) -> str:
    """Waits (a hang guard, not a speed check) for an adaptive daemon to run ``name``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while daemon.current != name and not run.done() and loop.time() < end:
        await asyncio.sleep(0.05)
    return daemon.current
