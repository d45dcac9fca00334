"""``splitnet models [PATTERN]``: the model zoo."""

from __future__ import annotations

import argparse

from splitnet._errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the registered models", description=__doc__)
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'smp-unet-*'")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitnet.models import get_model_info, list_models

    names = list_models(args.pattern)
    if not names:
        raise ConfigError(f"no model matches {args.pattern!r}")
    for name in names:
        info = get_model_info(name)
        print(f"{name:40s} {info.task:14s} {info.num_classes:5d} classes")
    return 0
