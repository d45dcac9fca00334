"""The model repository: every bundle's tail as a TailModel, its checks and post-processing."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from splitnet._errors import ConfigError, SplitnetError
from splitnet.bundle import MANIFEST_FILE, BundleError, Manifest, load_tail, read_manifest
from splitnet.bundle._confidence import Confidence, uncertain

__all__ = ["FrameInput", "TailModel", "load_repository"]

log = logging.getLogger("splitnet.server")

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class FrameInput:
    """One frame's decoded crossing tensors and what the client asked for."""

    tensors: list[np.ndarray]
    probabilities: bool = False
    top_k: int = 5
    cap: float | None = None  # a classifier's abstain cap and margin; None: the bundle's
    margin: float | None = None
    heatmap: bool = False  # the ``heatmap`` output (see splitnet.server._explain)
    heatmap_class: int | None = None  # None: the most probable class
    heatmap_layer: str | None = None  # None: the bundle's (the last conv block)


class TailModel:
    """Runs a bundle's tail on batches of frames and turns logits into results.

    Segmentation models return ``mask`` (UINT8, H x W: 0 for background, else
    1 + the most probable class; with independent sigmoid classes a pixel is
    background when no class reaches 0.5) and, on request, ``probabilities``
    (FP32, classes x H x W). Classifiers return the ``top_k`` class ids
    (``classes``, INT64), their ``probabilities`` (FP32; divided by the bundle's
    calibrated temperature) and ``uncertain`` (BOOL, 1: the top probability is under
    the cap, or its margin to the second under the minimum).
    """

    def __init__(
        self, bundle_dir: str | os.PathLike, *, device: str = "cpu", precision: str = "fp32"
    ) -> None:
        self.path = Path(bundle_dir)
        self.manifest: Manifest = read_manifest(self.path)
        if not self.manifest.has_tail:
            raise BundleError(f"{self.path} is a device-only bundle: it has no tail to serve")
        if precision not in PRECISIONS:
            raise ConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        self.device = torch.device(device)
        self.autocast_dtype = PRECISIONS[precision]
        self.module = load_tail(self.path, verify=False).to(self.device)
        self.batchable = self.manifest.tail.get("batch") == "dynamic"
        self.max_batch = int(self.manifest.tail.get("max_batch") or 1) if self.batchable else 1
        self.name = self.manifest.name
        self.version = "1"  # REPO/NAME/VERSION/ sets it (see _model_repository)
        self.crossing_elements = sum(int(np.prod(t.shape)) for t in self.manifest.crossing)
        # the bundle's own codec decodes: a learned codec's tables live in the manifest
        self.codec = self.manifest.make_codec()
        self.confidence = Confidence.from_dict(self.manifest.confidence)

    # -- contract -------------------------------------------------------------------------------

    @property
    def task(self) -> str:
        return self.manifest.task

    def output_metadata(self) -> list[tuple[str, str, list[int]]]:
        """(name, datatype, shape) of each output, for ModelMetadata."""
        if self.task == "segmentation":
            c, h, w = self.manifest.num_classes, *self.manifest.input.shape[1:]
            return [("mask", "UINT8", [h, w]), ("probabilities", "FP32", [c, h, w])]
        return [
            ("classes", "INT64", [-1]),
            ("probabilities", "FP32", [-1]),
            ("uncertain", "BOOL", [1]),
        ]

    def check(self, tensors: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The decoded tensors as float32, or ``SplitnetError`` when they do not match the bundle."""
        specs = self.manifest.crossing
        if len(tensors) != len(specs):
            raise SplitnetError(
                f"model {self.name} takes {len(specs)} crossing tensors, the payload has {len(tensors)}"
            )
        out = []
        for i, (t, spec) in enumerate(zip(tensors, specs, strict=True)):
            if tuple(t.shape) != tuple(spec.shape):
                raise SplitnetError(
                    f"crossing tensor {i} ({spec.name}) must have shape {list(spec.shape)}, got {list(t.shape)}"
                )
            if spec.dtype == "uint8":  # an image bundle's frame: samples, not activations
                if t.dtype != np.uint8:
                    raise SplitnetError(
                        f"crossing tensor {i} ({spec.name}) must be uint8, got {t.dtype}"
                    )
            elif t.dtype.kind != "f":
                raise SplitnetError(
                    f"crossing tensor {i} ({spec.name}) must be floating point, got {t.dtype}"
                )
            out.append(np.ascontiguousarray(t, dtype=np.float32))
        return out

    # -- compute ----------------------------------------------------------------------------------

    def run_batch(self, frames: Sequence[FrameInput]) -> list[dict[str, np.ndarray]]:
        """Runs the tail on ``frames`` (batched when the tail allows) and post-processes."""
        if not self.batchable and len(frames) > 1:
            return [r for f in frames for r in self.run_batch([f])]
        with torch.inference_mode():
            inputs = [
                torch.from_numpy(np.concatenate([f.tensors[i] for f in frames])).to(
                    self.device, non_blocking=True
                )
                for i in range(len(self.manifest.crossing))
            ]
            if self.autocast_dtype is not None:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    logits = self.module(*inputs)
            else:
                logits = self.module(*inputs)
            logits = logits.float()
            if self.task == "segmentation":
                results = self._masks(logits, frames)
            else:
                results = self._classes(logits, frames)
        if any(f.heatmap for f in frames):
            from splitnet.server._explain import add_heatmaps

            add_heatmaps(self, frames, results)
        return results

    def _masks(
        self, logits: torch.Tensor, frames: Sequence[FrameInput]
    ) -> list[dict[str, np.ndarray]]:
        probs = logits.sigmoid() if self.manifest.output.multilabel else logits.softmax(dim=1)
        best, idx = probs.max(dim=1)
        if self.manifest.output.multilabel:
            mask = torch.where(best >= 0.5, idx + 1, torch.zeros_like(idx))
        else:
            mask = idx
        mask = mask.to(torch.uint8).cpu().numpy()
        want = [f.probabilities or f.heatmap for f in frames]
        probs_np = probs.cpu().numpy() if any(want) else None
        results = []
        for i, f in enumerate(frames):
            r = {"mask": mask[i]}
            if f.probabilities or f.heatmap:
                r["probabilities"] = probs_np[i]
            results.append(r)
        return results

    def _classes(
        self, logits: torch.Tensor, frames: Sequence[FrameInput]
    ) -> list[dict[str, np.ndarray]]:
        conf = self.confidence
        if conf.temperature != 1.0:
            logits = logits / conf.temperature
        probs = logits.sigmoid() if self.manifest.output.multilabel else logits.softmax(dim=1)
        # two at least: the margin to the second decides ``uncertain``
        k = min(max(2, *(f.top_k for f in frames)), probs.shape[1])
        top_p, top_i = probs.topk(k, dim=1)
        top_p, top_i = top_p.cpu().numpy(), top_i.cpu().numpy()
        results = []
        for i, f in enumerate(frames):
            cap = conf.cap if f.cap is None else f.cap
            margin = conf.margin if f.margin is None else f.margin
            flag = uncertain(top_p[i], cap, margin)
            results.append(
                {
                    "classes": top_i[i, : f.top_k].astype(np.int64),
                    "probabilities": top_p[i, : f.top_k],
                    "uncertain": np.array([flag]),
                }
            )
        return results


def load_repository(
    repository: str | os.PathLike, *, device: str = "cpu", precision: str = "fp32"
) -> dict[str, TailModel]:
    """Loads every model in ``repository`` (the latest version of each), by model name.

    A bundle folder ``REPO/X/`` is version 1; ``REPO/NAME/VERSION/`` is Triton's layout.
    """
    from splitnet.server._model_repository import latest, scan

    root = Path(repository)
    entries = scan(root)
    if not entries:
        raise BundleError(f"no bundle (a folder with {MANIFEST_FILE}) in {root}")
    models: dict[str, TailModel] = {}
    for name in dict.fromkeys(e.name for e in entries):
        flat = [e for e in entries if e.name == name and e.path.parent == root]
        if len(flat) > 1:
            raise BundleError(f"two bundles named {name!r}: {flat[0].path} and {flat[1].path}")
        entry = latest(entries, name)
        if entry.error:
            raise BundleError(entry.error)
        if read_manifest(entry.path, verify=False).mode == "device-only":
            log.warning("%s is a device-only bundle: nothing to serve, skipped", entry.path)
            continue
        model = TailModel(entry.path, device=device, precision=precision)
        model.version = entry.version
        models[model.name] = model
    if not models:
        raise BundleError(f"no bundle to serve in {root}: every bundle there is device-only")
    return models
