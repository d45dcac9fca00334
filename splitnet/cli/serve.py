"""``splitnet serve --repository DIR``: the KServe v2 server (gRPC, and REST with
``--http-port``) that runs the tails."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from splitnet._errors import ConfigError
from splitnet.cli import _args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the tails of a folder of bundles over gRPC (KServe v2)",
        description=__doc__,
    )
    p.add_argument("--config", help="YAML file of these options (the command line wins)")
    p.add_argument(
        "--repository", help="folder of bundles (splitnet export --out DIR/NAME); required"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument(
        "--device", default="auto", help="cuda, cpu or auto (default: cuda when present)"
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "bf16"),
        help="autocast for the tails",
    )
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-delay-ms", type=float, default=5.0)
    p.add_argument(
        "--metrics-port", type=int, default=8002, help="Prometheus port; -1 turns metrics off"
    )
    p.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="also serve KServe v2 REST/HTTP on this port (Triton's is 8000; default: off)",
    )
    p.add_argument("--token-file", help="require 'authorization: Bearer <token in this file>'")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--tls-ca", help="also require client certificates signed by this CA")
    p.add_argument("--max-message-mb", type=int, default=64)
    p.add_argument(
        "--max-inflight-bytes",
        type=int,
        default=None,
        help="budget of bytes held by requests in flight; past it: RESOURCE_EXHAUSTED "
        "(default: 16 of the costliest requests the bundles allow, at least 64 MiB)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        metavar="S",
        help="poll the repository every S seconds: new versions are loaded, old ones "
        "unloaded once their requests are answered (Triton's --model-control-mode=poll)",
    )
    p.add_argument(
        "--version-policy",
        default="latest:1",
        metavar="POLICY",
        help="versions loaded per model: latest:N, all or specific:V,V (default latest:1; "
        "latest:2 keeps the previous tail for devices still on the previous head)",
    )
    p.add_argument(
        "--index",
        metavar="INDEX",
        help="a representative index (splitnet index build): a classification request "
        "carrying a frame hash (splitnet device --attach-hash) gets the nearest reference "
        "of each top-k class in the response parameter 'representatives'",
    )
    p.set_defaults(func=run, parser=p)


def config_from_args(args: argparse.Namespace):
    from splitnet.server import ServerConfig
    from splitnet.server._model_repository import parse_version_policy

    if args.config:
        _args.apply_config_file(args.parser, args, args.config)
    _args.require(args, "repository")
    if args.max_batch < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {args.max_batch}")
    if args.http_port is not None and not 0 <= args.http_port <= 65535:
        raise ConfigError(f"--http-port must be a port number (0-65535), got {args.http_port}")
    if args.max_delay_ms < 0:
        raise ConfigError(f"--max-delay-ms must be >= 0, got {args.max_delay_ms}")
    if args.max_inflight_bytes is not None and args.max_inflight_bytes < 1:
        raise ConfigError(f"--max-inflight-bytes must be >= 1, got {args.max_inflight_bytes}")
    if args.poll_interval is not None and args.poll_interval <= 0:
        raise ConfigError(f"--poll-interval must be > 0 s, got {args.poll_interval}")
    parse_version_policy(args.version_policy)
    return ServerConfig(
        repository=args.repository,
        host=args.host,
        port=args.port,
        device=args.device,
        precision=args.precision,
        max_batch=args.max_batch,
        max_delay_ms=args.max_delay_ms,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        http_port=args.http_port,
        token_file=args.token_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        max_message_mb=args.max_message_mb,
        max_inflight_bytes=args.max_inflight_bytes,
        poll_interval_s=args.poll_interval,
        version_policy=args.version_policy,
        index=args.index,
    )


async def _serve(config) -> None:
    from splitnet.server import InferenceServer

    server = InferenceServer(config)
    await server.start()
    print(
        f"serving {', '.join(server.models)} on {config.host}:{server.port} ({server.device})"
        + (f", REST on :{server.http_port}" if server.http_port else "")
        + (f", metrics on :{server.metrics_port}" if server.metrics_port else ""),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("draining and stopping", flush=True)
    await server.stop()


def run(args: argparse.Namespace) -> int:
    asyncio.run(_serve(config_from_args(args)))
    return 0
