"""Why the tail answered what it did: the ``heatmap`` output (issue 15).

Classifiers: Grad-CAM (Selvaraju et al., 2017) at one layer of the tail, the gradient
of the chosen class's logit weighting that layer's activation maps, upsampled to the
frame, ``[1, H, W]`` UINT8 (255: the strongest evidence). Segmentation: the per-class
probability maps, ``[C, H, W]`` UINT8 (255: probability 1).

The tail is a ``torch.export`` program (a flat FX graph, no submodules to hook), so
the activation is taken by running the graph with an :class:`torch.fx.Interpreter`
that keeps the chosen node's output; layers are named by the module path the export
recorded (``layer4.1``, ``features.18``). The default layer is the last convolution
of the tail, followed through what keeps its shape (batch norm, ReLU, a residual
add): the output of the last convolutional block, as Grad-CAM usually explains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import fx
from torch.nn import functional as F

from splitnet._errors import SplitnetError

__all__ = ["ExplainError", "Explainer", "explainer_of"]

_CONVS = {"conv2d", "convolution", "conv1d", "conv3d", "_convolution"}


class ExplainError(SplitnetError):
    """A heatmap asked of a tail with no layer to explain, or of an unknown layer."""


def _val(node: fx.Node):
    return node.meta.get("val")


def _is_map(node: fx.Node) -> bool:
    v = _val(node)
    return isinstance(v, torch.Tensor) and v.dim() == 4 and v.shape[-1] != 1 and v.numel() != 0


def _module_path(node: fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return path.removeprefix("L['self'].").removeprefix("L__self__.") or None


def _is_conv(node: fx.Node) -> bool:
    if node.op != "call_function":
        return False
    name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
    return name in _CONVS


@dataclass(frozen=True)
class _Layer:
    name: str  # the module path
    node: str  # the FX node whose output is explained


class Explainer:
    """Grad-CAM over a tail's exported graph.

    Args:
        module: the tail (``torch.export.load(...).module()``).
        default_layer: the module path to explain when a request does not say
            (None: the last convolutional block).

    Raises:
        ExplainError: the tail has no convolution (nothing spatial to explain).
    """

    def __init__(self, module: fx.GraphModule, *, default_layer: str | None = None) -> None:
        self.module = module
        nodes = list(module.graph.nodes)
        convs = [n for n in nodes if _is_conv(n) and _is_map(n)]
        if not convs:
            raise ExplainError("its tail has no convolution: no layer to explain")
        self.layers: dict[str, _Layer] = {}
        for n in nodes:  # the last spatial node of each module (a block's output)
            path = _module_path(n)
            if path and _is_map(n):
                self.layers[path] = _Layer(path, n.name)
        self.default = self._follow(nodes, convs[-1])
        if default_layer is not None:
            self.default = self.layer(default_layer)

    @staticmethod
    def _follow(nodes: list[fx.Node], conv: fx.Node) -> _Layer:
        """From the last convolution through the nodes that keep its shape."""
        shape = tuple(_val(conv).shape)
        chain, last = {conv}, conv
        for n in nodes[nodes.index(conv) + 1 :]:
            if n.op == "output" or not any(i in chain for i in n.all_input_nodes):
                continue
            v = _val(n)
            if isinstance(v, torch.Tensor):
                if tuple(v.shape) == shape:
                    chain.add(n)
                    last = n
                elif v.numel() != 0:
                    break
            else:  # a tuple (batch norm's): its getitem comes next
                chain.add(n)
        return _Layer(_module_path(last) or last.name, last.name)

    def layer(self, name: str) -> _Layer:
        if name in self.layers:
            return self.layers[name]
        raise ExplainError(
            f"the tail has no layer {name!r} to explain; layers: {', '.join(self.layers)}"
        )

    def gradcam(
        self,
        inputs: list[torch.Tensor],
        *,
        size: tuple[int, int],
        target: int | None = None,
        layer: str | None = None,
        temperature: float = 1.0,
    ) -> tuple[np.ndarray, int]:
        """``(heatmap [1, H, W] uint8, class explained)`` for one frame (batch 1 inputs).

        ``target`` None explains the most probable class."""
        chosen = self.default if layer is None else self.layer(layer)
        kept: dict[str, torch.Tensor] = {}

        class _Keep(fx.Interpreter):
            def run_node(self, n):
                out = super().run_node(n)
                if n.name == chosen.node:
                    kept["a"] = out
                return out

        with torch.enable_grad():
            xs = [t.detach().clone().requires_grad_(True) for t in inputs]
            out = _Keep(self.module).run(*xs)
            while isinstance(out, (tuple, list)):
                out = out[0]
            logits = out.float() / temperature
            cls = int(logits[0].argmax()) if target is None else int(target)
            if not 0 <= cls < logits.shape[1]:
                raise ExplainError(
                    f"heatmap_class must be in [0, {logits.shape[1] - 1}], got {target}"
                )
            act = kept["a"]
            (grad,) = torch.autograd.grad(logits[0, cls], act)
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * act.detach()).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam.float(), size=size, mode="bilinear", align_corners=False)[0]
        peak = float(cam.max())
        cam = cam / peak if peak > 0 else cam
        return (cam * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy(), cls


def explainer_of(model) -> Explainer:
    """The model's :class:`Explainer` (built once), or ``ExplainError`` naming why not."""
    cached = getattr(model, "_explainer", None)
    if isinstance(cached, Explainer):
        return cached
    if isinstance(cached, ExplainError):
        raise cached
    module = getattr(model, "module", None)
    try:
        if not isinstance(module, fx.GraphModule):
            raise ExplainError("its tail is not a network: no layer to explain")
        manifest = model.manifest
        explainer = Explainer(module, default_layer=(manifest.tail or {}).get("explain_layer"))
    except ExplainError as e:
        e = ExplainError(f"model {model.name}: heatmap unavailable, {e}")
        model._explainer = e
        raise e from None
    model._explainer = explainer
    return explainer


def probability_maps(probs: np.ndarray) -> np.ndarray:
    """A segmentation frame's ``[C, H, W]`` probabilities as UINT8 (255: 1)."""
    return np.round(np.clip(probs, 0, 1) * 255).astype(np.uint8)


def add_heatmaps(model, frames, results: list[dict[str, np.ndarray]]) -> None:
    """Adds ``heatmap`` to the results of the frames that asked for it (in place)."""
    for frame, result in zip(frames, results, strict=True):
        if not frame.heatmap:
            continue
        if model.task == "segmentation":
            result["heatmap"] = probability_maps(result["probabilities"])
            continue
        explainer = explainer_of(model)
        inputs = [torch.from_numpy(t).to(model.device) for t in frame.tensors]
        heatmap, _ = explainer.gradcam(
            inputs,
            size=tuple(model.manifest.input.shape[1:]),
            target=frame.heatmap_class,
            layer=frame.heatmap_layer,
            temperature=model.confidence.temperature,
        )
        result["heatmap"] = heatmap


@dataclass(frozen=True)
class HeatmapRequest:
    """What a request asked of the ``heatmap`` output."""

    wanted: bool = False
    target: int | None = None  # ``heatmap_class``
    layer: str | None = None  # ``heatmap_layer``


def check_heatmap_request(model, wanted: set[str], parameters) -> HeatmapRequest:
    """The request's heatmap settings; ``ExplainError`` (INVALID_ARGUMENT) when the model
    has nothing to explain, or a parameter is bad."""
    from splitnet.wire import get_parameter

    target = get_parameter(parameters, "heatmap_class")
    layer = get_parameter(parameters, "heatmap_layer")
    if "heatmap" not in wanted:
        return HeatmapRequest()
    if target is not None:
        n = model.manifest.num_classes or 0
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < n:
            raise ExplainError(f"heatmap_class must be an integer in [0, {n - 1}], got {target!r}")
    if layer is not None and not isinstance(layer, str):
        raise ExplainError(f"heatmap_layer must be a layer name, got {layer!r}")
    if getattr(model, "task", None) == "segmentation" and hasattr(model, "run_batch"):
        if layer is not None:
            raise ExplainError(
                "heatmap_layer applies to classifiers (a segmentation heatmap is its probabilities)"
            )
        return HeatmapRequest(True, target, None)
    explainer = explainer_of(model)
    if layer is not None:
        explainer.layer(layer)  # raises naming the layers
    return HeatmapRequest(True, target, layer)
