"""Readers of the planner's inputs: the JSON files that splitnet's measurements write.

* ``splitnet profile --measure-fps --json P.json``: per split point the head's
  device FPS (OpenVINO, as ``bench-head``), the tail's latency in torch, the head's
  weights and peak activations; ``whole_model`` (the whole model as one head, the
  device-only baseline) and ``model_latency_ms`` (the whole model in torch).
* ``splitnet profile --measure-tail cpu|cuda --json S.json`` run on the server: the
  same document with the tails and the whole model timed on the server's device.
* ``splitnet bench-head DIR --json``: one bundle's head on the real device; it
  replaces the profile's head time at that split point.
* ``splitnet rate-accuracy``'s ``results.json``: per split point x codec the
  measured bytes per frame, the metric drop and (since they are recorded) the
  codec's encode and decode times; the image sent as PNG/JPEG; learned
  bottlenecks as ``learned-beta<B>`` rows.

Torch-free: these are plain JSON readers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitnet.plan._errors import PlanError

__all__ = [
    "CodecRow",
    "HeadTiming",
    "PointTiming",
    "Profile",
    "RateAccuracy",
    "check_same_model",
    "read_device_files",
    "read_profile",
    "read_rate_accuracy",
]


@dataclass(frozen=True)
class PointTiming:
    """What a profile measured at one split point.

    Attributes:
        name, index: the split point.
        elements: elements crossing the cut (batch 1).
        head_ms: the head's latency on the device (``1000 / device_fps``), ``None``
            when not measured.
        tail_ms: the tail's latency in torch, ``None`` when not measured.
        device_memory_bytes: the head's FP16 weights (what a bundle holds) plus its
            peak float32 activations (an upper bound; see ``splitnet profile``).
    """

    name: str
    index: int
    elements: int
    head_ms: float | None
    tail_ms: float | None
    device_memory_bytes: int


@dataclass(frozen=True)
class Profile:
    """A ``splitnet profile --json`` document, as the planner uses it.

    Attributes:
        path: the file.
        model, input: the model's name and ``(C, H, W)``.
        points: by split point name.
        whole: the whole model as one head on the device (``None``: not measured).
        model_ms: the whole model in torch on ``tail_device`` (``None``: not measured).
        tail_device: where the tails were timed (``cpu``, ``cuda``).
    """

    path: str
    model: str
    input: tuple[int, ...]
    points: dict[str, PointTiming]
    whole: PointTiming | None
    model_ms: float | None
    tail_device: str | None


@dataclass(frozen=True)
class HeadTiming:
    """A ``splitnet bench-head --json`` document: one bundle's head on a device."""

    path: str
    model: str
    input: tuple[int, ...]
    split: str
    codec: str
    head_ms: float
    device: str


@dataclass(frozen=True)
class CodecRow:
    """One way of sending a frame, as a rate-accuracy sweep measured it.

    Attributes:
        split: the split point (``None``: the image itself, the whole model on the server).
        codec: the codec (``q4``, ``learned-beta0.01``) or image format (``png``, ``jpeg95``).
        elements: elements coded per frame (crossing elements, or the input's samples).
        payload_bytes: mean bytes per frame the codec produced.
        drop_points: the metric's drop against the uncompressed model, in points.
        encode_ms, decode_ms: the codec's mean times per frame (``None``: not recorded).
    """

    split: str | None
    codec: str
    elements: int
    payload_bytes: float
    drop_points: float
    encode_ms: float | None
    decode_ms: float | None


@dataclass(frozen=True)
class RateAccuracy:
    """A rate-accuracy ``results.json``: the codec rows and the image rows."""

    path: str
    model: str
    input: tuple[int, ...]
    metric: str
    rows: tuple[CodecRow, ...]
    images: tuple[CodecRow, ...]
    elements: dict[str, int]  # crossing elements by split point


def _load(path: str | os.PathLike) -> dict:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(f"{os.fspath(path)}: no such file") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise PlanError(f"{os.fspath(path)} is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise PlanError(f"{os.fspath(path)} holds a JSON {type(doc).__name__}, not an object")
    return doc


def _kind(doc: dict) -> str:
    """``profile``, ``bench-head``, ``rate-accuracy`` or ``unknown``."""
    if "latency_ms_mean" in doc and "fps" in doc:
        return "bench-head"
    points = doc.get("points")
    if isinstance(points, list) and "baselines" in doc:
        return "rate-accuracy"
    if isinstance(points, list) and "baseline" in doc:
        return "profile"
    return "unknown"


def _load_kind(path: str, wanted: tuple[str, ...], usage: str) -> tuple[dict, str]:
    """The document at ``path`` and its kind, which must be one of ``wanted``."""
    doc = _load(path)
    kind = _kind(doc)
    if kind not in wanted:
        what = f"a {kind} file" if kind != "unknown" else "not a file splitnet wrote"
        raise PlanError(f"{path} is {what}, not {usage}")
    return doc, kind


def _need(doc: dict, key: str, path: str, what: str) -> Any:
    try:
        return doc[key]
    except (KeyError, TypeError):
        raise PlanError(f"{path}: no {key!r} in a {what} (is it the right file?)") from None


def _number(x: Any, path: str, key: str) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise PlanError(f"{path}: {key} must be a number, got {x!r}")
    return float(x)


def _shape(doc: dict, path: str, what: str) -> tuple[int, ...]:
    shape = _need(doc, "input", path, what)
    if not isinstance(shape, list) or len(shape) != 3 or not all(isinstance(d, int) for d in shape):
        raise PlanError(f"{path}: input must be [C, H, W], got {shape!r}")
    return tuple(shape)


def _point(d: dict, path: str) -> PointTiming:
    what = "profile point"
    fps = _number(d.get("device_fps"), path, "device_fps")
    params = _need(d, "device_param_bytes", path, what)
    return PointTiming(
        name=str(_need(d, "name", path, what)),
        index=int(_need(d, "index", path, what)),
        elements=int(_need(d, "elements", path, what)),
        head_ms=1000.0 / fps if fps else None,
        tail_ms=_number(d.get("tail_latency_ms"), path, "tail_latency_ms"),
        device_memory_bytes=int(_need(params, "float16", path, what))
        + int(_need(d, "peak_activation_bytes", path, what)),
    )


def read_profile(path: str | os.PathLike) -> Profile:
    """Reads a ``splitnet profile --json`` file.

    Raises:
        PlanError: a missing file, not JSON, or another kind of document.
    """
    path = os.fspath(path)
    doc, _ = _load_kind(
        path, ("profile",), "a profile (splitnet profile --measure-fps --json FILE)"
    )
    points = [_point(d, path) for d in doc["points"]]
    whole = _point(doc["whole_model"], path) if doc.get("whole_model") else None
    if whole is None:
        # a profile that includes the last point: its head is the whole model
        last = [
            _point(d, path)
            for d in doc["points"]
            if d.get("server_macs") == 0 and d.get("device_fps")
        ]
        whole = last[-1] if last else None
    return Profile(
        path=path,
        model=str(_need(doc, "model", path, "profile")),
        input=_shape(doc, path, "profile"),
        points={p.name: p for p in points},
        whole=whole,
        model_ms=_number(doc.get("model_latency_ms"), path, "model_latency_ms"),
        tail_device=doc.get("tail_device"),
    )


def _head_timing(doc: dict, path: str) -> HeadTiming:
    what = "bench-head --json document"
    if "split" not in doc:
        raise PlanError(
            f"{path}: this bench-head JSON does not say which bundle it timed; "
            "write it again with this version's splitnet bench-head --json"
        )
    return HeadTiming(
        path=path,
        model=str(_need(doc, "model", path, what)),
        input=_shape(doc, path, what),
        split=str(doc["split"]),
        codec=str(_need(doc, "codec", path, what)),
        head_ms=float(_need(doc, "latency_ms_mean", path, what)),
        device=str(doc.get("device", "")),
    )


def read_device_files(paths: list[str]) -> tuple[Profile, list[HeadTiming]]:
    """The device side: one profile and any number of bench-head documents.

    A bench-head timing replaces the profile's head time at its split point (a
    bundle with a learned codec: at that point's ``learned-*`` rows, whose head
    includes the bottleneck's encoder).

    Raises:
        PlanError: not exactly one profile among ``paths``, a file of another kind,
            or bench-head timings of another model or input than the profile's.
    """
    profiles, heads = [], []
    for path in map(os.fspath, paths):
        doc, kind = _load_kind(
            path, ("profile", "bench-head"), "a profile or bench-head --json document"
        )
        if kind == "bench-head":
            heads.append(_head_timing(doc, path))
        else:
            profiles.append(read_profile(path))
    if len(profiles) != 1:
        raise PlanError(
            f"--profile needs exactly one splitnet profile --json file, got {len(profiles)} "
            f"among {', '.join(map(str, paths))}"
        )
    profile = profiles[0]
    for h in heads:
        check_same_model(profile.path, profile.model, profile.input, h.path, h.model, h.input)
    return profile, heads


def read_rate_accuracy(path: str | os.PathLike) -> RateAccuracy:
    """Reads a ``splitnet rate-accuracy`` ``results.json``.

    Raises:
        PlanError: a missing file, not JSON, or another kind of document.
    """
    path = os.fspath(path)
    doc, _ = _load_kind(path, ("rate-accuracy",), "a rate-accuracy results.json")
    what = "rate-accuracy results.json"
    shape = _shape(doc, path, what)
    rows, elements = [], {}
    for p in doc["points"]:
        name = str(_need(p, "name", path, what))
        elements[name] = int(_need(p, "elements", path, what))
        for r in _need(p, "results", path, what):
            rows.append(_row(r, name, str(_need(r, "codec", path, what)), elements[name], path))
    samples = shape[0] * shape[1] * shape[2]
    images = [
        _row(b, None, str(_need(b, "name", path, what)), samples, path) for b in doc["baselines"]
    ]
    return RateAccuracy(
        path=path,
        model=str(_need(doc, "model", path, what)),
        input=shape,
        metric=str(_need(doc, "metric", path, what)),
        rows=tuple(rows),
        images=tuple(images),
        elements=elements,
    )


def _row(r: dict, split: str | None, codec: str, elements: int, path: str) -> CodecRow:
    what = "rate-accuracy record"
    return CodecRow(
        split=split,
        codec=codec,
        elements=elements,
        payload_bytes=1000.0 * float(_need(r, "kb_per_frame", path, what)),
        drop_points=float(_need(r, "drop_points", path, what)),
        encode_ms=_number(r.get("encode_ms"), path, "encode_ms"),
        decode_ms=_number(r.get("decode_ms"), path, "decode_ms"),
    )


def check_same_model(
    path_a: str, model_a: str, input_a: tuple[int, ...], path_b: str, model_b: str, input_b
) -> None:
    """Raises :class:`PlanError` naming both files when their model or input differs."""
    if model_a != model_b or tuple(input_a) != tuple(input_b):
        shape = "x".join
        raise PlanError(
            f"{path_a} is {model_a} at {shape(map(str, input_a))} but {path_b} is "
            f"{model_b} at {shape(map(str, input_b))}: the files must describe the same model and input"
        )
