"""Export targets: what an OpenVINO device needs from the head's IR.

A target may rewrite the converted model (:meth:`ExportTarget.prepare`) and
lists what it cannot take (:meth:`ExportTarget.violations`). ``cpu`` takes any
static-shape IR; ``myriad`` (Intel Movidius Myriad X through the MYRIAD plugin
of OpenVINO 2022.3 LTS) takes only operations of opset1..opset10 that the
plugin supports, listed in ``myriad_ops.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from splitnet._registry import Registry

__all__ = [
    "ExportTarget",
    "OpViolation",
    "get_target",
    "list_targets",
    "load_myriad_ops",
    "register_target",
]


@dataclass(frozen=True)
class OpViolation:
    """One operation of the IR that a target cannot run.

    Attributes:
        type: op type (``"Interpolate"``).
        version: its opset (``"opset11"``).
        name: its friendly name in the IR (traces back to the ATen op).
        reason: why it is refused.
    """

    type: str
    version: str
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.type}-{self.version.removeprefix('opset')} ({self.name}): {self.reason}"


class ExportTarget:
    """Base class of export targets; subclasses are registered with :func:`register_target`.

    Attributes:
        name: registry name (``"cpu"``).
        device: the OpenVINO device it is meant for (``"CPU"``, ``"MYRIAD"``).
        precision: weight and compute precision of the IR (``"FP16"``).
    """

    name: str = ""
    device: str = "CPU"
    precision: str = "FP16"
    description: str = ""

    def prepare(self, model) -> None:
        """Rewrites ``model`` (an ``openvino.Model``) in place for this target."""

    def violations(self, model) -> list[OpViolation]:
        """What in ``model`` this target cannot run (empty: it is compatible)."""
        return _dynamic_violations(model)

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the target."""
        return {"target": self.name, "device": self.device, "precision": self.precision}


TARGETS: Registry[type[ExportTarget]] = Registry("export target")


def register_target(name: str) -> Callable[[type[ExportTarget]], type[ExportTarget]]:
    """Class decorator registering an :class:`ExportTarget` subclass as ``name``."""

    def decorator(cls: type[ExportTarget]) -> type[ExportTarget]:
        cls.name = name
        TARGETS.add(name, cls)
        return cls

    return decorator


def list_targets() -> list[str]:
    """Registered export target names."""
    return TARGETS.names()


def get_target(name: str) -> ExportTarget:
    """An instance of the target ``name``; an unknown name raises ``UnknownNameError``."""
    return TARGETS.get(name)()


def _dynamic_violations(model) -> list[OpViolation]:
    out = []
    for op in model.get_ordered_ops():
        for o in op.outputs():
            if o.get_partial_shape().is_dynamic:
                out.append(
                    OpViolation(
                        op.get_type_name(),
                        op.get_type_info().version_id,
                        op.get_friendly_name(),
                        f"dynamic output shape {o.get_partial_shape()}",
                    )
                )
                break
    return out


@register_target("cpu")
class CpuTarget(ExportTarget):
    """Any OpenVINO device of today (CPU, GPU, NPU): static shapes, FP16 weights."""

    device = "CPU"
    description = "any current OpenVINO device: static shapes, FP16 weights"


@cache
def load_myriad_ops() -> dict[str, Any]:
    """The supported-operation data of the Myriad X profile (``myriad_ops.json``)."""
    text = resources.files("splitnet.export").joinpath("myriad_ops.json").read_text("utf-8")
    return json.loads(text)


def _opset_number(version_id: str) -> int | None:
    if version_id.startswith("opset") and version_id[5:].isdigit():
        return int(version_id[5:])
    return None


@register_target("myriad")
class MyriadTarget(ExportTarget):
    """Intel Movidius Myriad X (NCS2) through OpenVINO 2022.3 LTS's MYRIAD plugin.

    That runtime reads IR v10/v11 with opset1..opset10 operations and computes
    in FP16. Today's converter writes pooling as MaxPool-14/AvgPool-14; where
    the attributes say the same thing in opset1 (no ``ceil_torch`` rounding, no
    dilation, indices unused) :meth:`prepare` re-emits the opset1 operation.
    """

    device = "MYRIAD"
    description = "Intel Movidius Myriad X via OpenVINO 2022.3 LTS: opset1..10, FP16"

    def prepare(self, model) -> None:
        _downgrade_pooling(model)

    def violations(self, model) -> list[OpViolation]:
        data = load_myriad_ops()
        always = set(data["always_allowed"])
        supported = {t: set(v) for t, v in data["ops"].items()}
        max_opset = int(data["max_opset"])
        out = _dynamic_violations(model)
        for op in model.get_ordered_ops():
            t, v = op.get_type_name(), op.get_type_info().version_id
            n = _opset_number(v)
            if n is None:
                reason = f"not a standard opset operation ({v})"
            elif n > max_opset:
                reason = (
                    f"opset{n} is newer than opset{max_opset}, the last the MYRIAD plugin reads"
                )
            elif t in always:
                continue
            elif t not in supported:
                reason = "not supported by the MYRIAD plugin"
            elif v not in supported[t]:
                reason = f"the MYRIAD plugin takes {t} only as {', '.join(sorted(supported[t]))}"
            else:
                continue
            out.append(OpViolation(t, v, op.get_friendly_name(), reason))
        return out


def _downgrade_pooling(model) -> None:
    """Replaces MaxPool-8/14 and AvgPool-14 by their opset1 forms where that is exact."""
    import openvino.opset1 as opset1

    changed = False
    for op in model.get_ordered_ops():
        t, v = op.get_type_name(), op.get_type_info().version_id
        if t not in ("MaxPool", "AvgPool") or v == "opset1":
            continue
        a = op.get_attributes()
        rounding = str(a.get("rounding_type", "floor")).lower()
        if rounding not in ("floor", "ceil"):
            continue  # CEIL_TORCH has no opset1 equivalent
        common = dict(
            strides=a["strides"],
            pads_begin=a["pads_begin"],
            pads_end=a["pads_end"],
            kernel_shape=a["kernel"],
            rounding_type=rounding,
            auto_pad=a.get("auto_pad", "explicit"),
        )
        if t == "MaxPool":
            if any(d != 1 for d in a.get("dilations", [1])):
                continue
            if len(op.outputs()) > 1 and op.output(1).get_target_inputs():
                continue  # the indices are used
            new = opset1.max_pool(op.input_value(0), **common)
        else:
            new = opset1.avg_pool(op.input_value(0), exclude_pad=a["exclude-pad"], **common)
        new.set_friendly_name(op.get_friendly_name())
        for target in list(op.output(0).get_target_inputs()):
            target.replace_source_output(new.output(0))
        changed = True
    if changed:
        model.validate_nodes_and_infer_types()
