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
    rows = [("index", "name", "kind", "crossing tensors", "elements", "bytes@f32")]
    for p in doc["points"]:
        tensors = ", ".join("x".join(map(str, t["shape"][1:])) for t in p["tensors"])
        rows.append(
            (
                str(p["index"]),
                p["name"],
                p["kind"],
                tensors,
                f"{p['elements']:,}",
                _human(p["bytes_float32"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        cells = [
            c.rjust(w) if i in (0, 4, 5) else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


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
