"""Head variants: how a head's IR is stored and quantized (issue 14, the seed 000 table).

Every variant starts from the same float ``openvino.Model`` that the converter made
(the frame's normalisation built in) and is parity-checked against the float torch
head it came from, with a tolerance that fits what the variant does to the numbers:

* ``fp32``: float weights as converted;
* ``fp16``: weights stored as FP16 (OpenVINO's ``compress_to_fp16``; the default
  of every export, and the only precision the MYRIAD plugin runs);
* ``int8-weights``: weight-only INT8 (``nncf.compress_weights``, asymmetric, per
  channel); activations stay float;
* ``int8``: weights and activations INT8 (``nncf.quantize`` post-training
  quantization, fast bias correction on) from calibration frames of ``--data``.

NNCF and OpenVINO do the work; this module chooses, records and checks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitnet._errors import ConfigError
from splitnet._registry import Registry

__all__ = [
    "HEAD_VARIANTS",
    "HeadVariant",
    "Validation",
    "get_variant",
    "list_variants",
    "save_head",
]


@dataclass(frozen=True)
class HeadVariant:
    """How a head's IR is stored.

    Attributes:
        name: the registry name (``--variants``).
        weights: the weights' storage type (``f32``, ``f16``, ``i8``).
        activations: the activations' type at run time on a CPU (``f32``, ``i8``).
        tolerance: the parity tolerance (relative to each tensor's range) it must meet;
            None: the export's own (``tolerance=``).
        needs_data: it needs calibration frames.
        transform: ``(model, frames, validation) -> model``, before saving.
        compress_to_fp16: how ``openvino.save_model`` stores the float constants left.
    """

    name: str
    weights: str
    activations: str
    tolerance: float | None
    needs_data: bool
    transform: Callable[[Any, Sequence[np.ndarray] | None, Validation | None], Any]
    compress_to_fp16: bool
    description: str = ""
    parity_metric: str = "max_rel"

    def parity_inputs(self, frames: Sequence[np.ndarray] | None) -> dict[str, Any]:
        """How its parity is checked: INT8 by the relative RMS error (its largest single
        error says little), on (up to 8 of) the calibration frames where it has them;
        float variants by the largest error relative to each tensor's range, on random
        frames."""
        if self.parity_metric == "max_rel" or not frames:
            return {"metric": self.parity_metric}
        return {"metric": self.parity_metric, "frames": list(frames[:8])}

    def parity_tolerance(self, tolerance: float) -> float:
        """The tolerance its parity check uses, given the export's."""
        return tolerance if self.tolerance is None else max(tolerance, self.tolerance)

    @property
    def precision(self) -> str:
        """The manifest's ``head.precision``: ``FP32``, ``FP16``, ``INT8`` (weights only:
        ``INT8-weights``)."""
        if self.activations == "i8":
            return "INT8"
        return {"f32": "FP32", "f16": "FP16", "i8": "INT8-weights"}[self.weights]

    @property
    def int8(self) -> bool:
        return "i8" in (self.weights, self.activations)


HEAD_VARIANTS: Registry[HeadVariant] = Registry("head variant")


@dataclass(frozen=True)
class Validation:
    """Held-out frames and what scores them, for accuracy-aware quantization.

    Attributes:
        frames: ``H x W x 3`` uint8 frames.
        targets: their labels (class indices) or masks (``C x H x W``).
        task: ``classification`` (top-1) or ``segmentation`` (mean Dice).
        num_classes: the model's classes.
        tail: the torch tail that turns the head's outputs into logits (None: the head's
            output is the logits, a device-only model). The codec is not applied.
        max_drop: the largest drop of the metric allowed, absolute (0.005: half a point).
    """

    frames: Sequence[np.ndarray]
    targets: Sequence[Any]
    task: str
    num_classes: int
    tail: Any = None
    max_drop: float = 0.005

    def score(self, compiled, items) -> tuple[float, list[float]]:
        """NNCF's ``validation_fn``: the metric over ``items`` and each item's own score."""
        import torch

        from splitnet.train._eval import make_meter

        total = make_meter(self.task, self.num_classes)
        each = []
        for frame, target in items:
            res = compiled([frame[None]])
            outs = [np.asarray(res[o]) for o in compiled.outputs]
            if self.tail is None:
                logits = torch.from_numpy(outs[0])
            else:
                with torch.inference_mode():
                    logits = self.tail(*(torch.from_numpy(o) for o in outs)).float()
            t = torch.as_tensor(target)[None]
            one = make_meter(self.task, self.num_classes)
            for meter in (total, one):
                meter.update(logits, t)
            each.append(_primary(one.compute()))
        return _primary(total.compute()), each


def _primary(metrics: dict) -> float:
    return float(metrics["top1"] if "top1" in metrics else metrics["mean_dice"])


def _same(model, frames, validation):
    return model


def _nncf():
    try:
        import nncf
    except ImportError:
        raise ConfigError(
            "INT8 variants need NNCF: pip install 'splitnet[research]' (or pip install nncf)"
        ) from None
    logging.getLogger("nncf").setLevel(logging.ERROR)
    return nncf


def _compress_weights(model, frames, validation):
    nncf = _nncf()
    return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)


def _quantize(model, frames, validation):
    nncf = _nncf()
    items = [np.ascontiguousarray(f)[None] for f in frames]
    return nncf.quantize(
        model,
        nncf.Dataset(items),
        subset_size=len(items),
        fast_bias_correction=True,
    )


def _quantize_with_accuracy_control(model, frames, validation):
    """``nncf.quantize_with_accuracy_control``: INT8, then layers back to float, the most
    harmful first, until the held-out metric is within ``max_drop`` of the float model's."""
    nncf = _nncf()
    if validation is None:
        raise ConfigError("variant int8-acc needs held-out labelled frames (--data)")
    items = [np.ascontiguousarray(f)[None] for f in frames]
    held = list(zip(validation.frames, validation.targets, strict=True))
    return nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset(items),
        nncf.Dataset(held),
        validation.score,
        max_drop=validation.max_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(items),
        fast_bias_correction=True,
    )


# the tolerances are relative to each crossing tensor's range (see export/_parity.py)
for _v in (
    HeadVariant("fp32", "f32", "f32", None, False, _same, False, "float weights"),
    HeadVariant("fp16", "f16", "f32", None, False, _same, True, "FP16 weights (the default)"),
    HeadVariant(
        "int8-weights",
        "i8",
        "f32",
        0.1,
        False,
        _compress_weights,
        False,
        "weight-only INT8 (nncf.compress_weights, INT8_ASYM)",
        parity_metric="rel_rmse",
    ),
    HeadVariant(
        "int8",
        "i8",
        "i8",
        0.2,
        True,
        _quantize,
        False,
        "INT8 weights and activations (nncf.quantize, calibrated, fast bias correction)",
        parity_metric="rel_rmse",
    ),
    HeadVariant(
        "int8-acc",
        "i8",
        "i8",
        0.2,
        True,
        _quantize_with_accuracy_control,
        False,
        "int8 with a bounded held-out drop (nncf.quantize_with_accuracy_control)",
        parity_metric="rel_rmse",
    ),
):
    HEAD_VARIANTS.add(_v.name, _v)


def list_variants() -> list[str]:
    return HEAD_VARIANTS.names()


def get_variant(name: str) -> HeadVariant:
    """The variant ``name``; ``UnknownNameError`` listing the valid ones otherwise."""
    return HEAD_VARIANTS.get(name)


def check_target(variant: HeadVariant, target_name: str) -> None:
    """``ConfigError`` for a variant the target cannot run (INT8 on the MYRIAD plugin)."""
    if variant.int8 and target_name == "myriad":
        raise ConfigError(
            f"variant {variant.name!r} is INT8, and the MYRIAD plugin runs FP16 only: "
            "use fp16 (the default) for --target myriad"
        )


def save_head(
    model,
    xml: Path,
    variant: HeadVariant,
    frames: Sequence[np.ndarray] | None = None,
    *,
    calibration: str | None = None,
    validation: Validation | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Transforms ``model`` as ``variant`` says and saves it at ``xml``: the saved model
    and the manifest's ``head.variant`` section.

    Args:
        frames: calibration frames (``H x W x 3`` uint8), required by ``int8``.
        calibration: where they came from (a ``--data`` spec), for the record.
    """
    import openvino as ov

    if variant.needs_data and not frames:
        raise ConfigError(f"variant {variant.name!r} needs calibration frames (--data)")
    out = variant.transform(model, frames, validation)
    ov.save_model(out, xml, compress_to_fp16=variant.compress_to_fp16)
    section: dict[str, Any] = {
        "name": variant.name,
        "weights": variant.weights,
        "activations": variant.activations,
    }
    if variant.needs_data:
        section["calibration"] = {"data": calibration, "frames": len(frames or ())}
    if variant.transform is _quantize_with_accuracy_control:
        section["accuracy_control"] = {
            "max_drop": validation.max_drop,
            "frames": len(validation.frames),
            "float_layers": _float_layers(out),
        }
    return out, section


def _float_layers(model) -> int:
    """Convolutions and matrix products left without a quantizer on their input."""
    count = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul"):
            src = op.input_value(0).get_node()
            if src.get_type_name() != "FakeQuantize":
                count += 1
    return count
