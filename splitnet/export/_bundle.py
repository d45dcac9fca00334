"""``export_bundle``: a split point -> head IR + tail program + manifest."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from splitnet._errors import SplitnetError
from splitnet.bundle import (
    FORMAT_VERSION,
    HEAD_BIN,
    HEAD_XML,
    MANIFEST_FILE,
    TAIL_FILE,
    InputSpec,
    Manifest,
    OutputSpec,
    TensorSpec,
    file_sha256,
)
from splitnet.export._ir import convert_head, normalize_frame
from splitnet.export._parity import DEFAULT_TOLERANCE, ParityError, ParityReport, compare_outputs
from splitnet.export._tail import MAX_BATCH, export_tail
from splitnet.export._targets import OpViolation, get_target
from splitnet.export._variants import Validation, check_target, get_variant, save_head

__all__ = [
    "HEAD_BIN",
    "HEAD_XML",
    "MAX_BATCH",
    "TAIL_FILE",
    "ExportError",
    "ExportResult",
    "export_bundle",
]


class ExportError(SplitnetError):
    """A split that cannot be exported (e.g. an operation the target cannot run)."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_bundle` wrote.

    Attributes:
        bundle_dir: the bundle folder.
        manifest: its manifest.
        parity: OpenVINO against torch on the exported head.
        seconds: wall time of the export.
    """

    bundle_dir: Path
    manifest: Manifest
    parity: ParityReport
    seconds: float


def _resolve_model(model, *, weights, num_classes, model_args) -> tuple[nn.Module, str, Any]:
    from splitnet.models import create_model

    if isinstance(model, str):
        m = create_model(model, num_classes=num_classes, weights=weights, **(model_args or {}))
        return m, model, m.splitnet_info
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a registered name or an nn.Module, got {type(model)}")
    if weights is not None:
        from splitnet.models import load_weights

        load_weights(model, weights)
    name = getattr(model, "splitnet_name", None) or type(model).__name__
    return model.eval(), name, getattr(model, "splitnet_info", None)


def _info_from_output(info, model: nn.Module, x: torch.Tensor):
    """A ``ModelInfo`` for an unregistered module, from the shape of its output."""
    from splitnet.models import ModelInfo

    if info is not None:
        return info
    with torch.no_grad():
        y = model(x)
    if not isinstance(y, torch.Tensor):
        raise ExportError("an unregistered model must return one tensor")
    task = "segmentation" if y.dim() == 4 else "classification"
    return ModelInfo(task=task, num_classes=int(y.shape[1]))


def _versions() -> dict[str, str]:
    import openvino

    import splitnet

    return {
        "splitnet": splitnet.__version__,
        "torch": torch.__version__,
        "openvino": openvino.get_version(),
        "numpy": np.__version__,
    }


def _frames(n: int, spec: InputSpec, seed: int) -> list[np.ndarray]:
    """Uniformly random frames: parity then sees every input value."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=spec.frame_shape, dtype=np.uint8) for _ in range(n)]


def _steel_frames(n: int, spec: InputSpec, seed: int) -> list[np.ndarray]:
    """Synthetic steel frames of the head's frame size, to calibrate the codec on."""
    from splitnet.synthetic import rgb_frames

    h, w, c = spec.frame_shape
    frames = rgb_frames(h, w, seed=seed)
    return [next(frames)[:, :, :c] for _ in range(n)]


def _violation_summary(violations: list[OpViolation]) -> str:
    seen: dict[str, OpViolation] = {}
    for v in violations:
        seen.setdefault(f"{v.type}-{v.version}", v)
    return "; ".join(str(v) for v in seen.values())


def _nearest_compatible(g, point, spec: InputSpec, target) -> Any:
    """The latest split point before ``point`` whose head ``target`` accepts (or None).

    Every head contains the heads of the earlier points, so compatibility only
    ever goes from yes to no along the graph: a bisection finds the boundary.
    """

    def ok(index: int) -> bool:
        p = g.points[index]
        head, _ = g.split(p)
        _, bad = convert_head(
            head, input_spec=spec, output_names=[t.name for t in p.tensors], target=target
        )
        return not bad

    if point.index == 0 or not ok(0):
        return None
    lo, hi = 0, point.index  # ok(lo), not ok(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return g.points[lo]


def _run_ir(xml: Path, frames: list[np.ndarray]) -> list[list[np.ndarray]]:
    """The saved IR on the CPU plugin with FP32 compute (no bf16 on CPUs that have it)."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    out = []
    for f in frames:
        res = req.infer({0: f[None]})
        out.append([np.array(res[o]) for o in compiled.outputs])
    return out


def _codec_section(name: str, options: Mapping[str, Any], calibration_batches) -> dict[str, Any]:
    from splitnet.codec import get_codec

    codec = get_codec(name, **dict(options))
    calibrated_on = 0
    if calibration_batches:
        if not codec.quantizes:
            raise ExportError(
                f"codec {name!r} does not quantize; --calibrate needs a q<bits> codec"
            )
        codec = codec.calibrate(calibration_batches)
        calibrated_on = len(calibration_batches)
    config = codec.config()
    config.pop("name")
    calibration = config.pop("calibration", None)
    return {
        "name": name,
        "options": config,
        "calibration": calibration,
        "calibration_frames": calibrated_on,
    }


def export_bundle(
    model: str | nn.Module,
    *,
    input_shape: tuple[int, int, int],
    split: int | str,
    out_dir: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    target: str = "cpu",
    codec: str = "f16",
    codec_options: Mapping[str, Any] | None = None,
    calibrate: int = 0,
    name: str | None = None,
    num_classes: int | None = None,
    model_args: Mapping[str, Any] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    parity_frames: int = 2,
    overwrite: bool = False,
    progress: bool = False,
    bottleneck: str | os.PathLike | None = None,
    variant: str = "fp16",
    calibration_frames: Sequence[np.ndarray] | None = None,
    calibration_data: str | None = None,
    validation: Validation | None = None,
) -> ExportResult:
    """Exports the split of ``model`` at ``split`` as a deployable bundle.

    Writes ``head.xml``/``head.bin`` (OpenVINO IR, FP16 weights, static
    ``1 x H x W x 3`` uint8 RGB input with the normalisation built in),
    ``tail.pt2`` (``torch.export`` program, dynamic batch 1..64 where the graph
    allows) and ``manifest.json``. The saved IR is run on OpenVINO's CPU plugin
    and compared with the torch head on the same random frames.

    Args:
        model: a registered model name, or an ``nn.Module``.
        input_shape: ``(C, H, W)`` of the model input; C must be 3 (RGB frames).
        split: the split point, by name or index (``splitnet points``).
        out_dir: the bundle folder; it must be empty or absent unless ``overwrite``.
        weights: a local state-dict file.
        target: an export target (:func:`list_targets`): ``"cpu"`` or ``"myriad"``.
        codec, codec_options: the codec for the crossing tensors (``splitnet.codec``).
        calibrate: run this many synthetic frames through the head to fix the
            codec's quantization ranges (quantizing codecs only).
        name: the name a server registers (default ``<model>.<split point>``).
        num_classes, model_args: passed to ``create_model``.
        tolerance: the largest error allowed, relative to each tensor's range.
        parity_frames: random frames compared.
        overwrite: replace the files of an existing bundle folder.
        progress: a progress bar on stderr.
        bottleneck: a checkpoint from ``splitnet train-bottleneck`` for this
            model, split and input: the head then ends with its encoder, the
            codec is its learned entropy model (``"learned"``) and the tail
            starts with its decoder; the teacher's weights come from the
            checkpoint (``weights`` must be ``None``, ``codec`` the default).
        variant: how the head is stored (:func:`splitnet.export.list_variants`):
            ``fp16`` (default), ``fp32``, ``int8-weights``, ``int8`` (calibrated on
            ``calibration_frames``, ``H x W x 3`` uint8; ``calibration_data`` names
            where they came from in the manifest). INT8 variants are checked with a
            looser parity tolerance and refused for ``target="myriad"``.
        validation: held-out frames for ``int8-acc``
            (:class:`splitnet.export.Validation`; its tail is set to the split's).

    Raises:
        ExportError: the head has operations the target cannot run (the message
            names them and the nearest earlier split point that works).
        ParityError: OpenVINO and torch differ by more than ``tolerance``.
        ValueError, OSError: bad arguments, an unknown model, split or codec.

    Example:
        >>> r = export_bundle("unet-vgg16", input_shape=(3, 256, 1600),
        ...                   split="encoder.block3.pool", out_dir="bundle", target="myriad")
        >>> r.parity.ok
        True
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    c, h, w = _check_arguments(out, input_shape, calibrate, parity_frames, overwrite)
    split_section: dict[str, Any] = {}
    if bottleneck is not None:
        model, split, codec, codec_options, split_section = _with_bottleneck(
            bottleneck, model, (c, h, w), split, weights, codec, codec_options
        )
    tgt = get_target(target)
    head_variant = get_variant(variant)
    check_target(head_variant, tgt.name)
    _codec_section(codec, codec_options or {}, None)  # an unknown codec or option fails now

    # traced before the bar starts (under a second): an unknown model, split point or a
    # missing weights file is a one-line error with no bar in front of it
    s = _trace_and_split(model, (c, h, w), split, weights, num_classes, model_args)
    steps = ["convert head", "parity", "export tail", "codec", "manifest"]
    bar = _progress(len(steps), progress)
    try:
        bar.set_description("convert head")
        ov_model = _convert_head(s, tgt, bar)
        bar.update()

        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
        try:
            ov_model, variant_section = save_head(
                ov_model,
                staging / HEAD_XML,
                head_variant,
                calibration_frames,
                calibration=calibration_data,
                validation=None
                if validation is None
                else dataclasses.replace(validation, tail=s.tail.eval()),
            )
            variant_section["parameters"] = sum(p.numel() for p in s.head.parameters())

            bar.set_description("parity")
            report = _check_parity(
                s,
                staging / HEAD_XML,
                parity_frames,
                head_variant.parity_tolerance(tolerance),
                **head_variant.parity_inputs(calibration_frames),
            )
            bar.update()

            bar.set_description("export tail")
            tail_info = export_tail(s.tail, s.crossing, staging / TAIL_FILE)
            bar.update()

            bar.set_description("codec")
            codec_info = _calibrated_codec_section(s, codec, codec_options or {}, calibrate)
            bar.update()

            bar.set_description("manifest")
            manifest = _build_manifest(
                s,
                split_section,
                name=name or _default_name(s, split_section),
                model_args=dict(model_args or {}),
                codec=codec_info,
                head={
                    **_head_section(ov_model, tgt, staging / HEAD_XML, s.crossing),
                    "precision": head_variant.precision,
                    "variant": variant_section,
                },
                tail=tail_info,
                parity=report.to_dict(),
                files={f: file_sha256(staging / f) for f in (HEAD_XML, HEAD_BIN, TAIL_FILE)},
            )
            _publish(staging, out, manifest)
            bar.update()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        bar.close()
    return ExportResult(out, manifest, report, time.perf_counter() - t0)


# ---- the steps of export_bundle, in order --------------------------------------------------


def _check_arguments(
    out: Path, input_shape: tuple[int, int, int], calibrate: int, parity_frames: int, overwrite
) -> tuple[int, int, int]:
    """``(C, H, W)`` once the folder and the numbers are usable; raises :class:`ExportError`."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} is not empty; choose another --out or pass --overwrite")
    c, h, w = (int(v) for v in input_shape)
    if c != 3:
        raise ExportError(f"the device feeds RGB frames, so the input needs 3 channels, got {c}")
    if calibrate < 0 or parity_frames < 1:
        raise ExportError("calibrate must be >= 0 and parity_frames >= 1")
    return c, h, w


@dataclass(frozen=True)
class _Split:
    """A traced model cut at one point: what every later step of the export reads."""

    model_name: str
    info: Any  # splitnet.models.ModelInfo
    graph: Any  # splitnet.split graph
    point: Any  # its SplitPoint
    head: nn.Module
    tail: nn.Module
    spec: InputSpec
    crossing: tuple[TensorSpec, ...]


def _trace_and_split(model, shape, split, weights, num_classes, model_args) -> _Split:
    """Resolves the model, traces it at ``shape`` and cuts it at ``split``."""
    from splitnet.split import trace

    c, h, w = shape
    net, model_name, info = _resolve_model(
        model, weights=weights, num_classes=num_classes, model_args=model_args
    )
    x = torch.zeros(1, c, h, w)
    info = _info_from_output(info, net, x)
    g = trace(net, x, name=model_name)
    point = g.point(split)
    head, tail = g.split(point)
    spec = InputSpec(
        shape=(c, h, w),
        frame_shape=(h, w, c),
        mean=tuple(float(v) for v in info.mean),
        std=tuple(float(v) for v in info.std),
    )
    crossing = tuple(TensorSpec(t.name, tuple(t.shape), t.dtype) for t in point.tensors)
    return _Split(model_name, info, g, point, head, tail, spec, crossing)


def _convert_head(s: _Split, tgt, bar):
    """The head as an ``openvino.Model`` that ``tgt`` can run, or :class:`ExportError`.

    The error names the operations the target lacks and the nearest earlier
    split point whose head it accepts.
    """
    ov_model, violations = convert_head(
        s.head, input_spec=s.spec, output_names=[t.name for t in s.crossing], target=tgt
    )
    if violations:
        bar.set_description("search compatible point")
        ok = _nearest_compatible(s.graph, s.point, s.spec, tgt)
        hint = (
            f"the nearest earlier compatible split point is {ok.name!r} (index {ok.index})"
            if ok is not None
            else "no earlier split point is compatible"
        )
        raise ExportError(
            f"the head of {s.model_name} at {s.point.name!r} cannot run on target {tgt.name!r}: "
            f"{_violation_summary(violations)}; {hint}"
        )
    return ov_model


def _head_outputs(s: _Split, frames: list[np.ndarray]) -> list[list[np.ndarray]]:
    """The torch head's crossing tensors for each raw frame."""
    with torch.no_grad():
        return [[t.numpy() for t in s.head(normalize_frame(f, s.spec))] for f in frames]


def _check_parity(
    s: _Split,
    xml: Path,
    n_frames: int,
    tolerance: float,
    *,
    frames: list[np.ndarray] | None = None,
    metric: str = "max_rel",
) -> ParityReport:
    """The saved IR against the torch head on ``frames`` (default: ``n_frames`` random
    ones); :class:`ParityError` when ``metric`` exceeds ``tolerance``."""
    frames = _frames(n_frames, s.spec, seed=0) if frames is None else list(frames)
    report = compare_outputs(
        [t.name for t in s.crossing],
        _run_ir(xml, frames),
        _head_outputs(s, frames),
        tolerance=tolerance,
        metric=metric,
    )
    if not report.ok:
        w = report.worst
        if metric == "max_rel":
            what = f"max abs error {w.max_abs:.3g}, relative {w.max_rel:.3g}"
        else:
            what = f"relative RMS error {w.rel_rmse:.3g} (max abs error {w.max_abs:.3g})"
        raise ParityError(
            f"OpenVINO and torch differ beyond the tolerance: {w.name} {what} > {tolerance:g}"
        )
    return report


def _calibrated_codec_section(
    s: _Split, codec: str, options: Mapping[str, Any], calibrate: int
) -> dict[str, Any]:
    """The manifest's codec section, calibrated on ``calibrate`` synthetic steel frames.

    The crossing tensors of steel frames, not of noise: that is what the codec will see.
    """
    calibration = None
    if calibrate:
        calibration = _head_outputs(s, _steel_frames(calibrate, s.spec, seed=0))
    return _codec_section(codec, options, calibration)


def _build_manifest(s: _Split, split: dict[str, Any], **sections: Any) -> Manifest:
    """The manifest of the split ``s``; ``split`` amends its split section, ``sections``
    are the fields the other steps made."""
    return Manifest(
        format_version=FORMAT_VERSION,
        model=s.model_name,
        task=s.info.task,
        num_classes=int(s.info.num_classes),
        split={**_split_section(s), **split},
        input=s.spec,
        crossing=s.crossing,
        output=_output_spec(s.info),
        versions=_versions(),
        **sections,
    )


def _default_name(s: _Split, split_section: dict[str, Any]) -> str:
    """``<model>.<split point>``, and ``.bottleneck`` after it for a bottleneck's bundle."""
    if "bottleneck" in split_section:
        return f"{s.model_name}.{split_section['name']}.bottleneck"
    return f"{s.model_name}.{s.point.name}"


def _with_bottleneck(path, model, shape, split, weights, codec, codec_options):
    """The model with the checkpoint's bottleneck, split at its latent, with its codec.

    Returns ``(model, split, codec, codec_options, split_section)``; the split
    section names the teacher's split point and describes the bottleneck.
    """
    from splitnet.bottleneck import LATENT_POINT, load_bottleneck

    if weights is not None:
        raise ExportError("--bottleneck brings the teacher's weights; drop --weights")
    if codec not in ("f16", "learned") or codec_options:
        raise ExportError("--bottleneck brings its own codec (learned); drop --codec")
    name = model if isinstance(model, str) else getattr(model, "splitnet_name", None)
    split_name = split if isinstance(split, str) else None
    bn, state = load_bottleneck(path, model=name, split=split_name, input_shape=shape)
    bn.prior = None  # the device's codec rounds the latent; the tail takes what it decodes
    section = {
        "name": state["split"],
        "index": state["split_index"],
        "bottleneck": {
            "latent_point": LATENT_POINT,
            "latent_channels": state["config"]["bottleneck"]["latent_channels"],
            "latent_stride": state["latent_stride"],
            "beta": state["beta"],
            "checkpoint_sha256": file_sha256(path),
        },
    }
    return bn, LATENT_POINT, "learned", {"tables": state["tables"]}, section


def _split_section(s: _Split) -> dict[str, Any]:
    p = s.point
    return {
        "index": p.index,
        "name": p.name,
        "kind": p.kind,
        "op": p.op,
        "points": len(s.graph.points),
    }


def _output_spec(info) -> OutputSpec:
    return OutputSpec(
        kind="mask" if info.task == "segmentation" else "classes",
        multilabel=bool(info.multilabel),
        class_names=tuple(info.class_names) or tuple(f"class_{i}" for i in range(info.num_classes)),
    )


def _head_section(ov_model, tgt, xml: Path, crossing: tuple[TensorSpec, ...]) -> dict[str, Any]:
    """The manifest's head section: files, target, IR version, names and operations."""
    opsets = sorted(
        {
            f"{op.get_type_name()}-{op.get_type_info().version_id}"
            for op in ov_model.get_ordered_ops()
        }
    )
    return {
        "xml": HEAD_XML,
        "bin": HEAD_BIN,
        **tgt.describe(),
        "ir_version": _ir_version(xml),
        "input_name": ov_model.inputs[0].get_any_name(),
        "output_names": [t.name for t in crossing],
        "converter": "openvino.convert_model(torch.export.export(head))",
        "operations": opsets,
    }


def _publish(staging: Path, out: Path, manifest: Manifest) -> None:
    """Writes the manifest, then moves every file from ``staging`` into ``out``."""
    (staging / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    for f in (*manifest.files, MANIFEST_FILE):
        os.replace(staging / f, out / f)


def _ir_version(xml: Path) -> int:
    import re

    with open(xml, encoding="utf-8") as f:
        head = f.read(512)
    m = re.search(r'<net [^>]*version="(\d+)"', head)
    return int(m.group(1)) if m else 0


class _NoBar:
    def set_description(self, _: str) -> None: ...

    def update(self, _: int = 1) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="step", leave=False)
