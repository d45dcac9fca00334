"""Temperature scaling of a classifier bundle on held-out data (Guo et al., 2017).

The logits are the ones the server will see: the bundle's OpenVINO head on the raw
frame, the bundle's codec there and back, then the tail. One scalar ``T`` minimises
the negative log-likelihood of ``softmax(logits / T)``; it does not change the
predicted class, only how sure the answer says it is.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from splitnet._errors import ConfigError
from splitnet.bundle import (
    MANIFEST_FILE,
    BundleError,
    Confidence,
    Manifest,
    expected_calibration_error,
    read_manifest,
)
from splitnet.bundle._confidence import ECE_BINS, confidence_bins

__all__ = [
    "CalibrationResult",
    "bundle_logits",
    "calibrate_bundle",
    "deployed_logits",
    "fit_temperature",
]


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, multilabel: bool = False) -> float:
    """The temperature minimising the NLL of ``logits / T`` (LBFGS on ``log T``)."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    target = F.one_hot(y, z.shape[1]).to(z.dtype) if multilabel else y

    def closure():
        opt.zero_grad()
        scaled = z / log_t.exp()
        if multilabel:
            loss = F.binary_cross_entropy_with_logits(scaled, target)
        else:
            loss = F.cross_entropy(scaled, target)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(1e-3, 1e3))


def _probs(logits: np.ndarray, temperature: float, multilabel: bool) -> np.ndarray:
    z = torch.as_tensor(logits, dtype=torch.float64) / temperature
    return (z.sigmoid() if multilabel else z.softmax(dim=1)).numpy()


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    p = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-12, 1)).mean())


def deployed_logits(
    bundle_dir, dataset, *, frames: int | None = None, progress: bool = True, desc: str = "frames"
):
    """Yields ``(logits 1 x ..., target)`` per sample of ``dataset`` through the bundle as
    deployed: its OpenVINO head on the uint8 frame, then (split bundles) its codec there
    and back and its tail; a device-only bundle's head gives the logits itself."""
    from splitnet.bundle import load_tail
    from splitnet.codec import decode
    from splitnet.data import sample_frame
    from splitnet.device import HeadRunner

    manifest = read_manifest(bundle_dir, verify=False)  # HeadRunner verifies the files
    head = HeadRunner(bundle_dir, threads=1)
    split = manifest.mode != "device-only"
    codec = manifest.make_codec() if split else None
    tail = load_tail(bundle_dir, verify=False) if split else None  # already eval
    n = len(dataset) if frames is None else min(frames, len(dataset))
    with torch.inference_mode():
        for i in tqdm(range(n), desc=desc, unit="frame", file=sys.stderr, disable=not progress):
            x, y = dataset[i]
            tensors = head(sample_frame(x))
            if not split:
                yield np.asarray(tensors[0], np.float32), y
                continue
            decoded = decode(codec.encode(tensors))
            out = tail(*(torch.from_numpy(np.ascontiguousarray(t, np.float32)) for t in decoded))
            yield out.float().numpy(), y


def bundle_logits(bundle_dir, dataset, *, frames: int | None = None, progress: bool = True):
    """``(logits N x C, labels N)`` of ``dataset`` through the split bundle as deployed."""
    manifest = read_manifest(bundle_dir, verify=False)
    if manifest.mode != "split":
        raise ConfigError(f"{bundle_dir} is a {manifest.mode} bundle: calibrate a split bundle")
    logits, labels = [], []
    for out, y in deployed_logits(
        bundle_dir, dataset, frames=frames, progress=progress, desc="calibrate"
    ):
        logits.append(out[0])
        labels.append(int(y))
    return np.stack(logits), np.asarray(labels)


@dataclass(frozen=True)
class CalibrationResult:
    """What :func:`calibrate_bundle` fitted and measured."""

    confidence: Confidence
    probs_before: np.ndarray
    probs_after: np.ndarray
    labels: np.ndarray


def calibrate_bundle(
    bundle_dir: str | os.PathLike,
    dataset,
    *,
    frames: int | None = None,
    cap: float | None = None,
    margin: float | None = None,
    top_k: int | None = None,
    write: bool = True,
    progress: bool = True,
) -> CalibrationResult:
    """Fits the temperature of a classifier bundle on ``dataset`` and (``write``) stores it
    with the abstain settings in the bundle's manifest; reports ECE/NLL before and after.

    Raises:
        ConfigError: not a classifier, data of another task or class count, bad settings.
    """
    manifest = read_manifest(bundle_dir, verify=False)  # bundle_logits' HeadRunner verifies
    if manifest.output.kind != "classes":
        raise ConfigError(f"{bundle_dir} is a {manifest.task} bundle: only classifiers calibrate")
    if dataset.task != "classification" or dataset.num_classes != manifest.num_classes:
        raise ConfigError(
            f"--data is {dataset.task} data with {dataset.num_classes} classes; the bundle "
            f"classifies {manifest.num_classes}"
        )
    if frames is not None and frames < 2:
        raise ConfigError(f"--frames must be >= 2, got {frames}")
    old = Confidence.from_dict(manifest.confidence)
    settings = {
        "cap": old.cap if cap is None else cap,
        "margin": old.margin if margin is None else margin,
        "top_k": old.top_k if top_k is None else top_k,
    }
    try:
        Confidence(**settings)
    except BundleError as e:  # it names the bad value
        raise ConfigError(str(e).replace("confidence ", "--")) from None
    logits, labels = bundle_logits(bundle_dir, dataset, frames=frames, progress=progress)
    multilabel = manifest.output.multilabel
    t = fit_temperature(logits, labels, multilabel=multilabel)
    before, after = _probs(logits, 1.0, multilabel), _probs(logits, t, multilabel)
    report = {
        "data": getattr(dataset, "spec", ""),
        "frames": len(labels),
        "bins": ECE_BINS,
        "ece_before": expected_calibration_error(before, labels),
        "ece_after": expected_calibration_error(after, labels),
        "nll_before": _nll(before, labels),
        "nll_after": _nll(after, labels),
        "top1": float((before.argmax(1) == labels).mean()),
    }
    confidence = Confidence(temperature=t, report=report, **settings)
    if write:
        _write_confidence(Path(bundle_dir), manifest, confidence)
    return CalibrationResult(confidence, before, after, labels)


def _write_confidence(root: Path, manifest: Manifest, confidence: Confidence) -> None:
    """Rewrites the manifest with the section, atomically (the files' checksums stay)."""
    from dataclasses import replace

    new = replace(manifest, confidence=confidence.to_dict())
    tmp = root / (MANIFEST_FILE + ".tmp")
    tmp.write_text(new.to_json(), encoding="utf-8")
    os.replace(tmp, root / MANIFEST_FILE)


def reliability_plot(
    result: CalibrationResult, path: str | os.PathLike, *, title: str = ""
) -> None:
    """A reliability diagram (accuracy against confidence per bin), before and after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.linspace(0, 1, ECE_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    r = result.confidence.report
    for probs, name, key in (
        (result.probs_before, "before", "ece_before"),
        (result.probs_after, f"after (T={result.confidence.temperature:.2f})", "ece_after"),
    ):
        conf, hit = probs.max(1), probs.argmax(1) == result.labels
        which = confidence_bins(conf)
        acc = [hit[which == b].mean() if (which == b).any() else math.nan for b in range(ECE_BINS)]
        ax.plot(centres, acc, "o-", label=f"{name}, ECE {r[key]:.3f}")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
