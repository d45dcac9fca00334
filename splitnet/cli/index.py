"""``splitnet index build|query``: representative search over labelled images and clips.

``build --data folder:DIR --out INDEX`` indexes ``DIR/<label>/*`` (images, or video
clips with a frame every ``--every`` frames or on ``--scene-change``); ``query IMAGE
--index INDEX --method M`` prints the nearest references (per class with
``--per-class``) as a table or ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub) -> None:
    p = sub.add_parser(
        "index",
        help="representative search: index labelled images/clips, query the nearest",
        description=__doc__,
    )
    isub = p.add_subparsers(dest="index_command", required=True, metavar="{build,query}")
    from splitnet.index import COLOUR_SPACES, METHODS

    b = isub.add_parser("build", help="index DIR/<label>/* (images or video clips)")
    b.add_argument("--data", required=True, help="folder:DIR (label folders of images/clips)")
    b.add_argument("--out", required=True, help="the index directory to write")
    b.add_argument("--size", default="64x64", help="WxH the images are compared at (64x64)")
    b.add_argument("--colour-space", "--color-space", default="rgb", choices=COLOUR_SPACES)
    b.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave out files that are neither images nor clips (default: error)",
    )
    g = b.add_mutually_exclusive_group()
    g.add_argument("--every", type=int, default=10, help="a clip's every N-th frame (10)")
    g.add_argument(
        "--scene-change",
        type=float,
        default=None,
        metavar="T",
        help="a clip's frames whose HSV histogram moved by Bhattacharyya > T",
    )
    b.set_defaults(func=run_build)

    q = isub.add_parser("query", help="the references nearest to IMAGE")
    q.add_argument("image")
    q.add_argument("--index", required=True)
    q.add_argument("-k", type=int, default=5)
    q.add_argument("--method", default="phash", help=f"one of {', '.join(METHODS)}")
    q.add_argument("--per-class", action="store_true", help="the k nearest of every class")
    q.add_argument("--size", default=None, help="WxH the index must have been built at")
    q.add_argument(
        "--colour-space",
        "--color-space",
        default=None,
        choices=COLOUR_SPACES,
        help="colour space the index must have been built in",
    )
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=run_query)


def _data_dir(spec: str) -> str:
    from splitnet.index import IndexError_

    kind, sep, path = spec.partition(":")
    if not sep:
        return spec
    if kind != "folder":
        raise IndexError_(f"index build reads folder:DIR, got {spec!r}")
    return path


def run_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from splitnet.index import (
        IMAGE_EXTENSIONS,
        VIDEO_EXTENSIONS,
        IndexError_,
        build_index,
        list_files,
        parse_size,
        read_frames,
    )

    if args.every < 1:
        raise IndexError_(f"--every must be >= 1, got {args.every}")
    root = Path(_data_dir(args.data))
    size = parse_size(args.size)
    labels, files = list_files(root)
    counts = {"files": 0, "skipped": 0}
    known = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    # an unknown kind of file fails before any work (one that does not decode, on reading)
    unknown = [f for f, _ in files if f.suffix.lower() not in known]
    if unknown and not args.skip_unreadable:
        raise IndexError_(
            f"not an image or video clip: {unknown[0]} ({len(unknown)} such files; "
            f"use --skip-unreadable to leave them out)"
        )

    def references():
        for path, label in tqdm(files, desc="indexing", unit="file", file=sys.stderr):
            n = 0
            for frame in read_frames(
                path,
                label,
                root=root,
                every=args.every,
                scene_change=args.scene_change,
                skip_unreadable=args.skip_unreadable,
            ):
                n += 1
                yield frame.id, frame.label, frame.rgb
            counts["files" if n else "skipped"] += 1

    idx = build_index(references(), labels=labels, size=size, colour_space=args.colour_space)
    idx.meta = {"data": str(root), "every": args.every, "scene_change": args.scene_change}
    idx.save(args.out)
    skipped = f", {counts['skipped']} unreadable files skipped" if counts["skipped"] else ""
    print(
        f"{args.out}: {len(idx)} references of {len(labels)} labels from "
        f"{counts['files']} files at {size[1]}x{size[0]} {args.colour_space}{skipped}"
    )
    return 0


def run_query(args: argparse.Namespace) -> int:
    from pathlib import Path

    from splitnet._table import format_table
    from splitnet.index import IndexError_, RepresentativeIndex, get_method, parse_size
    from splitnet.index._frames import _read_image

    method = get_method(args.method)
    idx = RepresentativeIndex.load(args.index)
    idx.check(size=parse_size(args.size) if args.size else None, colour_space=args.colour_space)
    path = Path(args.image)
    if not path.is_file():
        raise FileNotFoundError(f"no such image: {path}")
    rgb = _read_image(path)
    if rgb is None:
        raise IndexError_(f"not an image OpenCV can read: {path}")
    found = idx.query(rgb, method=method.name, k=args.k, per_class=args.per_class)
    if args.json:
        doc = {
            "image": str(path),
            "method": method.name,
            "higher_is_better": method.higher_is_better,
            "k": args.k,
            "matches": {c: [m.as_dict() for m in ms] for c, ms in found.items()},
        }
        print(json.dumps(doc, indent=2))
        return 0
    rows = [
        [c, str(m.rank), m.id, m.label, f"{m.score:.4g}"] for c, ms in found.items() for m in ms
    ]
    better = "higher" if method.higher_is_better else "lower"
    print(f"{method.name} ({method.description}; {better} is nearer)")
    print(format_table(["class", "rank", "id", "label", "score"], rows, align="lrllr"))
    return 0
