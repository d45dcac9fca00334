"""``HeadRunner``: the head of a bundle on any OpenVINO device, without torch."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from splitnet._errors import SplitnetError
from splitnet.bundle import BundleError, Manifest, read_manifest

__all__ = ["DeviceError", "FrameError", "HeadRunner"]

HINTS = {
    "latency": "LATENCY",
    "throughput": "THROUGHPUT",
    "cumulative_throughput": "CUMULATIVE_THROUGHPUT",
}
PRECISIONS = ("f32", "f16", "bf16")


class DeviceError(SplitnetError):
    """An OpenVINO device that is not available, or a setting it does not take."""


class FrameError(SplitnetError):
    """A frame of the wrong type, shape or dtype."""


def _openvino():
    try:
        import openvino
    except ImportError:  # pragma: no cover - depends on the host
        raise ImportError(
            "the device runner needs OpenVINO: pip install 'splitnet[device]'"
        ) from None
    return openvino


class HeadRunner:
    """Runs the head of a split bundle with the OpenVINO runtime.

    The bundle's manifest says everything the device needs: the frame size,
    and (built into the IR) the normalisation; the runner takes a raw
    ``H x W x 3`` uint8 RGB frame and returns the crossing tensors.

    Args:
        bundle_dir: a folder written by ``splitnet export``. Checksums are verified.
        device: an OpenVINO device (``"CPU"``, ``"GPU"``, ``"NPU"``, ``"AUTO"``,
            ``"MULTI:..."``/``"HETERO:..."``); unknown devices raise :class:`DeviceError`.
        threads: inference threads (CPU only; default: OpenVINO's choice); with a count
            the head runs as one stream (``NUM_STREAMS`` 1), all the threads on it.
        hint: ``"latency"`` (one frame at a time), ``"throughput"`` or
            ``"cumulative_throughput"``.
        precision: compute precision where the device lets one choose it
            (``"f32"``, ``"f16"``, ``"bf16"``); ``None``: the device default (on CPUs
            with bf16 units that is bf16). Default ``"f32"``, as checked at export.
        config: further OpenVINO properties, passed to ``compile_model``.

    Raises:
        splitnet.bundle.BundleError: missing or corrupt files.
        DeviceError: an unknown device or a bad setting.

    Example:
        >>> runner = HeadRunner("bundle", device="CPU")
        >>> tensors = runner(frame)           # frame: H x W x 3 uint8
        >>> [t.shape for t in tensors] == [t.shape for t in runner.manifest.crossing]
        True
    """

    def __init__(
        self,
        bundle_dir: str | os.PathLike,
        device: str = "CPU",
        threads: int | None = None,
        hint: str = "latency",
        *,
        precision: str | None = "f32",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        ov = _openvino()
        self.bundle_dir = Path(bundle_dir)
        self.manifest: Manifest = read_manifest(self.bundle_dir)
        if not self.manifest.has_head:
            raise BundleError(
                f"{self.bundle_dir} is an image bundle: it has no head (the device sends the frame)"
            )
        if hint not in HINTS:
            raise DeviceError(f"unknown hint {hint!r}; hints: {', '.join(HINTS)}")
        if precision is not None and precision not in PRECISIONS:
            raise DeviceError(
                f"unknown precision {precision!r}; precisions: {', '.join(PRECISIONS)}"
            )
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise DeviceError(f"threads must be a positive integer, got {threads!r}")
        self.core = ov.Core()
        self.device = self._check_device(device)
        props: dict[str, Any] = {"PERFORMANCE_HINT": HINTS[hint]}
        supported = self._supported_properties(self.device)
        if threads is not None:
            if "INFERENCE_NUM_THREADS" not in supported:
                raise DeviceError(f"device {self.device} does not take a thread count")
            props["INFERENCE_NUM_THREADS"] = threads
            if "NUM_STREAMS" in supported:  # all the threads on the one request the daemon runs
                props["NUM_STREAMS"] = 1
        if precision is not None and "INFERENCE_PRECISION_HINT" in supported:
            props["INFERENCE_PRECISION_HINT"] = precision
        props.update(config or {})
        head = self.manifest.head
        try:
            model = self.core.read_model(
                self.bundle_dir / head["xml"], self.bundle_dir / head["bin"]
            )
        except Exception as e:
            raise BundleError(
                f"cannot read the head IR: {str(e).strip().splitlines()[0]}"
            ) from None
        names = [o.get_any_name() if o.get_names() else "" for o in model.outputs]
        expected = [t.name for t in self.manifest.crossing]
        if names != expected:
            raise BundleError(f"the head IR's outputs {names} do not match the manifest {expected}")
        try:
            self.compiled = self.core.compile_model(model, self.device, props)
        except Exception as e:
            raise DeviceError(
                f"cannot compile the head for {self.device}: {str(e).strip().splitlines()[0]}"
            ) from None
        self.properties = props
        self.request = self.compiled.create_infer_request()
        self.frame_shape = tuple(self.manifest.input.frame_shape)
        self.frame_dtype = np.dtype(self.manifest.input.dtype)
        self._outputs = list(self.compiled.outputs)

    def _supported_properties(self, device: str) -> set[str]:
        try:
            return set(map(str, self.core.get_property(device, "SUPPORTED_PROPERTIES")))
        except Exception:
            return set()

    def _check_device(self, device: str) -> str:
        if not isinstance(device, str) or not device.strip():
            raise DeviceError(f"device must be a name such as CPU, got {device!r}")
        device = device.strip().upper() if ":" not in device else device.strip()
        available = list(self.core.available_devices)
        virtual = ("AUTO", "MULTI", "HETERO", "BATCH")
        base = device.split(":", 1)[0].upper()
        if base in virtual:
            wanted = (
                [d.split("(")[0] for d in device.split(":", 1)[1].split(",")]
                if ":" in device
                else []
            )
        else:
            wanted = [device]
        for d in wanted:
            if d and d not in available and d.split(".")[0] not in available:
                raise DeviceError(
                    f"unknown or unavailable OpenVINO device {d!r}; available: {', '.join(available)}"
                )
        return device

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.manifest.crossing]

    def check_frame(self, frame: Any) -> np.ndarray:
        """The frame as a contiguous ``1 x H x W x 3`` array; :class:`FrameError` if it is wrong."""
        if not isinstance(frame, np.ndarray):
            raise FrameError(f"a frame must be a numpy array, got {type(frame).__name__}")
        if frame.dtype != self.frame_dtype:
            raise FrameError(
                f"frame dtype must be {self.frame_dtype} (raw {self.manifest.input.color} pixels), "
                f"got {frame.dtype}"
            )
        if frame.shape != self.frame_shape:
            h, w, c = self.frame_shape
            raise FrameError(
                f"frame must be {h}x{w}x{c} (HxWxC) for this bundle, got "
                f"{'x'.join(map(str, frame.shape))}"
            )
        return np.ascontiguousarray(frame)[None]

    def __call__(self, frame: np.ndarray) -> list[np.ndarray]:
        """Runs the head on one frame; returns the crossing tensors in manifest order (copies)."""
        x = self.check_frame(frame)
        result = self.request.infer({0: x})
        return [np.array(result[o], copy=True) for o in self._outputs]

    run = __call__

    def __repr__(self) -> str:
        return f"HeadRunner({str(self.bundle_dir)!r}, device={self.device!r}, name={self.manifest.name!r})"
