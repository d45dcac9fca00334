"""Positions and lifetimes of the values in a :class:`~splitnet.split.SplitGraph`'s graph.

Built from the graph's public surface (``graph_module`` and each point's
``node``), so that the profiler does not depend on the split engine's internals.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import fx

from splitnet.split import SplitGraph

__all__ = ["GraphInfo", "graph_info"]


@dataclass(frozen=True)
class GraphInfo:
    """Where each node of ``g.graph_module`` runs, in split-point indices.

    Attributes:
        nodes: every node of the graph, in graph order.
        pos: node -> index of the point it belongs to. Placeholders are ``-1``;
            a ``getitem`` takes its producer's index; any other call that is not
            a point takes the index of the nearest point before it (``-1`` if none).
            ``get_attr`` and ``output`` nodes have no entry.
        last_use: value node -> index of the last point that reads it
            (``len(points)`` when the model's output reads it; its own index
            when nothing does).
        num_points: number of split points.
    """

    nodes: tuple[fx.Node, ...]
    pos: dict[fx.Node, int]
    last_use: dict[fx.Node, int]
    num_points: int


def tensor_of(node: fx.Node) -> torch.Tensor | None:
    """The (fake) tensor a node produces, from its ``meta["val"]``; ``None`` if not a tensor."""
    val = node.meta.get("val")
    return val if isinstance(val, torch.Tensor) else None


def graph_info(g: SplitGraph) -> GraphInfo:
    """Positions and last uses of every node of ``g.graph_module``."""
    nodes = tuple(g.graph_module.graph.nodes)
    index_of = {p.node: p.index for p in g.points}
    pos: dict[fx.Node, int] = {}
    current = -1
    for n in nodes:
        if n.op == "placeholder":
            pos[n] = -1
        elif n.op == "call_function":
            if n.name in index_of:
                current = index_of[n.name]
                pos[n] = current
            elif n.target is operator.getitem and n.args[0] in pos:
                pos[n] = pos[n.args[0]]
            else:
                pos[n] = current
    end = len(g.points)
    last_use: dict[fx.Node, int] = {}
    for n in nodes:
        if n in pos and tensor_of(n) is not None:
            last_use[n] = max((pos.get(u, end) for u in n.users), default=pos[n])
    return GraphInfo(nodes=nodes, pos=pos, last_use=last_use, num_points=end)
