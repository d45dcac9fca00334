"""``splitnet calibrate BUNDLE --data SPEC``: fit a classifier bundle's temperature.

Runs held-out frames through the bundle as deployed (OpenVINO head, codec, tail),
fits one temperature on the logits (Guo et al., 2017), and stores it in the
manifest with the abstain settings: an answer is ``uncertain`` when its top
probability is under ``--cap`` or its margin to the second class under
``--margin``; requests override both (``min_confidence``, ``min_margin``).
Prints the expected calibration error (15 bins) and NLL before and after.
"""

from __future__ import annotations

import argparse
import json

from splitnet._errors import ConfigError


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit a classifier bundle's temperature and abstain cap on held-out data",
        description=__doc__,
    )
    p.add_argument("bundle", help="a classifier bundle folder (splitnet export --out)")
    p.add_argument("--data", required=True, help="held-out data: parts:..., folder:DIR, ...")
    p.add_argument("--frames", type=int, help="use at most N frames (default: all)")
    p.add_argument("--cap", type=_fraction, help="uncertain under this top probability")
    p.add_argument("--margin", type=_fraction, help="uncertain under this top-2 margin")
    p.add_argument("--top-k", type=int, help="classes answered by default")
    p.add_argument("--plot", metavar="PNG", help="write a reliability diagram")
    p.add_argument("--dry-run", action="store_true", help="measure, do not write the manifest")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitnet.bundle import read_manifest
    from splitnet.data import open_dataset, parse_spec
    from splitnet.train._calibrate import calibrate_bundle, reliability_plot

    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    manifest = read_manifest(args.bundle)
    spec = parse_spec(args.data)
    c, h, w = manifest.input.shape
    ds = open_dataset(spec, subset=spec.options.get("subset", "val"), size=(h, w), channels=c)
    result = calibrate_bundle(
        args.bundle,
        ds,
        frames=args.frames,
        cap=args.cap,
        margin=args.margin,
        top_k=args.top_k,
        write=not args.dry_run,
    )
    conf = result.confidence
    if args.plot:
        reliability_plot(result, args.plot, title=manifest.name)
    if args.json:
        print(json.dumps(conf.to_dict(), indent=2))
        return 0
    r = conf.report
    print(f"{r['frames']} frames of {r['data']}, top-1 {r['top1']:.4f}")
    print(f"  temperature  {conf.temperature:.4f}")
    print(f"  ECE          {r['ece_before']:.4f} -> {r['ece_after']:.4f}")
    print(f"  NLL          {r['nll_before']:.4f} -> {r['nll_after']:.4f}")
    print(f"  uncertain    top < {conf.cap:g} or margin < {conf.margin:g}; top-k {conf.top_k}")
    if not args.dry_run:
        print(f"written to {args.bundle}/manifest.json")
    return 0
