"""``splitnet bench-head DIR``: FPS and latency percentiles of a bundle's head (no torch)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from splitnet._errors import ConfigError
from splitnet.cli import _args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench-head",
        help="benchmark a bundle's head with the OpenVINO runtime",
        description=__doc__,
    )
    p.add_argument("bundle", help="bundle folder (splitnet export)")
    p.add_argument(
        "--head-device", default="CPU", help="OpenVINO device that runs the head (default CPU)"
    )
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="untimed seconds first (default 1)")
    p.add_argument(
        "--threads",
        "--head-threads",
        dest="threads",
        type=_args.positive_int,
        metavar="N",
        help="inference threads (CPU; INFERENCE_NUM_THREADS, one stream)",
    )
    p.add_argument("--hint", default="latency", help="latency, throughput or cumulative_throughput")
    p.add_argument(
        "--precision",
        default="f32",
        help="compute precision: f32, f16, bf16 or 'default' (the device's own; default f32)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitnet.device import benchmark_head

    if args.seconds <= 0 or args.warmup < 0:
        raise ConfigError("--seconds must be > 0 and --warmup >= 0")
    result = benchmark_head(
        args.bundle,
        seconds=args.seconds,
        warmup=args.warmup,
        device=args.head_device,
        threads=args.threads,
        hint=args.hint,
        precision=None if args.precision == "default" else args.precision,
        progress=True,
    )
    xml = Path(args.bundle) / "head.xml"
    if args.json:
        from splitnet.bundle import read_manifest

        m = read_manifest(args.bundle, verify=False)
        # what the bundle is, so that splitnet plan can match the timing to its split point
        bundle = {
            "model": m.model,
            "input": list(m.input.shape),
            "split": m.split["name"],
            "codec": m.codec["name"],
        }
        doc = {**result.to_dict(), "device": args.head_device, "head_threads": args.threads}
        print(json.dumps({**doc, **bundle}, indent=2))
        return 0
    print(result)
    print(
        f"  latency ms: mean {result.latency_ms_mean:.2f}, min {result.latency_ms_min:.2f}, "
        f"max {result.latency_ms_max:.2f}"
    )
    print(
        f"  OpenVINO's own tool on the same IR: benchmark_app -m {xml} -d {args.head_device} -hint latency"
    )
    return 0
