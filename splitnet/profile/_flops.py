"""Multiply–accumulates per split point, counted by ``torch.utils.flop_counter``.

The graph is interpreted once, node by node, under ``FlopCounterMode`` and a
``FakeTensorMode`` (parameters and input converted to fake tensors), so that no
real arithmetic runs: profiling a 256x1600 frame costs as much as a 64x64 one.
Reading the counter's running total after each node attributes every FLOP to
exactly one node, so cumulative sums over points are exact and the whole pass
is linear in the graph's size.
"""

from __future__ import annotations

import torch
from torch import fx
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from splitnet.profile._graphinfo import GraphInfo
from splitnet.split import SplitGraph

__all__ = ["point_macs"]


class _CountingInterpreter(fx.Interpreter):
    """Runs a graph on fake tensors and records the FLOPs each node adds to ``counter``."""

    def __init__(self, gm: fx.GraphModule, fake: FakeTensorMode, counter: FlopCounterMode, bar):
        super().__init__(gm)
        self.fake = fake
        self.counter = counter
        self.bar = bar
        self.flops: dict[fx.Node, int] = {}
        self._fake_attrs: dict[str, torch.Tensor] = {}

    def get_attr(self, target, args, kwargs):
        # parameters and buffers become fake once each; the real weights are never touched
        if target not in self._fake_attrs:
            real = super().get_attr(target, args, kwargs)
            self._fake_attrs[target] = (
                self.fake.from_tensor(real) if isinstance(real, torch.Tensor) else real
            )
        return self._fake_attrs[target]

    def run_node(self, n: fx.Node):
        before = self.counter.get_total_flops()
        result = super().run_node(n)
        self.flops[n] = self.counter.get_total_flops() - before
        if self.bar is not None:
            self.bar.update(1)
        return result


def point_macs(g: SplitGraph, info: GraphInfo, *, progress: bool = False) -> list[int]:
    """Multiply–accumulates of each split point's own operation(s).

    MACs are ``FlopCounterMode`` FLOPs halved: the counter covers convolutions
    (transposed included) and matrix products (``mm``, ``addmm``, ``bmm``,
    attention), which is how torchvision's published GFLOPS are counted.
    FLOPs of a node that is not a point (a ``getitem``) go to the point that
    produced its input.

    Args:
        g: a traced graph.
        info: ``graph_info(g)``.
        progress: show a tqdm bar on stderr.

    Returns:
        One integer per point of ``g.points``; ``sum`` is the whole model's MACs.
    """
    from tqdm.auto import tqdm

    gm = g.graph_module
    fake = FakeTensorMode(allow_non_fake_inputs=False)
    inputs = [
        fake.from_tensor(torch.empty(s, dtype=_input_dtype(n)))
        for n, s in zip(_placeholders(gm), g.input_shapes, strict=True)
    ]
    bar = tqdm(
        total=len(info.nodes), desc="counting MACs", unit="node", leave=False, disable=not progress
    )
    try:
        with FlopCounterMode(display=False) as counter:
            interp = _CountingInterpreter(gm, fake, counter, bar)
            with fake:
                interp.run(*inputs)
    finally:
        bar.close()
    flops_at = [0] * len(g.points)
    for node, flops in interp.flops.items():
        if flops:
            # only call nodes count FLOPs, and every call node has a point (getitem: its producer)
            flops_at[max(info.pos.get(node, 0), 0)] += flops
    return [f // 2 for f in flops_at]


def _placeholders(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "placeholder"]


def _input_dtype(node: fx.Node) -> torch.dtype:
    val = node.meta.get("val")
    return val.dtype if isinstance(val, torch.Tensor) else torch.float32
