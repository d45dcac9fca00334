"""``splitnet points MODEL --input 3xHxW``: every split point and what crosses it."""

from __future__ import annotations

import argparse
import json

from splitnet.cli import _args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "points",
        help="list a model's split points and the tensors crossing each",
        description=__doc__,
    )
    _args.add_model_and_input(p)
    p.add_argument(
        "--kind", type=_args.name_list, help="only points of these kinds, e.g. pool or conv,add"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--num-classes", type=int, default=None)
    p.set_defaults(func=run)


def describe(g, points) -> dict:
    """The JSON document of ``splitnet points``."""
    return {
        "model": g.name,
        "input": list(g.input_shapes[0][1:]),
        "points": [
            {
                "index": p.index,
                "name": p.name,
                "kind": p.kind,
                "op": p.op,
                "tensors": [
                    {"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in p.tensors
                ],
                "elements": p.elements,
                "bytes_float32": int(p.nbytes(32)),
            }
            for p in points
        ],
    }


def format_table(doc: dict) -> str:
    """The human-readable table of ``describe``'s document."""
    from splitnet._table import format_table as table
    from splitnet._table import human_bytes

    header = ("index", "name", "kind", "crossing tensors", "elements", "bytes@f32")
    rows = [
        (
            str(p["index"]),
            p["name"],
            p["kind"],
            ", ".join("x".join(map(str, t["shape"][1:])) for t in p["tensors"]),
            f"{p['elements']:,}",
            human_bytes(p["bytes_float32"]),
        )
        for p in doc["points"]
    ]
    return table(header, rows, align="rlllrr")


def run(args: argparse.Namespace) -> int:
    import torch

    from splitnet.models import create_model
    from splitnet.split import trace

    model = create_model(args.model, num_classes=args.num_classes)
    g = trace(model, torch.zeros(1, *args.input), name=args.model)
    points = g.select(kind=args.kind) if args.kind else list(g.points)
    doc = describe(g, points)
    print(json.dumps(doc, indent=2) if args.json else format_table(doc))
    return 0
