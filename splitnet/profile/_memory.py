"""Device memory per split point: the head's parameters and its peak activation bytes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from splitnet.profile._graphinfo import GraphInfo, tensor_of
from splitnet.split import SplitGraph

__all__ = ["HeadParams", "head_params", "peak_activation_bytes"]


@dataclass(frozen=True)
class HeadParams:
    """Parameters and buffers a head reads.

    Attributes:
        count: elements of every parameter and buffer the head references.
        float32_bytes: their size stored as float32 (non-float tensors at their own size).
        float16_bytes: their size stored as float16 (non-float tensors at their own size).
    """

    count: int
    float32_bytes: int
    float16_bytes: int


def head_params(g: SplitGraph, info: GraphInfo) -> list[HeadParams]:
    """Cumulative parameters of the head at every split point.

    A parameter or buffer (a ``get_attr`` node, batch-norm statistics included)
    belongs to the head from the first point that reads it.
    """
    n = info.num_points
    count, b32, b16 = [0] * n, [0] * n, [0] * n
    for node in info.nodes:
        if node.op != "get_attr":
            continue
        value = _attr(g.graph_module, str(node.target))
        if not isinstance(value, torch.Tensor) or not node.users:
            continue
        first = min(info.pos.get(u, n) for u in node.users)
        if not 0 <= first < n:
            continue
        numel = value.numel()
        floating = value.is_floating_point()
        count[first] += numel
        b32[first] += numel * 4 if floating else numel * value.element_size()
        b16[first] += numel * 2 if floating else numel * value.element_size()
    out, c, x, y = [], 0, 0, 0
    for i in range(n):
        c, x, y = c + count[i], x + b32[i], y + b16[i]
        out.append(HeadParams(count=c, float32_bytes=x, float16_bytes=y))
    return out


def peak_activation_bytes(g: SplitGraph, info: GraphInfo) -> list[int]:
    """Most activation bytes alive at once while each point's head runs.

    The head after point ``p`` runs operations ``0..p`` in graph order. While
    operation ``i`` runs, the live bytes are those of every value produced at or
    before ``i`` and read at or after ``i`` (its inputs and its outputs
    included); a value is freed after its last use inside the head, and the
    values that cross the cut stay alive to the end. The input counts; weights
    do not (see :func:`head_params`). Views (``view``, ``permute``, ...) share
    their base's storage and are counted once. The peak of head ``p`` is the
    largest live total over ``i = 0..p``.

    Because a value read after the cut is alive until the cut either way, the
    live total at step ``i`` does not depend on ``p``; one sweep gives every
    point's peak as a running maximum.

    Returns:
        One byte count per point of ``g.points``.
    """
    n = info.num_points
    delta = [0] * (n + 2)  # live(i) = prefix sum of delta

    def add(start: int, end: int, nbytes: int) -> None:
        start, end = max(start, 0), min(end, n - 1)
        if start <= end:
            delta[start] += nbytes
            delta[end + 1] -= nbytes

    root: dict[fx.Node, fx.Node] = {}
    end_of: dict[fx.Node, int] = {}
    for v, last in info.last_use.items():
        base = _alias_base(v, root)
        root[v] = base
        end_of[base] = max(end_of.get(base, last), last)
    for base, end in end_of.items():
        add(info.pos[base], end, _nbytes(tensor_of(base)))
    # outputs of multi-output ops that no node reads (e.g. pooling indices) still exist
    # while their op runs
    for node in info.nodes:
        val = node.meta.get("val")
        if node.op == "call_function" and isinstance(val, (tuple, list)):
            read = {u.args[1] for u in node.users if len(u.args) > 1}
            for k, t in enumerate(val):
                if isinstance(t, torch.Tensor) and k not in read:
                    add(info.pos[node], info.pos[node], _nbytes(t))
    peaks, live, peak = [], 0, 0
    for i in range(n):
        live += delta[i]
        peak = max(peak, live)
        peaks.append(peak)
    return peaks


def _nbytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def _alias_base(v: fx.Node, root: dict[fx.Node, fx.Node]) -> fx.Node:
    """The value whose storage ``v`` shares (itself unless ``v`` is a view of an input)."""
    schema = getattr(v.target, "_schema", None) if v.op == "call_function" else None
    if schema is None or not schema.returns or schema.returns[0].alias_info is None:
        return v
    sets = schema.returns[0].alias_info.before_set
    for arg, value in zip(schema.arguments, v.args, strict=False):
        if arg.alias_info is not None and arg.alias_info.before_set & sets:
            if isinstance(value, fx.Node) and value in root:
                return root[value]
    return v


def _attr(gm: fx.GraphModule, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
