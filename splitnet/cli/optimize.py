"""``splitnet optimize MODEL --input 3xHxW (--split POINT | --device-only) --variants fp32,fp16,
int8-weights,int8 --data SPEC --out DIR``: one bundle per head variant.

Each variant is exported into ``DIR/<variant>/`` and parity-checked against the float
torch head it came from (INT8 with a looser tolerance, recorded in the manifest):
``fp32`` (float weights), ``fp16`` (FP16 weights, the default of every export),
``int8-weights`` (weight-only INT8, ``nncf.compress_weights``), ``int8`` (weights and
activations, ``nncf.quantize`` on ``--frames`` calibration frames of ``--data``, fast
bias correction), ``int8-acc`` (``nncf.quantize_with_accuracy_control``: layers go back
to float until held-out top-1 / mean Dice is within ``--max-drop`` points).

Smaller networks, changed on the torch side and retrained briefly before export (their
heads stored as FP16): ``prune:R`` (the fraction R of the head's filters removed by L1
norm, the tail's layers adapted; Torch-Pruning), ``lowrank:R`` / ``lowrank:energy=E``
(the head's linear and convolution layers factorised by truncated SVD, rank fraction R
or kept energy E), ``distill:W`` (a student at W x the width, trained against the
model). Retraining: ``--finetune-steps`` on ``--finetune-data`` (default ``--data``),
task loss plus distillation from the unchanged model.

Each bundle is named ``NAME-VARIANT`` and foldered ``DIR/VARIANT``, with ``:`` written ``-`` (``prune-0.5``), so one
server serves them side by side; ``splitnet variants DIR/*`` compares them.
"""

from __future__ import annotations

import argparse

from splitnet.cli import _args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "optimize",
        help="export a model's head as fp32 / fp16 / int8 (NNCF) / pruned / low-rank / "
        "distilled bundles",
        description=__doc__,
    )
    _args.add_model_and_input(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--split", type=_args.split_point, help="the split point of the head")
    where.add_argument(
        "--device-only",
        action="store_true",
        help="the whole model as the head (device-only bundles, the seed 000 case)",
    )
    p.add_argument(
        "--variants",
        default="fp32,fp16,int8-weights,int8",
        help="comma-separated head variants (default fp32,fp16,int8-weights,int8)",
    )
    p.add_argument("--data", help="calibration frames for int8: parts:..., folder:DIR, ...")
    p.add_argument(
        "--frames", type=int, default=300, help="calibration frames for int8 (default 300)"
    )
    p.add_argument(
        "--max-drop",
        type=float,
        default=0.5,
        help="int8-acc: largest held-out drop of top-1 / mean Dice, in points (default 0.5)",
    )
    p.add_argument(
        "--validation-data",
        help="int8-acc: held-out labelled frames (default: --data's val subset)",
    )
    p.add_argument(
        "--validation-frames", type=int, default=300, help="int8-acc: frames at most (300)"
    )
    p.add_argument(
        "--finetune-data", help="prune / lowrank / distill: what they retrain on (default --data)"
    )
    p.add_argument(
        "--finetune-steps",
        type=int,
        default=300,
        help="prune / lowrank: retraining steps (default 300; 0: none)",
    )
    p.add_argument(
        "--distill-steps",
        type=int,
        default=2000,
        help="distill: the student's training steps (default 2000)",
    )
    p.add_argument("--finetune-lr", type=float, default=1e-3, help="retraining Adam lr (1e-3)")
    p.add_argument("--finetune-batch", type=int, default=16, help="retraining batch (16)")
    p.add_argument(
        "--kd-weight",
        type=float,
        default=1.0,
        help="retraining: weight of the distance to the unchanged model's output (1.0)",
    )
    p.add_argument("--out", required=True, help="folder of the variant bundles")
    p.add_argument("--weights", help="local state-dict file (default: random weights)")
    p.add_argument("--target", default="cpu", help="export target: cpu or myriad (default cpu)")
    p.add_argument("--codec", default="f16", help="codec of the crossing tensors (default f16)")
    p.add_argument("--name", help="base of the served names (default MODEL.POINT)")
    p.add_argument("--num-classes", type=int)
    _args.add_model_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing bundles")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitnet.export._optimize import optimize

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    kw = {} if args.device_only else {"codec": args.codec}
    results = optimize(
        args.model,
        input_shape=args.input,
        out_dir=args.out,
        variants=variants,
        split=None if args.device_only else args.split,
        data=args.data,
        frames=args.frames,
        validation_data=args.validation_data,
        validation_frames=args.validation_frames,
        max_drop=args.max_drop,
        finetune={
            "steps": args.finetune_steps,
            "lr": args.finetune_lr,
            "batch": args.finetune_batch,
            "kd_weight": args.kd_weight,
        },
        finetune_data=args.finetune_data,
        distill_steps=args.distill_steps,
        name=args.name,
        overwrite=args.overwrite,
        weights=args.weights,
        target=args.target,
        num_classes=args.num_classes,
        model_args=dict(args.model_arg),
        **kw,
    )
    for r in results:
        m = r.manifest
        size = sum((r.bundle_dir / f).stat().st_size for f in (m.head["xml"], m.head["bin"]))
        metric = r.parity.metric
        print(
            f"{m.head['variant']['name']:13s} {r.bundle_dir}  head {size / 2**20:7.2f} MiB  "
            f"parity {metric} {getattr(r.parity, metric):.3g} (<= {r.parity.tolerance:g})  "
            f"({m.name})"
        )
    return 0
