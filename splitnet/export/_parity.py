"""Parity of the exported head: OpenVINO (CPU plugin, FP32 compute) against torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from splitnet._errors import SplitnetError

__all__ = ["ParityError", "ParityReport", "TensorParity", "compare_outputs"]

DEFAULT_TOLERANCE = 0.02


class ParityError(SplitnetError):
    """The exported head differs from torch by more than the tolerance."""


@dataclass(frozen=True)
class TensorParity:
    """Error of one crossing tensor.

    Attributes:
        name: the crossing tensor.
        max_abs: ``max |ov - torch|``.
        max_rel: ``max_abs / max |torch|`` (error relative to the tensor's range).
        rel_rmse: ``rms(ov - torch) / rms(torch)`` (the noise-to-signal ratio; what an
            INT8 head is judged by, whose largest single error says little).
    """

    name: str
    max_abs: float
    max_rel: float
    rel_rmse: float = 0.0


@dataclass(frozen=True)
class ParityReport:
    """OpenVINO vs torch on the same frames.

    Attributes:
        tensors: per crossing tensor.
        tolerance: the limit on ``metric``.
        frames: how many frames were compared.
        device: the OpenVINO device used.
        metric: what the tolerance limits: ``max_rel`` or ``rel_rmse``.
    """

    tensors: tuple[TensorParity, ...]
    tolerance: float
    frames: int
    device: str = "CPU"
    metric: str = "max_rel"

    @property
    def max_abs(self) -> float:
        return max(t.max_abs for t in self.tensors)

    @property
    def max_rel(self) -> float:
        return max(t.max_rel for t in self.tensors)

    @property
    def rel_rmse(self) -> float:
        return max(t.rel_rmse for t in self.tensors)

    @property
    def worst(self) -> TensorParity:
        """The tensor with the largest error by ``metric``."""
        return max(self.tensors, key=lambda t: getattr(t, self.metric))

    @property
    def ok(self) -> bool:
        return getattr(self, self.metric) <= self.tolerance

    def to_dict(self) -> dict:
        doc = {
            "device": self.device,
            "frames": self.frames,
            "tolerance": self.tolerance,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "rel_rmse": self.rel_rmse,
            "tensors": [
                {"name": t.name, "max_abs": t.max_abs, "max_rel": t.max_rel, "rel_rmse": t.rel_rmse}
                for t in self.tensors
            ],
        }
        if self.metric != "max_rel":
            doc["metric"] = self.metric
        return doc

    def __str__(self) -> str:
        return (
            f"parity (OpenVINO {self.device} vs torch, {self.frames} frame(s)): max abs error "
            f"{self.max_abs:.3g}, max relative error {self.max_rel:.3g}, relative RMS error "
            f"{self.rel_rmse:.3g} (tolerance {self.tolerance:g} on {self.metric})"
        )


def compare_outputs(
    names: Sequence[str],
    ov_outputs: Sequence[Sequence[np.ndarray]],
    torch_outputs: Sequence[Sequence[np.ndarray]],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    device: str = "CPU",
    metric: str = "max_rel",
) -> ParityReport:
    """Compares per-frame output lists; shapes must match exactly."""
    if metric not in ("max_rel", "rel_rmse"):
        raise ValueError(f"metric must be max_rel or rel_rmse, got {metric!r}")
    abs_err = [0.0] * len(names)
    scale = [0.0] * len(names)
    noise = [0.0] * len(names)  # sums of squares
    signal = [0.0] * len(names)
    for ov_frame, t_frame in zip(ov_outputs, torch_outputs, strict=True):
        for i, (a, b) in enumerate(zip(ov_frame, t_frame, strict=True)):
            if a.shape != b.shape:
                raise ParityError(
                    f"crossing tensor {names[i]}: OpenVINO gives shape {a.shape}, torch {b.shape}"
                )
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            abs_err[i] = max(abs_err[i], float(diff.max()) if diff.size else 0.0)
            scale[i] = max(scale[i], float(np.abs(b).max()) if b.size else 0.0)
            noise[i] += float(np.square(diff).sum())
            signal[i] += float(np.square(b.astype(np.float64)).sum())
    tensors = tuple(
        TensorParity(n, e, _ratio(e, s), _ratio(np.sqrt(q), np.sqrt(p)))
        for n, e, s, q, p in zip(names, abs_err, scale, noise, signal, strict=True)
    )
    return ParityReport(tensors, tolerance, len(ov_outputs), device, metric)


def _ratio(err: float, ref: float) -> float:
    return float(err / ref) if ref > 0 else (0.0 if err == 0 else float("inf"))
