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
    """

    name: str
    max_abs: float
    max_rel: float


@dataclass(frozen=True)
class ParityReport:
    """OpenVINO vs torch on the same frames.

    Attributes:
        tensors: per crossing tensor.
        tolerance: the limit on ``max_rel``.
        frames: how many frames were compared.
        device: the OpenVINO device used.
    """

    tensors: tuple[TensorParity, ...]
    tolerance: float
    frames: int
    device: str = "CPU"

    @property
    def max_abs(self) -> float:
        return max(t.max_abs for t in self.tensors)

    @property
    def max_rel(self) -> float:
        return max(t.max_rel for t in self.tensors)

    @property
    def ok(self) -> bool:
        return self.max_rel <= self.tolerance

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "frames": self.frames,
            "tolerance": self.tolerance,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "tensors": [
                {"name": t.name, "max_abs": t.max_abs, "max_rel": t.max_rel} for t in self.tensors
            ],
        }

    def __str__(self) -> str:
        return (
            f"parity (OpenVINO {self.device} vs torch, {self.frames} frame(s)): max abs error "
            f"{self.max_abs:.3g}, max relative error {self.max_rel:.3g} (tolerance {self.tolerance:g})"
        )


def compare_outputs(
    names: Sequence[str],
    ov_outputs: Sequence[Sequence[np.ndarray]],
    torch_outputs: Sequence[Sequence[np.ndarray]],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    device: str = "CPU",
) -> ParityReport:
    """Compares per-frame output lists; shapes must match exactly."""
    abs_err = [0.0] * len(names)
    scale = [0.0] * len(names)
    for ov_frame, t_frame in zip(ov_outputs, torch_outputs, strict=True):
        for i, (a, b) in enumerate(zip(ov_frame, t_frame, strict=True)):
            if a.shape != b.shape:
                raise ParityError(
                    f"crossing tensor {names[i]}: OpenVINO gives shape {a.shape}, torch {b.shape}"
                )
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            abs_err[i] = max(abs_err[i], float(diff.max()) if diff.size else 0.0)
            scale[i] = max(scale[i], float(np.abs(b).max()) if b.size else 0.0)
    tensors = tuple(
        TensorParity(n, e, e / s if s > 0 else (0.0 if e == 0 else float("inf")))
        for n, e, s in zip(names, abs_err, scale, strict=True)
    )
    return ParityReport(tensors, tolerance, len(ov_outputs), device)
