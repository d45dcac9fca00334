"""``splitnet export MODEL --input 3xHxW --split POINT --out DIR``: a deployable split bundle."""

from __future__ import annotations

import argparse

from splitnet._errors import ConfigError
from splitnet.cli import _args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a split as a bundle: head OpenVINO IR, tail program, manifest",
        description=__doc__,
    )
    _args.add_model_and_input(p)
    p.add_argument(
        "--split",
        type=_args.split_point,
        help="split point name or index (splitnet points); required",
    )
    whole = p.add_mutually_exclusive_group()
    whole.add_argument(
        "--device-only",
        action="store_true",
        help="the whole model as the head, no tail: splitnet device runs it without a server",
    )
    whole.add_argument(
        "--whole",
        action="store_true",
        help="the image baseline: no head, the device sends the frame as --image-codec, "
        "the server runs the whole model",
    )
    p.add_argument(
        "--image-codec",
        default="png",
        metavar="png|jpeg[:Q]",
        help="with --whole: png (lossless, default) or jpeg:QUALITY (default 95)",
    )
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--weights", help="local state-dict file (default: random weights)")
    p.add_argument("--target", default="cpu", help="export target: cpu or myriad (default cpu)")
    p.add_argument("--codec", default="f16", help="codec of the crossing tensors (default f16)")
    p.add_argument(
        "--codec-opt",
        action="append",
        type=_args.key_value,
        default=[],
        metavar="KEY=VALUE",
        help="codec option, repeatable (e.g. entropy=ans)",
    )
    p.add_argument(
        "--calibrate",
        type=int,
        default=0,
        metavar="N",
        help="fix the codec's ranges on N synthetic frames (quantizing codecs)",
    )
    p.add_argument("--name", help="name a server registers (default MODEL.POINT)")
    p.add_argument("--num-classes", type=int)
    _args.add_model_args(p)
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.02,
        help="largest OpenVINO vs torch error, relative to each tensor's range (default 0.02)",
    )
    p.add_argument(
        "--bottleneck",
        metavar="CKPT",
        help="a splitnet train-bottleneck checkpoint: encoder in the head, learned codec, "
        "decoder in the tail (the teacher's weights come from it)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.add_argument("--json", action="store_true", help="print the manifest")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitnet.export import export_bundle

    if args.calibrate < 0:
        raise ConfigError(f"--calibrate must be >= 0, got {args.calibrate}")
    if args.device_only or args.whole:
        return _run_whole(args)
    if args.split is None:
        raise ConfigError("--split is required (or --device-only / --whole for the baselines)")
    result = export_bundle(
        args.model,
        input_shape=args.input,
        split=args.split,
        out_dir=args.out,
        weights=args.weights,
        target=args.target,
        codec=args.codec,
        codec_options=dict(args.codec_opt),
        calibrate=args.calibrate,
        name=args.name,
        num_classes=args.num_classes,
        model_args=dict(args.model_arg),
        tolerance=args.tolerance,
        overwrite=args.overwrite,
        progress=True,
        bottleneck=args.bottleneck,
    )
    m = result.manifest
    if args.json:
        print(m.to_json(), end="")
        return 0
    print(f"wrote {result.bundle_dir} ({m.name}) in {result.seconds:.1f} s")
    print(f"  split      {m.split['name']} (index {m.split['index']}), target {m.head['target']}")
    for rel in sorted(m.files):
        size = (result.bundle_dir / rel).stat().st_size
        print(f"  {rel:10s} {size / 2**20:8.2f} MiB  sha256 {m.files[rel][:16]}")
    print(
        f"  crossing   {', '.join(t.name + ' ' + 'x'.join(map(str, t.shape)) for t in m.crossing)}"
    )
    print(f"  {result.parity}")
    print(f"  tail batch {m.tail['batch']}; codec {m.codec['name']}")
    return 0


def _run_whole(args: argparse.Namespace) -> int:
    from splitnet.export import export_whole

    mode = "device-only" if args.device_only else "image"
    for flag, given in (
        ("--split", args.split is not None),
        ("--bottleneck", args.bottleneck is not None),
        ("--calibrate", args.calibrate > 0),
        ("--codec-opt", bool(args.codec_opt)),
        ("--codec", args.codec != "f16"),
    ):
        if given:
            raise ConfigError(f"--{mode.replace('image', 'whole')} takes no {flag}")
    result = export_whole(
        args.model,
        input_shape=args.input,
        out_dir=args.out,
        mode=mode,
        image_codec=args.image_codec,
        weights=args.weights,
        target=args.target,
        name=args.name,
        num_classes=args.num_classes,
        model_args=dict(args.model_arg),
        tolerance=args.tolerance,
        overwrite=args.overwrite,
    )
    m = result.manifest
    if args.json:
        print(m.to_json(), end="")
        return 0
    what = "whole model on the device" if mode == "device-only" else f"image as {m.codec['name']}"
    print(f"wrote {result.bundle_dir} ({m.name}: {what}) in {result.seconds:.1f} s")
    for rel in sorted(m.files):
        size = (result.bundle_dir / rel).stat().st_size
        print(f"  {rel:10s} {size / 2**20:8.2f} MiB  sha256 {m.files[rel][:16]}")
    print(f"  {result.parity}")
    return 0
