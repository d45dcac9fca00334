"""Positions and lifetimes of the values in a :class:`~splitnet.split.SplitGraph`'s graph.

Taken from the graph's public liveness (``positions``, ``last_uses``), so that the
profiler neither recomputes it nor depends on the split engine's internals.
"""

from __future__ import annotations

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
    """Positions and last uses of every node of ``g.graph_module``: the graph's own
    liveness (:attr:`SplitGraph.positions`, :attr:`SplitGraph.last_uses`), computed once
    when it was traced."""
    return GraphInfo(
        nodes=tuple(g.graph_module.graph.nodes),
        pos=g.positions,
        last_use=g.last_uses,
        num_points=len(g.points),
    )
