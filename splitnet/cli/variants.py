"""``splitnet variants DIR... --data SPEC``: head variants of one model side by side.

Per bundle (e.g. the folders ``splitnet optimize`` wrote): variant, head file size,
parameters, accuracy on held-out data through the bundle as deployed (top-1/top-5,
or mean Dice), and the head's FPS, mean and p95 latency at each ``--threads`` count
on each ``--devices`` entry; a device that is not present is reported absent.
"""

from __future__ import annotations

import argparse

from splitnet.cli import _args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "variants",
        help="compare head variants: size, accuracy, latency and FPS per device and threads",
        description=__doc__,
    )
    p.add_argument("bundles", nargs="+", metavar="DIR", help="bundle folders of one model")
    p.add_argument("--data", help="held-out data for accuracy (default: no accuracy)")
    p.add_argument("--frames", type=int, default=200, help="held-out frames at most (default 200)")
    p.add_argument(
        "--devices",
        default="CPU,GPU,NPU,MYRIAD",
        help="OpenVINO devices to time on; absent ones are reported absent "
        "(default CPU,GPU,NPU,MYRIAD)",
    )
    p.add_argument(
        "--threads", type=_args.int_list, default=[1, 2], help="thread counts (default 1,2)"
    )
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    p.add_argument("--plot", metavar="PNG", help="accuracy against latency, size as marker")
    p.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from splitnet.profile._variants import plot_variants, report_variants

    for option in ("plot", "markdown"):
        _args.writable_file(getattr(args, option), f"--{option}")
    devices = [d.strip().upper() for d in args.devices.split(",") if d.strip()]
    report = report_variants(
        args.bundles,
        data=args.data,
        frames=args.frames,
        devices=devices,
        threads=args.threads,
        seconds=args.seconds,
    )
    if args.plot:
        plot_variants(report, args.plot)
    if args.markdown:
        Path(args.markdown).write_text(report.table() + "\n", encoding="utf-8")
    if args.json:
        print(report.to_json())
    else:
        print(report.table())
        absent = [d for d, here in report.devices.items() if not here]
        if absent:
            print(f"absent OpenVINO devices: {', '.join(absent)}")
    return 0
