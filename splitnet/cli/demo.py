"""``splitnet demo``: a device daemon and a server on this machine, end to end.

Exports ``unet-vgg16`` split at its third max-pool (q4 codec) into a cache
folder (once), starts the server on a free loopback port, streams synthetic
steel frames through the head (OpenVINO), the codec and gRPC to the tail, and
prints the daemon's summary beside the rates of each stage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from splitnet._errors import ConfigError, SplitnetError
from splitnet.cli import _args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="run a device daemon and a server locally, end to end", description=__doc__
    )
    p.add_argument("--model", default="unet-vgg16")
    p.add_argument("--split", default="encoder.block3.pool")
    p.add_argument("--input", type=_args.input_shape, default=(3, 256, 1600), metavar="CxHxW")
    p.add_argument("--codec", default="q4")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--out", help="also write each frame's mask here")
    p.add_argument(
        "--workdir",
        default=os.environ.get("SPLITNET_CACHE", str(Path.home() / ".cache" / "splitnet")),
        help="where the demo bundle is kept (default ~/.cache/splitnet)",
    )
    p.set_defaults(func=run)


def _bundle(args: argparse.Namespace) -> Path:
    from splitnet.bundle import BundleError, read_manifest
    from splitnet.codec import get_codec
    from splitnet.export import export_bundle

    shape = "x".join(map(str, args.input))
    path = Path(args.workdir) / "demo" / f"{args.model}.{args.split}.{shape}.{args.codec}"
    try:
        read_manifest(path)
        print(f"bundle: {path} (cached)")
        return path
    except BundleError:
        pass
    print(
        f"exporting {args.model} split at {args.split}, input {shape}, codec {args.codec} -> {path}"
    )
    export_bundle(
        args.model,
        input_shape=args.input,
        split=args.split,
        out_dir=path,
        codec=args.codec,
        calibrate=4 if get_codec(args.codec).quantizes else 0,
        overwrite=True,
        progress=True,
    )
    return path


async def _run(bundle: Path, args: argparse.Namespace):
    from splitnet.device import DaemonConfig, DeviceDaemon
    from splitnet.server import InferenceServer, ServerConfig

    # a bundle folder is a repository of one
    server = InferenceServer(
        ServerConfig(repository=bundle, port=0, metrics_port=None, max_batch=args.max_batch)
    )
    await server.start()
    print(
        f"server: 127.0.0.1:{server.port} on {server.device}; streaming {args.frames} synthetic frames"
    )
    try:
        daemon = DeviceDaemon(
            DaemonConfig(
                bundle=bundle,
                servers=(f"127.0.0.1:{server.port}",),
                frames=args.frames,
                window=args.window,
                out=args.out,
            )
        )
        summary = await daemon.run()
    finally:
        await server.stop(1)
    compute_s, frames = server.metrics.totals(server.metrics.compute_seconds, daemon.manifest.name)
    return summary, compute_s, frames


def run(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}")
    bundle = _bundle(args)
    summary, compute_s, frames_run = asyncio.run(_run(bundle, args))
    print()
    print(summary.format())
    if summary.fatal:
        raise SplitnetError(summary.fatal)
    head_fps = 1000 / summary.head_ms_mean if summary.head_ms_mean else float("nan")
    tail_fps = frames_run / compute_s if compute_s else float("nan")
    print(
        f"stages: head {head_fps:.2f} FPS (OpenVINO, this CPU), tail {tail_fps:.2f} FPS "
        f"(torch, batched), link: loopback; end to end {summary.fps:.2f} FPS"
    )
    return 0
