"""The profile's records and their renderings: JSON document, CSV, human table."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

from splitnet._errors import SplitnetError
from splitnet._table import format_table, human_bytes
from splitnet.split import CrossingTensor

__all__ = ["Baseline", "ProfileRecord", "ProfileReport", "bits_key", "fps_key", "mbps"]


class ProfileError(SplitnetError):
    """A profile that cannot be made or shown: bad options, an input the profiler does not take."""


def bits_key(bits: int) -> str:
    """JSON key of a bit width: ``16 -> "16"``."""
    return str(int(bits))


def fps_key(fps: float) -> str:
    """JSON key of a frame rate: ``12.0 -> "12"``, ``12.5 -> "12.5"``."""
    return str(int(fps)) if float(fps).is_integer() else repr(float(fps))


def mbps(nbytes: float, fps: float) -> float:
    """Bitrate in Mbit/s (10^6 bit/s) of ``nbytes`` per frame at ``fps`` frames per second."""
    return nbytes * 8 * fps / 1e6


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


@dataclass(frozen=True)
class ProfileRecord:
    """Everything the profiler knows about one split point.

    Attributes:
        index, name, kind, op: the split point (see :class:`~splitnet.split.SplitPoint`).
        tensors: the tensors crossing the cut.
        elements: elements crossing the cut (batch 1).
        device_macs: multiply–accumulates of the head (operations ``0..index``).
        server_macs: multiply–accumulates of the tail; ``device_macs + server_macs``
            is the whole model's at every point.
        device_params: elements of the parameters and buffers the head reads.
        device_param_bytes: their bytes, ``{"float32": n, "float16": n}``.
        peak_activation_bytes: most activation bytes alive at once while the head
            runs (see :func:`splitnet.profile.peak_activation_bytes`).
        bytes: bytes per frame crossing the cut, by bit width (``elements * bits / 8``).
        mbps: bitrate in Mbit/s by bit width, then by frame rate.
        device_fps: frames per second of the head on the device (``None``: not measured).
        tail_latency_ms: latency of the tail in torch (``None``: not measured).
        exported_head_bytes: size of the exported head (``None``: no bundle).
    """

    index: int
    name: str
    kind: str
    op: str
    tensors: tuple[CrossingTensor, ...]
    elements: int
    device_macs: int
    server_macs: int
    device_params: int
    device_param_bytes: dict[str, int]
    peak_activation_bytes: int
    bytes: dict[int, float]
    mbps: dict[int, dict[float, float]]
    device_fps: float | None = None
    tail_latency_ms: float | None = None
    exported_head_bytes: int | None = None

    def to_dict(self) -> dict:
        """The point's JSON object; bit-width and fps keys are strings."""
        return {
            "index": self.index,
            "name": self.name,
            "kind": self.kind,
            "op": self.op,
            "tensors": [
                {"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in self.tensors
            ],
            "elements": self.elements,
            "device_macs": self.device_macs,
            "server_macs": self.server_macs,
            "device_params": self.device_params,
            "device_param_bytes": dict(self.device_param_bytes),
            "peak_activation_bytes": self.peak_activation_bytes,
            "bytes": {bits_key(b): _number(n) for b, n in self.bytes.items()},
            "mbps": {
                bits_key(b): {fps_key(f): r for f, r in by_fps.items()}
                for b, by_fps in self.mbps.items()
            },
            "device_fps": self.device_fps,
            "tail_latency_ms": self.tail_latency_ms,
            "exported_head_bytes": self.exported_head_bytes,
        }


@dataclass(frozen=True)
class Baseline:
    """Remote inference: sending the input image itself.

    Attributes:
        raw_bytes: the frame as raw 8-bit samples (``C * H * W``).
        png_bytes: the frame as PNG (``None`` when the channel count has no PNG form).
        image: which image the PNG size was measured on (PNG size depends on content).
        mbps: ``{"raw": {fps: Mbit/s}, "png": {fps: Mbit/s}}``.
    """

    raw_bytes: int
    png_bytes: int | None
    image: str
    mbps: dict[str, dict[float, float]]

    def to_dict(self) -> dict:
        return {
            "image": self.image,
            "raw_bytes": self.raw_bytes,
            "png_bytes": self.png_bytes,
            "mbps": {k: {fps_key(f): r for f, r in v.items()} for k, v in self.mbps.items()},
        }


@dataclass(frozen=True)
class ProfileReport:
    """The profile of a model's selected split points.

    Attributes:
        model: the model's name.
        input: input shape ``(C, H, W)`` (batch 1).
        bits: the bit widths reported.
        fps: the frame rates reported.
        total_macs: the whole model's multiply–accumulates.
        total_params: elements of every parameter and buffer the model reads.
        points: one record per selected point, in execution order.
        baseline: the cost of sending the image instead.
        notes: lines printed under the table.
        whole_model: with ``--measure-fps``, the whole model as one head on the
            device (the head at the last split point, exported and timed like the
            others; its ``peak_activation_bytes`` and parameters are the model's).
        model_latency_ms: with a measurement, the whole model's median latency in
            torch (batch 1) on ``tail_device``: a server's cost of a frame sent as an image.
        tail_device: the torch device the tails and the whole model were timed on.
    """

    model: str
    input: tuple[int, ...]
    bits: tuple[int, ...]
    fps: tuple[float, ...]
    total_macs: int
    total_params: int
    points: tuple[ProfileRecord, ...]
    baseline: Baseline
    notes: tuple[str, ...] = field(default=())
    whole_model: ProfileRecord | None = None
    model_latency_ms: float | None = None
    tail_device: str | None = None

    def to_dict(self) -> dict:
        """The JSON document (``splitnet profile --json``); the measured whole-model
        keys appear only when something was measured."""
        doc = {
            "model": self.model,
            "input": list(self.input),
            "bits": [bits_key(b) for b in self.bits],
            "fps": [fps_key(f) for f in self.fps],
            "total_macs": self.total_macs,
            "total_params": self.total_params,
            "points": [r.to_dict() for r in self.points],
            "baseline": self.baseline.to_dict(),
        }
        if self.tail_device is not None:
            doc["tail_device"] = self.tail_device
            doc["model_latency_ms"] = self.model_latency_ms
        if self.whole_model is not None:
            doc["whole_model"] = self.whole_model.to_dict()
        return doc

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_csv(self) -> str:
        """One row per point; ``bytes_<bits>`` and ``mbps_<bits>_<fps>`` columns."""
        buf = io.StringIO()
        header = [
            "index",
            "name",
            "kind",
            "op",
            "tensors",
            "elements",
            "device_macs",
            "server_macs",
            "device_params",
            "device_param_bytes_float32",
            "device_param_bytes_float16",
            "peak_activation_bytes",
            *(f"bytes_{bits_key(b)}" for b in self.bits),
            *(f"mbps_{bits_key(b)}_{fps_key(f)}" for b in self.bits for f in self.fps),
            "device_fps",
        ]
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        for r in self.points:
            w.writerow(
                [
                    r.index,
                    r.name,
                    r.kind,
                    r.op,
                    ";".join("x".join(map(str, t.shape)) for t in r.tensors),
                    r.elements,
                    r.device_macs,
                    r.server_macs,
                    r.device_params,
                    r.device_param_bytes["float32"],
                    r.device_param_bytes["float16"],
                    r.peak_activation_bytes,
                    *(_number(r.bytes[b]) for b in self.bits),
                    *(f"{r.mbps[b][f]:.6g}" for b in self.bits for f in self.fps),
                    "" if r.device_fps is None else r.device_fps,
                ]
            )
        return buf.getvalue()

    def format_table(self) -> str:
        """The human-readable table (default output of ``splitnet profile``)."""
        head = [
            "index",
            "name",
            "kind",
            "crossing",
            "elements",
            "dev GMAC",
            "srv GMAC",
            "dev params",
            "peak act",
            *(f"{b}b/frame" for b in self.bits),
            *(f"Mbps {b}b@{fps_key(f)}" for b in self.bits for f in self.fps),
            "dev FPS",
        ]
        rows = [head]
        for r in self.points:
            rows.append(
                [
                    str(r.index),
                    r.name,
                    r.kind,
                    ", ".join("x".join(map(str, t.shape[1:])) for t in r.tensors),
                    f"{r.elements:,}",
                    f"{r.device_macs / 1e9:.3f}",
                    f"{r.server_macs / 1e9:.3f}",
                    _count(r.device_params),
                    human_bytes(r.peak_activation_bytes),
                    *(human_bytes(r.bytes[b]) for b in self.bits),
                    *(f"{r.mbps[b][f]:.1f}" for b in self.bits for f in self.fps),
                    "-" if r.device_fps is None else f"{r.device_fps:.1f}",
                ]
            )
        # index right, name/kind/crossing left, numbers right
        lines = [format_table(rows[0], rows[1:], align="rlll" + "r" * (len(head) - 4))]
        c, h, w = self.input
        lines.append("")
        lines.append(
            f"{self.model}  input {c}x{h}x{w}  total {self.total_macs / 1e9:.3f} GMAC, "
            f"{self.total_params / 1e6:.2f}M params+buffers"
        )
        b = self.baseline
        rates = ", ".join(f"{b.mbps['raw'][f]:.1f} Mbps@{fps_key(f)}" for f in self.fps)
        lines.append(f"baseline raw 8-bit image: {human_bytes(b.raw_bytes)}/frame, {rates}")
        if b.png_bytes is not None:
            rates = ", ".join(f"{b.mbps['png'][f]:.1f} Mbps@{fps_key(f)}" for f in self.fps)
            lines.append(
                f"baseline PNG image:       {human_bytes(b.png_bytes)}/frame, {rates}"
                f"  ({b.image}; PNG size depends on content)"
            )
        lines.extend(self.notes)
        return "\n".join(lines)


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"
