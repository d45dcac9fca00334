"""``splitnet evaluate MODEL --weights FILE --data SPEC``: score a trained model.

Segmentation: Dice per class and mean (an empty prediction on an empty mask
scores 1, Severstal's convention); classification: top-1 and top-5. The data's
``val`` subset is scored unless the spec says ``subset=``; frames are resized to
the checkpoint's input shape unless ``--input`` is given.
"""

from __future__ import annotations

import argparse
import json

from splitnet._errors import ConfigError
from splitnet.cli import _args


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registered model name (must match the checkpoint)")
    p.add_argument("--weights", required=True, help="checkpoint from splitnet train")
    p.add_argument("--data", required=True, help="synthetic[:...], severstal:DIR or folder:DIR")
    p.add_argument(
        "--input", type=_args.input_shape, metavar="CxHxW", help="default: the checkpoint's"
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threshold", type=float, default=0.5, help="sigmoid threshold of masks")


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="score a trained model on a dataset", description=__doc__)
    add_data_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def load(args: argparse.Namespace):
    """``(model, checkpoint, dataset)`` for the evaluate and rate-accuracy commands."""
    from splitnet.data import open_dataset, parse_spec
    from splitnet.train import model_from_checkpoint

    if not 0 < args.threshold < 1:
        raise ConfigError(f"--threshold must be in (0, 1), got {args.threshold}")
    if args.batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {args.batch}")
    spec = parse_spec(args.data)
    model, ckpt = model_from_checkpoint(args.model, args.weights)
    shape = args.input or tuple(ckpt["input_shape"])
    subset = spec.options.get("subset", "val")
    ds = open_dataset(spec, subset=subset, size=tuple(shape[1:]), channels=shape[0])
    if ds.task != ckpt["task"]:
        raise ConfigError(f"{args.weights} is a {ckpt['task']} model; --data is {ds.task} data")
    if ds.num_classes != ckpt["num_classes"]:
        raise ConfigError(
            f"{args.weights} has {ckpt['num_classes']} classes; --data has {ds.num_classes}"
        )
    return model, ckpt, ds


def run(args: argparse.Namespace) -> int:
    from splitnet.train import evaluate

    model, _, ds = load(args)
    scores = evaluate(model, ds, batch=args.batch, threshold=args.threshold, progress=True)
    doc = {"model": args.model, "weights": args.weights, "data": ds.spec, "subset": ds.subset}
    doc.update(scores)
    if args.json:
        print(json.dumps(doc, indent=2))
    elif "mean_dice" in scores:
        names = ds.class_names or [f"class_{i}" for i in range(ds.num_classes)]
        print(f"{ds.subset} subset, {scores['images']} images")
        for name, d in zip(names, scores["dice_per_class"], strict=True):
            print(f"  dice {name:12s} {d:.4f}")
        print(f"  mean dice    {scores['mean_dice']:.4f}")
    else:
        print(f"{ds.subset} subset, {scores['images']} images")
        print(f"  top-1 {scores['top1']:.4f}\n  top-5 {scores['top5']:.4f}")
    return 0
