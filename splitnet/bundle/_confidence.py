"""How much a classifier's answer can be trusted: temperature, abstain cap, ECE.

Numpy only: the server applies it, ``splitnet calibrate`` (torch) fits it, and a
device reading a manifest needs neither.

A bundle's ``confidence`` section holds the fitted temperature ``T`` (probabilities
are ``softmax(logits / T)``, Guo et al., 2017), the cap under which the top
probability makes an answer ``uncertain``, the minimum margin between the first and
the second class, the default number of classes answered, and the expected
calibration error measured before and after on held-out data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from splitnet.bundle._manifest import BundleError

__all__ = ["Confidence", "expected_calibration_error", "uncertain"]

ECE_BINS = 15


@dataclass(frozen=True)
class Confidence:
    """A bundle's ``confidence`` section.

    Attributes:
        temperature: logits are divided by it before softmax/sigmoid (> 0; 1: none).
        cap: an answer whose top probability is under it is ``uncertain`` ([0, 1]).
        margin: an answer whose top two probabilities differ by less is ``uncertain``.
        top_k: classes answered when a request does not say (>= 1).
        report: what calibration measured (``ece_before``, ``ece_after``, ``nll_*``,
            ``frames``, ``data``), for the record.
    """

    temperature: float = 1.0
    cap: float = 0.0
    margin: float = 0.0
    top_k: int = 5
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise BundleError(f"confidence temperature must be > 0, got {self.temperature}")
        for key in ("cap", "margin"):
            value = getattr(self, key)
            if not 0 <= value <= 1:
                raise BundleError(f"confidence {key} must be in [0, 1], got {value}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise BundleError(f"confidence top_k must be a positive integer, got {self.top_k!r}")

    @classmethod
    def from_dict(cls, doc: Any) -> Confidence:
        """The manifest's section (``{}`` or missing: the defaults, no calibration)."""
        if not doc:
            return cls()
        if not isinstance(doc, dict):
            raise BundleError("manifest 'confidence' must be an object")
        try:
            return cls(
                temperature=float(doc.get("temperature", 1.0)),
                cap=float(doc.get("cap", 0.0)),
                margin=float(doc.get("margin", 0.0)),
                top_k=doc.get("top_k", 5),
                report=dict(doc.get("report") or {}),
            )
        except (TypeError, ValueError) as e:
            raise BundleError(f"manifest 'confidence' is malformed: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def uncertain(top: np.ndarray, cap: float, margin: float) -> bool:
    """Whether an answer whose probabilities, highest first, are ``top`` should abstain."""
    if top.size == 0:
        return True
    first = float(top[0])
    second = float(top[1]) if top.size > 1 else 0.0
    return first < cap or first - second < margin


def confidence_bins(conf: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """The bin (0 .. bins-1) of each confidence, ``bins`` equal widths over [0, 1]
    (a bin holds its upper edge)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, *, bins: int = ECE_BINS
) -> float:
    """ECE: the frame-weighted mean gap between confidence and accuracy over ``bins``
    equal-width confidence bins (Naeini et al., 2015; Guo et al., 2017).

    Args:
        probs: ``N x C`` class probabilities.
        labels: ``N`` true class ids.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],) or probs.shape[0] == 0:
        raise ValueError(
            f"need N x C probabilities and N labels, got {probs.shape}, {labels.shape}"
        )
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = confidence_bins(conf, bins)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(conf[sel].mean() - correct[sel].mean())
    return float(ece)
