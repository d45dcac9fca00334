"""The planner's two baselines as bundles: the whole model on the device, or on the server.

* ``device-only``: the whole model is the head IR (the frame's normalisation built
  in, as in a split bundle); no tail, no codec. ``splitnet device --bundle B`` runs it
  without a server and post-processes the logits on the device.
* ``image``: no head. The device codes the raw frame as PNG or JPEG
  (:mod:`splitnet.codec._image`); the tail is the whole model, normalisation
  included, on the decoded ``N x H x W x 3`` frame. ``splitnet serve`` serves it next
  to split bundles, on the same KServe v2 wire.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from splitnet.bundle import (
    FORMAT_VERSION,
    HEAD_BIN,
    HEAD_XML,
    TAIL_FILE,
    InputSpec,
    Manifest,
    TensorSpec,
    file_sha256,
)
from splitnet.export._bundle import (
    ExportError,
    ExportResult,
    _check_arguments,
    _check_parity,
    _head_section,
    _info_from_output,
    _output_spec,
    _publish,
    _resolve_model,
    _Split,
    _versions,
)
from splitnet.export._ir import convert_head
from splitnet.export._parity import DEFAULT_TOLERANCE, ParityReport, TensorParity
from splitnet.export._tail import export_tail
from splitnet.export._targets import get_target
from splitnet.export._variants import Validation, check_target, get_variant, save_head
from splitnet.models._preprocess import Normalize

__all__ = ["WHOLE_MODES", "export_whole", "parse_image_codec"]

WHOLE_MODES = ("device-only", "image")
FRAME = "frame"  # the crossing tensor of an image bundle: the raw frame


class _AsTuple(nn.Module):
    """The model with its output as a 1-tuple: a head's outputs are a tuple of tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.model(x),)


class ImageTail(nn.Module):
    """``N x H x W x 3`` samples (0..255, float) -> the model's output: the layout change,
    the normalisation of training (``(x / 255 - mean) / std``) and the whole model."""

    def __init__(self, model: nn.Module, spec: InputSpec) -> None:
        super().__init__()
        self.model = model
        norm = Normalize(spec, scale=spec.scale)
        self.register_buffer("mean", norm.mean * spec.scale)
        self.register_buffer("std", norm.std * spec.scale)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        x = frame.permute(0, 3, 1, 2)
        return self.model((x - self.mean) / self.std)


def parse_image_codec(text: str) -> tuple[str, dict]:
    """``"png"``, ``"jpeg"`` or ``"jpeg:95"`` -> ``(codec, options)``; :class:`ExportError` else."""
    name, _, quality = str(text).strip().lower().partition(":")
    if name == "png" and not quality:
        return "png", {}
    if name == "jpeg":
        if not quality:
            return "jpeg", {"quality": 95}
        if quality.isdigit() and 1 <= int(quality) <= 100:
            return "jpeg", {"quality": int(quality)}
    raise ExportError(f"--image-codec must be png, jpeg or jpeg:QUALITY (1..100), got {text!r}")


def export_whole(
    model: str | nn.Module,
    *,
    input_shape: tuple[int, int, int],
    out_dir: str | os.PathLike,
    mode: str,
    image_codec: str = "png",
    weights: str | os.PathLike | None = None,
    target: str = "cpu",
    name: str | None = None,
    num_classes: int | None = None,
    model_args: dict | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    parity_frames: int = 2,
    overwrite: bool = False,
    variant: str = "fp16",
    calibration_frames: Sequence[np.ndarray] | None = None,
    calibration_data: str | None = None,
    validation: Validation | None = None,
) -> ExportResult:
    """Exports the whole model as a ``device-only`` or an ``image`` bundle.

    Args:
        model, input_shape, weights, target, num_classes, model_args, tolerance,
        parity_frames, overwrite, variant, calibration_frames, calibration_data, validation: as
            :func:`splitnet.export.export_bundle` (the variant applies to device-only).
        out_dir: the bundle folder.
        mode: ``"device-only"`` (the whole model as the head IR) or ``"image"``
            (no head; the whole model as the tail, on the frame sent as an image).
        image_codec: for ``image``: ``png``, ``jpeg`` or ``jpeg:QUALITY``.
        name: the name a server registers (default ``<model>.device-only``,
            ``<model>.image-png``, ``<model>.image-jpeg95``: one per codec, so that a
            server serves several).

    Raises:
        ExportError: an unknown mode or image codec; a head the target cannot run.
        ParityError: OpenVINO and torch differ beyond ``tolerance`` (device-only).

    Example:
        >>> export_whole("unet-vgg16", input_shape=(3, 64, 384), out_dir="b", mode="image",
        ...              image_codec="jpeg:95").manifest.name
        'unet-vgg16.image-jpeg95'
    """
    t0 = time.perf_counter()
    if mode not in WHOLE_MODES:
        raise ExportError(f"unknown mode {mode!r}; modes: {', '.join(WHOLE_MODES)}")
    out = Path(out_dir)
    c, h, w = _check_arguments(out, input_shape, 0, parity_frames, overwrite)
    head_variant = get_variant(variant)
    if mode == "image" and variant != "fp16":
        raise ExportError("an image bundle has no head: --variant applies to device-only bundles")
    check_target(head_variant, target)
    codec, options = parse_image_codec(image_codec) if mode == "image" else ("none", {})
    net, model_name, info = _resolve_model(
        model, weights=weights, num_classes=num_classes, model_args=model_args
    )
    info = _info_from_output(info, net, torch.zeros(1, c, h, w))
    spec = InputSpec(
        shape=(c, h, w),
        frame_shape=(h, w, c),
        mean=tuple(float(v) for v in info.mean),
        std=tuple(float(v) for v in info.std),
        embedded=mode == "device-only",
    )
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        if mode == "device-only":
            sections, files, report = _device_only(
                net,
                spec,
                target,
                staging,
                head_variant.parity_tolerance(tolerance),
                parity_frames,
                variant=(head_variant, calibration_frames, calibration_data, validation),
            )
            default = f"{model_name}.device-only"
        else:
            sections, files, report = _image(net, spec, codec, options, staging, parity_frames)
            suffix = codec if codec == "png" else f"jpeg{options['quality']}"
            default = f"{model_name}.image-{suffix}"
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            name=name or default,
            model=model_name,
            model_args=dict(model_args or {}),
            task=info.task,
            num_classes=int(info.num_classes),
            split={"index": -1, "name": mode, "kind": mode, "op": "", "points": 0},
            input=spec,
            output=_output_spec(info),
            versions=_versions(),
            parity=report.to_dict(),
            files={f: file_sha256(staging / f) for f in files},
            mode=mode,
            **sections,
        )
        _publish(staging, out, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(out, manifest, report, time.perf_counter() - t0)


def _device_only(
    net, spec: InputSpec, target: str, staging: Path, tolerance, parity_frames, *, variant
):

    c, h, w = spec.shape
    with torch.no_grad():
        y = net(torch.zeros(1, c, h, w))
    crossing = (TensorSpec("logits", tuple(y.shape), "float32"),)
    head = _AsTuple(net).eval()
    tgt = get_target(target)
    ov_model, violations = convert_head(head, input_spec=spec, output_names=["logits"], target=tgt)
    if violations:
        raise ExportError(
            f"the whole model cannot run on target {tgt.name!r}: "
            + "; ".join(sorted({str(v) for v in violations}))
        )
    head_variant, frames, data, validation = variant
    ov_model, variant_section = save_head(
        ov_model, staging / HEAD_XML, head_variant, frames, calibration=data, validation=validation
    )
    variant_section["parameters"] = sum(p.numel() for p in net.parameters())
    s = _Split("", None, None, None, head, None, spec, crossing)
    report = _check_parity(
        s, staging / HEAD_XML, parity_frames, tolerance, **head_variant.parity_inputs(frames)
    )
    sections = {
        "crossing": crossing,
        "codec": {"name": "none", "options": {}, "calibration": None, "calibration_frames": 0},
        "head": {
            **_head_section(ov_model, tgt, staging / HEAD_XML, crossing),
            "precision": head_variant.precision,
            "variant": variant_section,
        },
        "tail": {},
    }
    return sections, (HEAD_XML, HEAD_BIN), report


def _image(net, spec: InputSpec, codec: str, options: dict, staging: Path, parity_frames: int):
    from splitnet.codec import get_codec

    get_codec(codec, **options)  # an invalid option fails before the export
    h, w, c = spec.frame_shape
    crossing = (TensorSpec(FRAME, (1, h, w, c), "uint8"),)
    tail = ImageTail(net, spec).eval()
    sections = {
        "crossing": crossing,
        "codec": {"name": codec, "options": options, "calibration": None, "calibration_frames": 0},
        "head": {"frame": FRAME},
        "tail": export_tail(tail, crossing, staging / TAIL_FILE),
    }
    report = _tail_parity(net, spec, staging / TAIL_FILE, parity_frames)
    if not report.ok:
        raise ExportError(f"the exported image tail differs from the model: {report}")
    return sections, (TAIL_FILE,), report


def _tail_parity(net, spec: InputSpec, path: Path, n_frames: int) -> ParityReport:
    """The saved tail program on raw frames against the model on the frames normalised as
    in training (the parity of the export's normalisation and layout change)."""
    from splitnet.export._bundle import _frames
    from splitnet.export._ir import normalize_frame

    program = torch.export.load(path).module()
    max_abs = scale = 0.0
    with torch.no_grad():
        for f in _frames(n_frames, spec, seed=0):
            ref = net(normalize_frame(f, spec))
            got = program(torch.from_numpy(f[None]).float())
            max_abs = max(max_abs, float((got - ref).abs().max()))
            scale = max(scale, float(ref.abs().max()))
    rel = max_abs / scale if scale > 0 else 0.0
    return ParityReport(
        tensors=(TensorParity("output", max_abs, rel),),
        tolerance=1e-4,  # the same float32 arithmetic in another order
        frames=n_frames,
        device="torch",
    )
