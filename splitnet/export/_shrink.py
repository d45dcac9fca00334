"""Smaller models before export (issue 14, seed 004): pruning, low rank, distillation.

The IR variants of :mod:`splitnet.export._variants` change how a head's weights are
stored; these change the network itself, on the torch side, before it is traced:

* ``prune:R`` removes the fraction ``R`` of the filters of every convolution of the
  head, chosen by L1 norm (Torch-Pruning's dependency graph finds what must go
  with each filter: its batch norm, the next layer's input channels, the channels a
  residual add or a skip connection ties to it, the tail's layers included), then
  fine-tunes the whole model briefly;
* ``lowrank:R`` replaces every linear layer and ungrouped convolution of the head by
  two, from the truncated SVD of its weight (a ``k x k`` convolution to ``r``
  channels, then a ``1 x 1`` one): ``R`` is the kept fraction of the full rank, or
  ``lowrank:energy=E`` keeps the smallest rank whose singular values hold the
  fraction ``E`` of the squared sum; only layers it makes smaller are replaced;
  then the same fine-tune;
* ``distill:W`` trains a student of the same architecture at ``W`` times the
  teacher's width from scratch, against the task loss plus the teacher's output.

Fine-tuning and distillation use the task loss (BCE + Dice, cross-entropy) plus
``kd_weight`` times the distance to the unchanged model's output (what
``splitnet train-bottleneck`` uses), with Adam and a cosine learning rate.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from splitnet._errors import ConfigError
from splitnet._registry import Registry

__all__ = [
    "SHRINK_VARIANTS",
    "FineTune",
    "ShrinkVariant",
    "distill_student",
    "factorize_low_rank",
    "fine_tune",
    "head_modules",
    "parse_shrink",
    "prune_filters",
]


@dataclass(frozen=True)
class FineTune:
    """How a shrunk model is retrained.

    Attributes:
        data: a ``--data`` spec; its ``train`` subset is used.
        steps: optimizer steps (0: no retraining).
        batch, lr, seed: as for ``splitnet train``.
        kd_weight: weight of the distance to the unchanged model's output.
    """

    data: str | None
    steps: int = 300
    batch: int = 16
    lr: float = 1e-3
    kd_weight: float = 1.0
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch < 1 or not self.lr > 0 or self.kd_weight < 0:
            raise ConfigError("fine-tune steps must be >= 0, batch >= 1, lr > 0, kd weight >= 0")
        if self.steps and not self.data:
            raise ConfigError("pruned, low-rank and distilled variants retrain on --data SPEC")

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "steps": self.steps,
            "batch": self.batch,
            "lr": self.lr,
            "kd_weight": self.kd_weight,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class ShrinkVariant:
    """A change of the network before export.

    Attributes:
        name: the registry name (the part of ``--variants`` before ``:``).
        argument: what follows the ``:`` (for messages).
        apply: ``(model, value, context) -> (model, record)``; ``context`` holds
            ``input_shape``, ``split`` (None: the whole model is the head),
            ``model_name``, ``model_args``, ``num_classes``.
        retrains: it needs the fine-tune (distillation trains from scratch).
    """

    name: str
    argument: str
    apply: Callable[[nn.Module, Any, dict], tuple[nn.Module, dict]]
    description: str = ""


SHRINK_VARIANTS: Registry[ShrinkVariant] = Registry("shrink variant")


def parse_shrink(spec: str) -> tuple[ShrinkVariant, Any] | None:
    """``(variant, value)`` for ``prune:R``, ``lowrank:R``, ``lowrank:energy=E``,
    ``distill:W``; None for a name without ``:`` that is not one of them.

    Raises:
        ConfigError: a ratio outside (0, 1), a missing or unreadable value.
    """
    base, sep, arg = spec.partition(":")
    if base not in SHRINK_VARIANTS:
        return None
    v = SHRINK_VARIANTS.get(base)
    if not sep or not arg:
        raise ConfigError(f"variant {base!r} needs a value: {base}:{v.argument}")
    key = "ratio"
    if base == "lowrank" and arg.startswith("energy="):
        key, arg = "energy", arg.removeprefix("energy=")
    try:
        value = float(arg)
    except ValueError:
        raise ConfigError(
            f"variant {spec!r}: {arg!r} is not a number ({base}:{v.argument})"
        ) from None
    if base == "distill":
        if not 0 < value < 1:
            raise ConfigError(f"variant {spec!r}: the width multiplier must be in (0, 1)")
        return v, value
    if not 0 < value < 1:
        raise ConfigError(f"variant {spec!r}: the {key} must be in (0, 1), got {value:g}")
    return v, (key, value)


# ---- which layers the head holds ---------------------------------------------------------


_LAYER_OPS = ("conv", "linear", "addmm")


def _stack_paths(node) -> list[str]:
    return [path for path, _ in (node.meta.get("nn_module_stack") or {}).values()]


def head_modules(model: nn.Module, input_shape, split) -> tuple[set[str], set[str]]:
    """``(head, outputs)``: the module paths that run before the cut (every module, for
    ``split=None``) and those of the layers whose output channels reach the model's
    output unchanged (pruning them would change the output)."""
    return _head_modules(model, _trace(model, input_shape), split)


def _trace(model: nn.Module, input_shape):
    from splitnet.split import trace

    return trace(model, torch.zeros(1, *input_shape), name="shrink")


def _head_modules(model: nn.Module, g, split) -> tuple[set[str], set[str]]:
    """:func:`head_modules` on the traced graph ``g`` of ``model``."""
    ops = g._ops
    last = len(ops) - 1 if split is None else g.point(split).index
    head, tail = set(), set()
    for i, n in enumerate(ops):
        (head if i <= last else tail).update(_stack_paths(n))
    layers = {p for p, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    outputs: set[str] = set()
    out = next(n for n in g.graph_module.graph.nodes if n.op == "output")
    stack = list(out.all_input_nodes)
    seen = set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "call_function" and any(k in str(n.target) for k in _LAYER_OPS):
            owner = next((p for p in reversed(_stack_paths(n)) if p in layers), None)
            if owner is not None:
                outputs.add(owner)
                continue
        stack.extend(n.all_input_nodes)
    return head - tail, outputs


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- prune ---------------------------------------------------------------------------------


def prune_filters(model: nn.Module, ratio: float, input_shape, split) -> tuple[nn.Module, dict]:
    """A copy of ``model`` with the fraction ``ratio`` of the filters of the head's
    convolutions removed by L1 norm (Torch-Pruning); the layers after them, the
    tail's included, lose the matching input channels."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise ConfigError(
            "prune needs Torch-Pruning: pip install 'splitnet[research]' (or torch-pruning)"
        ) from None
    model = copy.deepcopy(model).eval()
    head, outputs = head_modules(model, input_shape, split)
    x = torch.zeros(1, *input_shape)
    with torch.no_grad():
        out_shape = tuple(model(x).shape)
    layers = {p: m for p, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    kept = {p: m for p, m in layers.items() if p in head and p not in outputs}
    if not any(isinstance(m, nn.Conv2d) for m in kept.values()):
        raise ConfigError("prune: the head has no convolution whose filters can go")
    before = {p: m.weight.shape[0] for p, m in layers.items()}
    n0 = _params(model)
    pruner = tp.pruner.MetaPruner(
        model,
        x,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        ignored_layers=[m for p, m in layers.items() if p not in kept],
        round_to=1,
    )
    pruner.step()
    changed = [p for p, m in layers.items() if p not in kept and m.weight.shape[0] != before[p]]
    with torch.no_grad():
        if changed or tuple(model(x).shape) != out_shape:
            raise ConfigError(f"prune: layers outside the head lost filters: {changed[:3]}")
    filters = {p: [before[p], m.weight.shape[0]] for p, m in kept.items()}
    return model, {
        "ratio": ratio,
        "importance": "L1",
        "layers": len(filters),
        "filters_before": sum(a for a, _ in filters.values()),
        "filters_after": sum(b for _, b in filters.values()),
        "parameters_before": n0,
        "parameters_after": _params(model),
    }


# ---- low rank ------------------------------------------------------------------------------


def _rank(s: torch.Tensor, key: str, value: float) -> int:
    if key == "ratio":
        return max(1, round(value * s.numel()))
    energy = torch.cumsum(s**2, 0) / (s**2).sum()
    return int(torch.searchsorted(energy, torch.tensor(value)).item()) + 1


def _factorize(layer: nn.Module, key: str, value: float) -> nn.Module | None:
    """Two layers from the truncated SVD of ``layer``'s weight; None where they would
    not be smaller."""
    w = layer.weight.detach()
    out = w.shape[0]
    mat = w.reshape(out, -1)
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    r = min(_rank(s, key, value), s.numel())
    if r * (mat.shape[1] + out) >= mat.numel():
        return None
    root = s[:r].sqrt()
    first_w = (root[:, None] * vh[:r]).reshape(r, *w.shape[1:])
    second_w = (u[:, :r] * root[None, :]).reshape(out, r, *([1] * (w.dim() - 2)))
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        first, second = nn.Linear(w.shape[1], r, bias=False), nn.Linear(r, out, bias=bias)
        second_w = second_w.reshape(out, r)
    else:
        first = nn.Conv2d(
            layer.in_channels,
            r,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            bias=False,
            padding_mode=layer.padding_mode,
        )
        second = nn.Conv2d(r, out, 1, bias=bias)
    with torch.no_grad():
        first.weight.copy_(first_w)
        second.weight.copy_(second_w)
        if bias:
            second.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def factorize_low_rank(
    model: nn.Module, spec: tuple[str, float], input_shape, split
) -> tuple[nn.Module, dict]:
    """A copy of ``model`` whose head's linear layers and ungrouped convolutions are
    each replaced by two from the truncated SVD of the weight, where that is smaller.

    The layer the cut follows keeps its name (so the split point does not move): it
    is not factorized.
    """
    key, value = spec
    model = copy.deepcopy(model).eval()
    g = _trace(model, input_shape)
    head, _ = _head_modules(model, g, split)
    cut = None if split is None else g.point(split).module
    n0 = _params(model)
    replaced, ranks = 0, []
    for path, layer in list(model.named_modules()):
        if path not in head or path == cut:
            continue
        if isinstance(layer, nn.Conv2d) and layer.groups != 1:
            continue
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        new = _factorize(layer, key, value)
        if new is None:
            continue
        parent, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, new)
        replaced += 1
        ranks.append(new[0].weight.shape[0])
    if not replaced:
        raise ConfigError(
            f"lowrank:{'energy=' if key == 'energy' else ''}{value:g}: no layer of the head "
            "gets smaller at this rank"
        )
    return model, {
        key: value,
        "layers": replaced,
        "ranks": ranks,
        "parameters_before": n0,
        "parameters_after": _params(model),
    }


# ---- distillation --------------------------------------------------------------------------

# the constructor argument that scales a model's channels
_WIDTH_ARGS = {"mobilenet-v2": "width_mult", "mnasnet": "alpha"}


def distill_student(model: nn.Module, width: float, context: dict) -> tuple[nn.Module, dict]:
    """A fresh model of the same architecture at ``width`` times the teacher's width
    (random init; :func:`fine_tune` with ``scratch=True`` trains it)."""
    from splitnet.models import create_model

    name = context.get("model_name")
    if not isinstance(name, str):
        raise ConfigError("distill needs a registered model name (its width argument)")
    args = dict(context.get("model_args") or {})
    key = next((v for k, v in _WIDTH_ARGS.items() if name.startswith(k)), "width")
    base = float(args.get(key, 1.0))
    args[key] = base * width
    try:
        student = create_model(name, num_classes=context.get("num_classes"), **args)
    except TypeError:
        raise ConfigError(f"distill: {name} has no width argument ({key}=)") from None
    return student, {
        "width": width,
        "width_arg": key,
        "model_args": args,
        "parameters_before": None if model is None else _params(model),
        "parameters_after": _params(student),
    }


def _prune(model, value, ctx):
    return prune_filters(model, value[1], ctx["input_shape"], ctx["split"])


def _lowrank(model, value, ctx):
    return factorize_low_rank(model, value, ctx["input_shape"], ctx["split"])


for _v in (
    ShrinkVariant("prune", "R", _prune, "remove the fraction R of the head's filters (L1)"),
    ShrinkVariant(
        "lowrank",
        "R",
        _lowrank,
        "SVD of the head's linear and conv layers at rank fraction R (or energy=E)",
    ),
    ShrinkVariant(
        "distill", "W", distill_student, "a student at W x the width, trained on the teacher"
    ),
):
    SHRINK_VARIANTS.add(_v.name, _v)


# ---- retraining ----------------------------------------------------------------------------


def fine_tune(
    model: nn.Module,
    teacher: nn.Module,
    config: FineTune,
    input_shape,
    *,
    desc: str = "fine-tune",
) -> dict[str, Any]:
    """Trains ``model`` in place for ``config.steps`` steps on the task loss plus
    ``kd_weight`` x the distance to ``teacher``'s output; returns the record."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from splitnet.bottleneck._train import output_distillation
    from splitnet.data import open_dataset, parse_spec
    from splitnet.models._preprocess import Normalize
    from splitnet.train._loop import make_loss

    if config.steps == 0:
        return {**config.to_dict(), "loss": None}
    c, h, w = input_shape
    parsed = parse_spec(config.data)
    subset = parsed.options.get("subset", "train")
    ds = open_dataset(parsed, subset=subset, size=(h, w), channels=c)
    info = getattr(teacher, "splitnet_info", None) or getattr(model, "splitnet_info", None)
    if info is None or ds.task != info.task:
        raise ConfigError(f"--data {config.data} is {ds.task} data, the model is not")
    normalize = Normalize(info, c)
    loss_fn = make_loss(ds.task)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(ds, batch_size=config.batch, shuffle=True, generator=gen, drop_last=True)
    if len(loader) == 0:
        raise ConfigError(f"--data {config.data}: fewer train frames than a batch ({config.batch})")
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    teacher.eval()
    model.train()
    bar = tqdm(
        total=config.steps,
        desc=desc,
        unit="step",
        file=sys.stderr,
        leave=False,
        disable=not config.progress,
    )
    step, total, count = 0, 0.0, 0
    while step < config.steps:
        for x, y in loader:
            if step >= config.steps:
                break
            for group in opt.param_groups:
                group["lr"] = config.lr * (
                    0.05 + 0.95 * (1 + math.cos(math.pi * step / config.steps)) / 2
                )
            xn = normalize(x)
            out = model(xn)
            loss = loss_fn(out, y if ds.task == "segmentation" else y.long())
            if config.kd_weight:
                with torch.no_grad():
                    ref = teacher(xn)
                loss = loss + config.kd_weight * output_distillation(out, ref, ds.task)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total, count = total + loss.item(), count + 1
            bar.update()
            bar.set_postfix(loss=f"{total / count:.4f}")
    bar.close()
    model.eval()
    return {**config.to_dict(), "loss": total / count}
