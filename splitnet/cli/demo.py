"""``splitnet demo``: the split points of the reference model on a Severstal-sized frame.

Shows the five max-pool split points of ``unet-vgg16`` at 3x256x1600 and what
crosses each (every skip connection still waiting for the decoder). The
streaming demo (device daemon -> server) replaces this when it lands.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="show the reference model's split points", description=__doc__)
    p.add_argument("--model", default="unet-vgg16")
    p.add_argument("--input", default="3x256x1600")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitnet.cli.main import main

    print(f"Split points of {args.model} at {args.input} (max-pools):\n")
    return main(["points", args.model, "--input", args.input, "--kind", "pool"])
