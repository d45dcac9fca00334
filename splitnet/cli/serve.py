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
    p.add_argument("--host", type=_args.host, default="127.0.0.1")
    p.add_argument("--port", type=_args.port, default=8001, help="0-65535 (0: a free port)")
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
        "--decode-threads",
        type=int,
        default=2,
        metavar="N",
        help="threads decoding payloads (default 2)",
    )
    p.add_argument(
        "--tail-threads",
        type=int,
        default=None,
        metavar="N",
        help="torch intra-op threads of the tails (default: on the CPU half the cores, "
        "at least 1, leaving the rest to decoding and gRPC; on a GPU torch's default)",
    )
    p.add_argument(
        "--tail-instances",
        type=int,
        default=None,
        metavar="N",
        help="batches of one model run at once, each in its own thread with "
        "--tail-threads threads (Triton's instance count; default: 2 on a CPU of 2 cores "
        "or more, 1 on a GPU)",
    )
    p.add_argument(
        "--metrics-port",
        type=_args.port_or_off,
        default=8002,
        help="Prometheus port; -1 turns metrics off",
    )
    p.add_argument(
        "--http-port",
        type=_args.port,
        default=None,
        help="also serve KServe v2 REST/HTTP on this port (Triton's is 8000; default: off)",
    )
    p.add_argument("--token-file", help="require 'authorization: Bearer <token in this file>'")
    p.add_argument("--tls-cert", type=_args.pem_file, help="the server's certificate (PEM)")
    p.add_argument("--tls-key", type=_args.pem_file, help="its private key (PEM)")
    p.add_argument(
        "--tls-ca", type=_args.pem_file, help="also require client certificates signed by this CA"
    )
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
    from splitnet.wire._net import check_tls_files, parse_port

    if args.config:
        _args.apply_config_file(args.parser, args, args.config)
    _args.require(args, "repository")
    if args.max_batch < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {args.max_batch}")
    # a --config file's values come as they are written: checked here like the flags
    parse_port(args.port, option="--port")
    if args.http_port is not None:
        parse_port(args.http_port, option="--http-port")
    if args.metrics_port != -1:
        parse_port(args.metrics_port, option="--metrics-port")
    if args.max_message_mb < 1:
        raise ConfigError(f"--max-message-mb must be >= 1, got {args.max_message_mb}")
    if args.tls_ca is not None and args.tls_cert is None:
        raise ConfigError("--tls-ca needs --tls-cert and --tls-key")
    check_tls_files(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca)
    if args.max_delay_ms < 0:
        raise ConfigError(f"--max-delay-ms must be >= 0, got {args.max_delay_ms}")
    if args.max_inflight_bytes is not None and args.max_inflight_bytes < 1:
        raise ConfigError(f"--max-inflight-bytes must be >= 1, got {args.max_inflight_bytes}")
    # --poll-interval, --decode-threads, --tail-threads, --tail-instances: InferenceServer
    # checks them, with the same one-line messages, before it loads anything
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
        decode_threads=args.decode_threads,
        tail_threads=args.tail_threads,
        tail_instances=args.tail_instances,
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
    stopped_by: list[str] = []
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        stopped_by.append(sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal, sig)
    await stop.wait()
    print(f"{stopped_by[0] if stopped_by else 'stop'}: draining and stopping", flush=True)
    await server.stop()
    print("stopped", flush=True)
    return stopped_by[0] if stopped_by else None


def run(args: argparse.Namespace) -> int:
    """Exit 0 after SIGTERM (a clean stop for systemd), 130 after SIGINT (Ctrl-C), as
    ``splitnet device`` does; both drain the calls in flight first."""
    stopped_by = asyncio.run(_serve(config_from_args(args)))
    return 130 if stopped_by == "SIGINT" else 0
