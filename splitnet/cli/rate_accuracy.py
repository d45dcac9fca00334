"""``splitnet rate-accuracy MODEL --weights FILE --data SPEC --codecs q8,q4,q2``.

For each split point x codec, the crossing tensors of each frame go through
the real codec (encode -> bytes -> decode) before the tail runs; the metric,
its drop against the uncompressed model, the measured bits per element and kB
per frame are reported, with the input image sent as PNG and JPEG as
baselines. Writes ``results.json``, ``table.md`` and ``rate_accuracy.png``
into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses

from splitnet._errors import ConfigError
from splitnet.cli import _args
from splitnet.cli.evaluate import add_data_args, load


def add_parser(sub) -> None:
    p = sub.add_parser(
        "rate-accuracy",
        help="metric vs bitrate per split point and codec, against sending the image",
        description=__doc__,
    )
    add_data_args(p)
    p.add_argument(
        "--points",
        type=_args.name_list,
        help="split point names, indices, ranges a-b or kinds (default: every pool point)",
    )
    p.add_argument("--codecs", type=_args.name_list, default=["q8", "q6", "q4", "q3", "q2"])
    p.add_argument("--entropy", choices=("none", "zstd", "ans"), help="codec entropy stage")
    p.add_argument("--granularity", choices=("channel", "tensor"), help="quantization ranges")
    p.add_argument("--range", choices=("minmax", "percentile", "mse"), help="range method")
    p.add_argument("--percentile", type=float, help="for --range percentile")
    p.add_argument("--level", type=int, help="zstd level")
    p.add_argument(
        "--calibrate",
        type=int,
        default=0,
        metavar="N",
        help="fix codec ranges from N training frames (default: per-frame ranges)",
    )
    p.add_argument(
        "--jpeg", type=_args.int_list, default=[95, 75, 50, 25], help="JPEG baseline qualities"
    )
    p.add_argument("--no-png", action="store_true", help="skip the PNG baseline")
    p.add_argument(
        "--bottleneck",
        type=_args.name_list,
        default=[],
        metavar="CKPT[,CKPT...]",
        help="splitnet train-bottleneck checkpoints: one row each at its split point",
    )
    p.add_argument("--max-drop", type=float, default=0.5, help="target: metric drop in points")
    p.add_argument("--max-bits", type=float, default=2.0, help="target: bits per element")
    p.add_argument("--out", default="rate_accuracy", help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitnet.data import open_dataset, parse_spec
    from splitnet.profile import RateAccuracyConfig, rate_accuracy

    model, _, ds = load(args)
    options = {
        k: getattr(args, k)
        for k in ("entropy", "granularity", "range", "percentile", "level")
        if getattr(args, k) is not None
    }
    if not args.codecs:
        raise ConfigError("--codecs needs at least one codec, e.g. q8,q4,q2")
    if any(not 1 <= q <= 100 for q in args.jpeg):
        raise ConfigError(f"--jpeg qualities must be 1..100, got {args.jpeg}")
    if args.calibrate < 0:
        raise ConfigError(f"--calibrate must be >= 0, got {args.calibrate}")
    config = RateAccuracyConfig(
        points=tuple(args.points) if args.points else None,
        bottlenecks=tuple(args.bottleneck),
        codecs=tuple(args.codecs),
        codec_options=options,
        calibrate=args.calibrate,
        png=not args.no_png,
        jpeg_qualities=tuple(args.jpeg),
        batch=args.batch,
        threshold=args.threshold,
        progress=not args.quiet,
    )
    cal = None
    if args.calibrate:
        c = ds[0][0].shape[0]
        cal = open_dataset(parse_spec(args.data), subset="train", size=ds.size, channels=c)
    report = rate_accuracy(model, ds, config, calibration_data=cal)
    provenance = {"weights": args.weights, "data": ds.spec, "subset": ds.subset}
    report = dataclasses.replace(report, provenance=provenance)
    target = {"max_drop_points": args.max_drop, "max_bits": args.max_bits}
    paths = report.write(args.out, **target)
    print(report.format_table(**target))
    print(f"wrote {paths['json']}, {paths['table']}, {paths['plot']}")
    return 0
