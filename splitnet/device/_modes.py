"""The device's side of the planner's baselines: image bundles and device-only bundles.

* :class:`FrameHead` is the "head" of an ``image`` bundle: nothing runs, the raw
  frame is what the codec (PNG/JPEG) codes, so :class:`~splitnet.device.DeviceDaemon`
  streams it like any crossing tensor.
* :class:`LocalDaemon` runs a ``device-only`` bundle (the whole model as the head
  IR) with no server: frame -> model -> the result the server would have answered
  (:func:`postprocess`), written the same way, ``summary.json`` included.

No torch: numpy and OpenVINO.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np

from splitnet._errors import ConfigError
from splitnet.bundle import Manifest, read_manifest
from splitnet.device._daemon import DeviceDaemon, Summary
from splitnet.device._runner import FrameError, HeadRunner
from splitnet.device._sources import open_source

__all__ = ["FrameHead", "LocalDaemon", "open_head", "postprocess"]


class FrameHead:
    """An ``image`` bundle's head: the checked frame itself, ``[1 x H x W x 3 uint8]``."""

    def __init__(self, bundle_dir: str | os.PathLike, manifest: Manifest | None = None) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest or read_manifest(self.bundle_dir)
        self.frame_shape = tuple(self.manifest.input.frame_shape)

    def check_frame(self, frame) -> np.ndarray:
        if not isinstance(frame, np.ndarray):
            raise FrameError(f"a frame must be a numpy array, got {type(frame).__name__}")
        if frame.dtype != np.uint8 or frame.shape != self.frame_shape:
            h, w, c = self.frame_shape
            raise FrameError(
                f"frame must be {h}x{w}x{c} uint8 for this bundle, got "
                f"{'x'.join(map(str, frame.shape))} {frame.dtype}"
            )
        return np.ascontiguousarray(frame)[None]

    def __call__(self, frame: np.ndarray) -> list[np.ndarray]:
        return [self.check_frame(frame)]


def open_head(bundle_dir: str | os.PathLike, *, device: str = "CPU", threads: int | None = None):
    """What runs on the device for the bundle: a :class:`~splitnet.device.HeadRunner`
    (``threads``: OpenVINO's inference threads, default its own choice), or a
    :class:`FrameHead` for an ``image`` bundle."""
    manifest = read_manifest(bundle_dir)
    if not manifest.has_head:
        return FrameHead(bundle_dir, manifest)
    return HeadRunner(bundle_dir, device=device, threads=threads)


def postprocess(
    manifest: Manifest, logits: np.ndarray, *, probabilities: bool = False, top_k: int = 5
) -> dict[str, np.ndarray]:
    """One frame's logits (``1 x C x H x W`` or ``1 x C``) -> what the server answers.

    As :class:`splitnet.server.TailModel`: ``mask`` (uint8 ``H x W``; with independent
    sigmoid classes 0 is background, else 1 + the most probable class reaching 0.5) and,
    on request, ``probabilities``; classifiers: the ``top_k`` ``classes`` and their
    ``probabilities``.
    """
    z = np.asarray(logits, dtype=np.float32)[0]
    multilabel = manifest.output.multilabel
    if manifest.task == "segmentation":
        idx = z.argmax(axis=0)
        if multilabel:  # sigmoid(max) >= 0.5  <=>  max >= 0
            mask = np.where(z.max(axis=0) >= 0, idx + 1, 0).astype(np.uint8)
        else:
            mask = idx.astype(np.uint8)
        out = {"mask": mask}
        if probabilities:
            out["probabilities"] = _probabilities(z, multilabel, axis=0)
        return out
    p = _probabilities(z, multilabel, axis=0)
    k = min(top_k, p.shape[0])
    order = np.argsort(-p, kind="stable")[:k]
    return {"classes": order.astype(np.int64), "probabilities": p[order]}


def _probabilities(z: np.ndarray, multilabel: bool, axis: int) -> np.ndarray:
    if multilabel:
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


class LocalDaemon(DeviceDaemon):
    """Runs a ``device-only`` bundle on its frames, no server: ``await run()`` -> summary.

    Takes a :class:`~splitnet.device.DaemonConfig`; the server, link and stream
    settings do not apply. Results and ``summary.json`` are written as
    :class:`~splitnet.device.DeviceDaemon` writes them; the latency is captured ->
    result, ``frames_sent`` and the wire figures stay 0 (nothing is sent).
    """

    def __init__(self, config) -> None:
        if config.fps is not None and config.fps <= 0:
            raise ConfigError(f"fps must be > 0, got {config.fps}")
        from splitnet.device._daemon import check_head_threads, current_bundle

        check_head_threads(config.head_threads)
        self.config = config
        self.runner = HeadRunner(
            current_bundle(config.bundle)[0], device=config.device, threads=config.head_threads
        )
        self.manifest = self.runner.manifest
        if self.manifest.mode != "device-only":
            raise ConfigError(
                f"{config.bundle} is a {self.manifest.mode} bundle: it needs a server (--server)"
            )
        h, w = self.manifest.input.frame_shape[:2]
        self.source = open_source(
            config.source, height=h, width=w, frames=config.frames, fps=config.fps, seed=config.seed
        )
        self.out = Path(config.out) if config.out else None
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
        self.summary = Summary(model=self.manifest.name, head_threads=config.head_threads)
        self.spool = None  # nothing is sent: nothing to keep for a resend
        self._pending: dict[int, object] = {}
        self._latencies: list[float] = []
        self._head_s: list[float] = []
        self._payload_sizes: list[int] = []
        self._version_of: dict[int, str] = {}
        self._fatal: BaseException | None = None

    async def run(self):
        start = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(None, self._loop)
        self._finish(time.perf_counter() - start)
        return self.summary

    def _loop(self) -> None:
        period = 1.0 / self.config.fps if self.config.fps else 0.0
        next_at = time.perf_counter()
        for frame_id, frame in enumerate(self.source):
            if period:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                next_at = max(next_at + period, time.perf_counter() - period)
            captured = time.perf_counter()
            self.summary.frames_captured += 1
            (logits,) = self.runner(frame)
            self._head_s.append(time.perf_counter() - captured)
            outputs = postprocess(self.manifest, logits, probabilities=self.config.probabilities)
            self.summary.ok += 1
            self._latencies.append(time.perf_counter() - captured)
            if self.out is not None:
                self._write_result(frame_id, outputs)
