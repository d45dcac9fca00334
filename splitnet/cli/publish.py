"""``splitnet publish BUNDLE MODEL_DIR``: a bundle as the next version of a model folder.

The version is copied under a temporary name and renamed when complete, so a server
polling the repository (``splitnet serve --poll-interval``) or a daemon told to reload
(SIGHUP) never sees it half-written."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "publish",
        help="publish a bundle as a new version (REPO/NAME/VERSION/), atomically",
        description=__doc__,
    )
    p.add_argument("bundle", help="the bundle folder (splitnet export --out)")
    p.add_argument(
        "model_dir",
        help="the model's folder of versions: REPO/NAME on the server, "
        "the daemon's --bundle on the device",
    )
    p.add_argument(
        "--version", type=int, help="the version number (default: one more than the highest)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitnet.bundle import publish_version

    print(publish_version(args.bundle, args.model_dir, version=args.version))
    return 0
