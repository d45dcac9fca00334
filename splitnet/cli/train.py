"""``splitnet train MODEL --data SPEC --epochs N --out FILE``: train a model for splitting.

Segmentation trains with BCE + Dice and Adam, classification with
cross-entropy; the data's ``val`` subset (20% unless ``val=``) validates each
epoch and the best checkpoint (validation mean Dice or top-1) is kept in
``FILE``; ``FILE`` with ``.last`` before its suffix holds the last epoch, from
which ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import sys

from splitnet.cli import _args


def add_model_kwargs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--width", type=float, default=None, help="channel width multiplier (unet-vgg16, fcn*)"
    )


def model_kwargs(args: argparse.Namespace) -> dict:
    return {} if args.width is None else {"width": args.width}


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model on a dataset", description=__doc__)
    p.add_argument("model", help="a registered model name (splitnet models)")
    p.add_argument(
        "--data", required=True, help="synthetic[:n=200,size=HxW], severstal:DIR or folder:DIR"
    )
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--input",
        type=_args.input_shape,
        metavar="CxHxW",
        help="resize samples to this shape (default: the data's own size)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--patience",
        type=int,
        help="stop after N epochs without a better validation score (default: all --epochs)",
    )
    p.add_argument("--min-epochs", type=int, default=0, help="no --patience stop before this epoch")
    p.add_argument("--out", required=True, help="best checkpoint file (.pt)")
    p.add_argument("--resume", action="store_true", help="continue from FILE's .last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_kwargs(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitnet.train import TrainConfig, train

    result = train(
        TrainConfig(
            model=args.model,
            data=args.data,
            out=args.out,
            epochs=args.epochs,
            batch=args.batch,
            lr=args.lr,
            input_shape=args.input,
            model_kwargs=model_kwargs(args),
            seed=args.seed,
            resume=args.resume,
            progress=not args.quiet,
            patience=args.patience,
            min_epochs=args.min_epochs,
        )
    )
    print(
        f"best {result.metric_name} {result.best_metric:.4f} at epoch {result.best_epoch}; "
        f"saved {result.out} ({result.seconds:.0f} s)",
        file=sys.stdout,
    )
    return 0
