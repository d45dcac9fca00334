"""``splitnet train-bottleneck TEACHER --split POINT --beta B[,B...] --out DIR``.

Puts a learned bottleneck (encoder on the device, factorized-prior entropy
model, decoder on the server) at a split point of a model trained with
``splitnet train``: stage 1 distils the teacher's crossing tensors under a
rate penalty ``beta``, stage 2 fine-tunes the decoder and the tail on the task.
Several betas train one bottleneck each (``DIR/beta-B.pt``); ``--resume``
continues each from its ``.last`` checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from splitnet._errors import ConfigError
from splitnet.cli import _args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train-bottleneck",
        help="train a learned bottleneck at a split point of a trained model",
        description=__doc__,
    )
    p.add_argument("teacher", help="checkpoint from splitnet train")
    p.add_argument("--split", required=True, help="split point name (splitnet points)")
    p.add_argument(
        "--beta", type=_args.float_list, required=True, help="rate weight(s), e.g. 0.01,0.03"
    )
    p.add_argument("--out", required=True, help="folder for the checkpoints (beta-B.pt)")
    p.add_argument("--data", help="--data spec (default: the teacher's)")
    p.add_argument("--latent-channels", type=int, default=8)
    p.add_argument(
        "--latent-stride",
        type=int,
        help="latent downsampling vs the input (default: coarsest crossing stride, >= 8)",
    )
    p.add_argument("--hidden", type=int, default=32, help="inner width of the encoder")
    p.add_argument(
        "--decoder-hidden", type=int, help="inner width of the decoder (default: --hidden)"
    )
    p.add_argument(
        "--encoder",
        choices=("pyramid", "patch"),  # splitnet.bottleneck.ENCODERS (kept torch-free here)
        default="pyramid",
        help="the encoder's design: strided steps down from the finest tensor (pyramid) "
        "or one patchifying convolution per tensor",
    )
    p.add_argument(
        "--decoder",
        choices=("pyramid", "branches"),  # splitnet.bottleneck.DECODERS (kept torch-free here)
        default="pyramid",
        help="the decoder's design: one upsampling trunk (pyramid) or a branch per tensor",
    )
    p.add_argument(
        "--kd-weight",
        type=float,
        default=1.0,
        help="weight of the teacher's output in the stage-1 distillation (0: tensors only)",
    )
    p.add_argument("--epochs", type=int, default=8, help="stage-1 (distillation) epochs")
    p.add_argument("--finetune-epochs", type=int, default=4, help="stage-2 (task) epochs")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitnet.bottleneck import BottleneckConfig, BottleneckTrainConfig, train_bottleneck

    if not args.beta or any(not b > 0 for b in args.beta):
        raise ConfigError(f"--beta must be one or more numbers > 0, got {args.beta}")
    shape = BottleneckConfig(
        args.latent_channels,
        args.latent_stride,
        args.hidden,
        args.decoder_hidden,
        args.decoder,
        args.encoder,
    )
    configs = [
        BottleneckTrainConfig(
            teacher=args.teacher,
            split=args.split,
            out=str(Path(args.out) / f"beta-{beta:g}.pt"),
            data=args.data,
            beta=beta,
            kd_weight=args.kd_weight,
            bottleneck=shape,
            epochs=args.epochs,
            finetune_epochs=args.finetune_epochs,
            batch=args.batch,
            lr=args.lr,
            seed=args.seed,
            resume=args.resume,
            progress=not args.quiet,
        )
        for beta in args.beta
    ]
    rows = []
    for config in configs:
        result = train_bottleneck(config)
        rows.append({"beta": config.beta, "checkpoint": result.path, **result.scores})
        print(json.dumps(rows[-1]))
    return 0
