"""``splitnet device --bundle DIR --server HOST:PORT``: run the head and stream to a server.

With ``--plan plan.json`` (``splitnet plan --emit-plan``) instead of ``--bundle``, the
daemon runs the plan's bundles and moves to the best one for the link it measures."""

from __future__ import annotations

import argparse
import json
import sys

from splitnet._errors import ConfigError, SplitnetError
from splitnet.cli import _args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "device",
        help="the device daemon: head on OpenVINO, stream to the server",
        description=__doc__,
    )
    p.add_argument("--config", help="YAML file of these options (the command line wins)")
    p.add_argument(
        "--bundle",
        help="the split bundle folder, or a folder of its versions (MODEL/1/, MODEL/2/: the "
        "highest complete one runs; SIGHUP moves to a newer one); required unless --plan",
    )
    p.add_argument(
        "--plan",
        metavar="PLAN.json",
        help="a plan file (splitnet plan --emit-plan): run its bundles, re-planning at run time",
    )
    p.add_argument(
        "--hysteresis",
        type=float,
        default=0.15,
        help="with --plan: move when another candidate is predicted this much better "
        "(default 0.15)",
    )
    p.add_argument(
        "--dwell",
        type=float,
        default=0.5,
        metavar="S",
        help="with --plan: ... for this many seconds (default 0.5)",
    )
    p.add_argument(
        "--probe-interval",
        type=float,
        default=0.25,
        metavar="S",
        help="with --plan: a probe frame with another candidate at most this often (default 0.25)",
    )
    p.add_argument(
        "--server",
        type=_args.server_list,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="required, except for a device-only bundle (splitnet export --device-only); "
        "[IPV6]:PORT and unix:PATH too",
    )
    p.add_argument(
        "--source",
        default="synthetic",
        help="synthetic, an image folder, a video file or a camera index",
    )
    p.add_argument(
        "--fps", type=float, help="pace the source (a paced source drops frames when behind)"
    )
    p.add_argument("--frames", type=int, help="stop after N frames")
    p.add_argument("--seed", type=int, default=0, help="seed of synthetic frames (default 0)")
    p.add_argument(
        "--out", help="write results (mask PNG / classes JSON per frame) and summary.json here"
    )
    p.add_argument("--window", type=int, default=8, help="frames in flight at most (default 8)")
    p.add_argument(
        "--head-device", default="CPU", help="OpenVINO device that runs the head (default CPU)"
    )
    p.add_argument(
        "--head-threads",
        type=_args.positive_int,
        metavar="N",
        help="OpenVINO inference threads for the head (INFERENCE_NUM_THREADS, one stream); "
        "default: OpenVINO's choice. Fewer keep a head from oversubscribing cores it "
        "shares with the server",
    )
    p.add_argument("--token-file")
    p.add_argument("--tls-ca", type=_args.pem_file, help="the server's CA (PEM): connect with TLS")
    p.add_argument(
        "--tls-cert",
        type=_args.pem_file,
        help="client certificate (PEM) for a server that requires mTLS",
    )
    p.add_argument(
        "--tls-key", type=_args.pem_file, help="the client certificate's private key (PEM)"
    )
    p.add_argument(
        "--retry-timeout",
        type=float,
        default=60.0,
        help="give up after this many seconds without a server",
    )
    p.add_argument(
        "--stop-grace",
        type=float,
        default=5.0,
        metavar="S",
        help="on SIGTERM/SIGINT: capture no more, wait up to S seconds for the answers in "
        "flight; the rest stay in the spool under --out (default 5). Exit 0 on SIGTERM "
        "(a clean stop for systemd), 130 on SIGINT",
    )
    p.add_argument("--probabilities", action="store_true", help="also fetch class probabilities")
    p.add_argument(
        "--emulate-link",
        metavar="BANDWIDTH[,DELAY]",
        help="for experiments: limit the uplink to BANDWIDTH with a one-way DELAY each way, "
        "e.g. 20Mbit/s,15ms (a token bucket in the daemon)",
    )
    p.add_argument(
        "--attach-hash",
        nargs="?",
        const="phash",
        default=None,
        metavar="METHOD",
        help="send each frame's perceptual hash (ahash, phash, dhash, whash, colorhash; "
        "default phash) for the server's representative search (serve --index)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from splitnet.device import DaemonConfig, parse_link, run_daemon

    if args.config:
        _args.apply_config_file(args.parser, args, args.config)
    if args.plan is None:
        _args.require(args, "bundle")
        if not args.server and not _device_only(args.bundle):
            _args.require(args, "server")
    else:
        _args.require(args, "server")
        if args.bundle is not None:
            raise ConfigError("give --bundle DIR or --plan PLAN.json, not both")
    if args.attach_hash is not None:
        from splitnet.index import HASH_METHODS

        if args.attach_hash not in HASH_METHODS:
            raise ConfigError(
                f"--attach-hash {args.attach_hash!r}: valid methods: {', '.join(HASH_METHODS)}"
            )
    if args.frames is not None and args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}")
    if args.head_threads is not None and (
        isinstance(args.head_threads, bool)
        or not isinstance(args.head_threads, int)
        or args.head_threads < 1
    ):  # from a --config file (YAML integers skip the type check)
        raise ConfigError(f"--head-threads must be a positive integer, got {args.head_threads!r}")
    if args.window < 1:
        raise ConfigError(f"--window must be >= 1, got {args.window}")
    if args.fps is not None and args.fps <= 0:
        raise ConfigError(f"--fps must be > 0, got {args.fps:g}")
    if args.stop_grace < 0:
        raise ConfigError(f"--stop-grace must be >= 0 s, got {args.stop_grace:g}")
    if args.retry_timeout <= 0:
        raise ConfigError(f"--retry-timeout must be > 0 s, got {args.retry_timeout:g}")
    from splitnet.wire._net import check_tls_files, grpc_target, parse_addresses

    if args.server:
        grpc_target(parse_addresses(args.server))  # from a --config file too; mixed families
    check_tls_files(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca)
    config = DaemonConfig(
        bundle=args.bundle,
        servers=tuple(args.server or ()),
        source=args.source,
        fps=args.fps,
        frames=args.frames,
        out=args.out,
        window=args.window,
        device=args.head_device,
        head_threads=args.head_threads,
        token_file=args.token_file,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        retry_timeout_s=args.retry_timeout,
        stop_grace_s=args.stop_grace,
        probabilities=args.probabilities,
        seed=args.seed,
        emulate_link=parse_link(args.emulate_link) if args.emulate_link else None,
        plan=args.plan,
        hysteresis=args.hysteresis,
        dwell_s=args.dwell,
        probe_interval_s=args.probe_interval,
        attach_hash=args.attach_hash,
    )
    summary = run_daemon(config)
    print(json.dumps(asdict(summary), indent=2) if args.json else summary.format())
    if summary.fatal:
        raise SplitnetError(summary.fatal)
    if summary.stopped_by:
        kept = f"; {summary.unacknowledged} unanswered kept in the spool" if args.out else ""
        print(
            f"splitnet device: stopped by {summary.stopped_by}{kept}", file=sys.stderr, flush=True
        )
        return 130 if summary.stopped_by == "SIGINT" else 0
    return 0


def _device_only(bundle: str) -> bool:
    from splitnet.bundle import read_manifest
    from splitnet.device._daemon import current_bundle

    return read_manifest(current_bundle(bundle)[0], verify=False).mode == "device-only"
