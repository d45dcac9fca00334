"""``splitnet explain IMAGE --bundle DIR [--server HOST:PORT] --out overlay.png``: why the
tail answered what it did.

The bundle's head runs here on the image (resized to the bundle's input), the crossing
tensors go to the tail, which answers the ``heatmap`` output: Grad-CAM of the explained
class at a layer of a classifier's tail, or a segmentation model's per-class
probability maps. Without ``--server`` the tail runs in this process. The PNG shows
the image and the heatmap over it side by side (segmentation: one row per class,
or only ``--class K``); the answer's top-k goes to stdout.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from splitnet.cli import _args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="a heatmap of why the tail answered what it did, drawn over the image (PNG)",
        description=__doc__,
    )
    p.add_argument("image", help="an image file (PNG, JPEG, ...)")
    p.add_argument("--bundle", required=True, help="the split bundle folder (or its versions)")
    p.add_argument(
        "--server",
        metavar="HOST:PORT",
        type=_args.server_list,
        help="ask a running splitnet serve (default: run the tail in this process)",
    )
    p.add_argument("--out", metavar="PNG", help="write the overlay here (default: print only)")
    p.add_argument(
        "--class",
        dest="target",
        type=int,
        metavar="K",
        help="the class to explain (default: the most probable; segmentation: all classes)",
    )
    p.add_argument(
        "--layer", help="the tail layer Grad-CAM explains (default: the last conv block)"
    )
    p.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity (default 0.5)")
    p.add_argument("--head-device", default="CPU", help="OpenVINO device of the head (default CPU)")
    p.add_argument("--token-file", help="bearer token for a server that asks for one")
    p.add_argument("--tls-ca", type=_args.pem_file, help="the server's CA (PEM): connect with TLS")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.set_defaults(func=run)


def _panel(e, alpha: float, target: int | None) -> np.ndarray:
    from splitnet.explain import heatmap_overlay

    if e.task != "segmentation":
        rows = [heatmap_overlay(e.image, e.heatmap[0], alpha=alpha)]
    else:
        ks = range(len(e.heatmap)) if target is None else [target]
        rows = [heatmap_overlay(e.image, e.heatmap[k], alpha=alpha) for k in ks]
    line = np.full((rows[0].shape[0], 2, 3), 255, np.uint8)
    rows = [np.concatenate([e.image, line, r], axis=1) for r in rows]
    sep = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
    out = [rows[0]]
    for r in rows[1:]:
        out += [sep, r]
    return np.concatenate(out, axis=0)


def run(args: argparse.Namespace) -> int:
    from splitnet._errors import ConfigError
    from splitnet.explain import explain_image

    if not 0 <= args.alpha <= 1:
        raise ConfigError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.target is not None and args.target < 0:
        raise ConfigError(f"--class must be >= 0, got {args.target}")
    _args.writable_file(args.out, "--out")
    e = explain_image(
        args.image,
        args.bundle,
        server=args.server[0] if args.server else None,
        target=args.target,
        layer=args.layer,
        head_device=args.head_device,
        token_file=args.token_file,
        tls_ca=args.tls_ca,
    )
    doc = e.to_json()
    if args.out:
        from PIL import Image

        Image.fromarray(_panel(e, args.alpha, args.target)).save(args.out)
        doc["out"] = args.out
    if args.json:
        print(json.dumps(doc, indent=2))
    elif e.task == "segmentation":
        peaks = ", ".join(f"{e.name(k)} {p}" for k, p in enumerate(doc["peak_per_class"]))
        print(f"segmentation probability maps (peak per class, of 255): {peaks}")
    else:
        top = ", ".join(f"{t['name']} {t['probability']:.3f}" for t in doc["top_k"])
        flag = " (uncertain)" if e.uncertain else ""
        print(f"top-k: {top}{flag}; heatmap explains {e.name(e.explained)}")
    if args.out:
        print(f"wrote {args.out}")
    return 0
