"""The tail as a ``torch.export`` program, with a dynamic batch where the graph allows."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splitnet.bundle import TAIL_FILE, TensorSpec

__all__ = ["MAX_BATCH", "export_tail"]

MAX_BATCH = 64


_RESHAPES = ("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default")


def free_batch_in_reshapes(tail: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of ``tail`` whose reshapes say ``-1`` where the traced graph wrote batch 1.

    The captured graph has static shapes, so ``x.flatten(1)`` became
    ``view(x, [1, 512])``; with ``[-1, 512]`` the same program takes any batch.
    Only reshapes that keep dimension 0 the batch (input and output both start
    with the batch of 1, no other ``-1``) are changed.
    """
    gm = copy.deepcopy(tail)
    for n in gm.graph.nodes:
        if n.op != "call_function" or str(n.target) not in _RESHAPES or len(n.args) < 2:
            continue
        src, size = n.args[0], n.args[1]
        val = getattr(src, "meta", {}).get("val")
        if (
            isinstance(size, (list, tuple))
            and size
            and size[0] == 1
            and -1 not in size
            and isinstance(val, torch.Tensor)
            and val.dim() >= 1
            and val.shape[0] == 1
        ):
            n.args = (src, [-1, *size[1:]], *n.args[2:])
    gm.recompile()
    return gm


def export_tail(tail: nn.Module, crossing: tuple[TensorSpec, ...], path: Path) -> dict[str, Any]:
    """Saves the tail as a ``torch.export`` program, with a dynamic batch where it can."""
    # torch.export specialises dimensions of size 1, so trace with a batch of 2
    example = tuple(torch.randn(2, *t.shape[1:]) for t in crossing)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    info: dict[str, Any] = {"file": TAIL_FILE, "format": "torch.export", "inputs": []}
    info["inputs"] = [t.name for t in crossing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(
                free_batch_in_reshapes(tail),
                example,
                dynamic_shapes=tuple({0: batch} for _ in crossing),
            )
            info.update(batch="dynamic", max_batch=MAX_BATCH)
        except Exception:  # some graphs pin the batch; a static program still serves
            example = tuple(torch.randn(*t.shape) for t in crossing)
            program = torch.export.export(tail, example)
            info.update(batch="static", max_batch=int(crossing[0].shape[0]))
        # the example inputs would be saved too (hundreds of MB at full resolution)
        program.example_inputs = None
        torch.export.save(program, path)
    return info
