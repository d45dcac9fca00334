"""``splitnet profile MODEL --input 3xHxW``: compute, memory and bandwidth of every split point."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from splitnet._errors import ConfigError
from splitnet.cli import _args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "profile",
        help="FLOPs, memory and bitrate of each split point, vs. sending the image",
        description=__doc__,
    )
    _args.add_model_and_input(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--kind", type=_args.name_list, help="only points of these kinds, e.g. pool or conv,add"
    )
    which.add_argument(
        "--points",
        metavar="LIST",
        help="point names, indices and inclusive index ranges, e.g. 3,10-20,encoder.block3.pool",
    )
    which.add_argument("--all", action="store_true", help="every split point (the default)")
    p.add_argument(
        "--bits",
        type=_args.int_list,
        default=[32, 16, 8, 4],
        metavar="LIST",
        help="bit widths per crossing element, each in 1..32 (default: 32,16,8,4)",
    )
    p.add_argument(
        "--fps",
        type=_args.float_list,
        default=[10.0, 12.0],
        metavar="LIST",
        help="frame rates for the bitrates (default: 10,12)",
    )
    p.add_argument(
        "--measure-fps",
        action="store_true",
        help="export each point and measure the head's FPS with OpenVINO (as bench-head) "
        "and the tail's latency in torch",
    )
    p.add_argument(
        "--measure-tail",
        choices=("cpu", "cuda"),
        help="time each point's tail and the whole model in torch on this device, without "
        "OpenVINO: run on the server, the --server-profile of splitnet plan",
    )
    p.add_argument(
        "--measure-seconds",
        type=float,
        default=3.0,
        metavar="S",
        help="seconds timed per point and side with --measure-fps (default 3)",
    )
    p.add_argument(
        "--head-threads",
        type=_args.positive_int,
        metavar="N",
        help="with --measure-fps: OpenVINO inference threads for each head (as splitnet device "
        "--head-threads; default: OpenVINO's choice)",
    )
    p.add_argument(
        "--image",
        metavar="FILE",
        help="real image for the PNG baseline (default: frame 0 of the synthetic steel dataset)",
    )
    p.add_argument("--json", metavar="FILE", help="write JSON to FILE; '-' prints only JSON")
    p.add_argument("--csv", metavar="FILE", help="write one CSV row per point to FILE")
    p.add_argument("--plot", metavar="FILE.png", help="write the figure (three panels) to FILE.png")
    p.add_argument("--num-classes", type=int, default=None)
    _args.add_model_args(p)
    p.add_argument(
        "--bottleneck",
        metavar="CKPT",
        help="also report what a train-bottleneck checkpoint's encoder adds to its head's MACs",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitnet.profile import check_bits, check_fps, plot_report, profile_model

    # validate everything cheap before building the model
    bits = check_bits(args.bits)
    fps = check_fps(args.fps)
    if args.measure_seconds <= 0:
        raise ConfigError(f"--measure-seconds must be > 0, got {args.measure_seconds:g}")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise ConfigError(
            f"--plot writes a PNG file; give a name ending in .png, got {args.plot!r}"
        )
    for option in ("json", "csv", "plot"):
        _args.writable_file(getattr(args, option), f"--{option}")
    if args.bottleneck is not None and not Path(args.bottleneck).is_file():
        raise ConfigError(f"bottleneck checkpoint not found: {args.bottleneck}")
    if args.image is not None and not Path(args.image).is_file():
        raise ConfigError(f"--image: no such file: {args.image}")
    json_only = args.json == "-"
    report = profile_model(
        args.model,
        input_shape=args.input,
        kind=args.kind,
        points=args.points,
        bits=bits,
        fps=fps,
        image=args.image,
        num_classes=args.num_classes,
        progress=not json_only,
        measure_fps=args.measure_fps,
        measure_tail=args.measure_tail,
        measure_seconds=args.measure_seconds,
        head_threads=args.head_threads,
        **dict(args.model_arg),
    )
    if args.json and not json_only:
        _write(args.json, report.to_json() + "\n")
    if args.csv:
        _write(args.csv, report.to_csv())
    if args.plot:
        plot_report(report, args.plot)
    extra = _bottleneck_line(args) if args.bottleneck else None
    if json_only:
        doc = json.loads(report.to_json())
        print(json.dumps({**doc, "bottleneck": extra} if extra else doc, indent=2))
    else:
        print(report.format_table())
        if extra:
            print(
                f"bottleneck at {extra['split']}: the encoder adds {extra['encoder_macs'] / 1e6:.2f} "
                f"M MACs to the head's {extra['head_macs'] / 1e6:.2f} M "
                f"({100 * extra['encoder_share']:.1f}%)"
            )
        for label, path in (("JSON", args.json), ("CSV", args.csv), ("plot", args.plot)):
            if path:
                print(f"{label}: {path}", file=sys.stderr)
    return 0


def _bottleneck_line(args: argparse.Namespace) -> dict:
    from splitnet.bottleneck import bottleneck_macs, load_bottleneck

    bn, state = load_bottleneck(args.bottleneck, model=args.model, input_shape=args.input)
    return {"split": state["split"], **bottleneck_macs(bn, args.input)}


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
