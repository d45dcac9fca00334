"""Frame sources for the device daemon: image folders, video files, cameras, synthetic frames.

Every source yields ``H x W x 3`` uint8 RGB frames of the bundle's frame size
(frames of another size are resized). Sources are registered: a new one is one
function decorated with :func:`register_frame_source`. No torch here: numpy, Pillow and, for
video and cameras, OpenCV (``pip install splitnet[device]``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitnet._registry import Registry
from splitnet.device._runner import DeviceError
from splitnet.synthetic import part_frames, rgb_frames

__all__ = [
    "FrameRequest",
    "FrameSource",
    "list_frame_sources",
    "open_source",
    "register_frame_source",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class FrameSource:
    """An iterator of frames; ``live`` sources (cameras, paced synthetic frames)
    drop frames when the pipeline is full instead of waiting."""

    frames: Iterator[np.ndarray]
    live: bool
    description: str

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.frames


@dataclass(frozen=True)
class FrameRequest:
    """What a source opener is asked for: the frame size, and for generated
    frames a rate and a seed."""

    height: int
    width: int
    fps: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class _Entry:
    name: str
    open: Callable[[str, FrameRequest], FrameSource]
    claims: Callable[[str], bool] | None


FRAME_SOURCES: Registry[_Entry] = Registry("frame source")


def register_frame_source(
    name: str, *, claims: Callable[[str], bool] | None = None
) -> Callable[[Callable[[str, FrameRequest], FrameSource]], Callable[..., FrameSource]]:
    """Registers ``fn(target, request) -> FrameSource`` as ``--source name:TARGET``.

    Args:
        name: the prefix before the colon (``camera:0``, ``video:FILE``).
        claims: for sources that may also be named without the prefix: whether
            a bare ``--source`` string is theirs (``0`` is a camera, a folder is
            images). Bare strings are offered to the sources in registration order.
    """

    def decorator(fn: Callable[[str, FrameRequest], FrameSource]) -> Callable[..., FrameSource]:
        FRAME_SOURCES.add(name, _Entry(name, fn, claims))
        return fn

    return decorator


def list_frame_sources() -> list[str]:
    """The registered source names."""
    return FRAME_SOURCES.names()


def _resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    if frame.shape[:2] == (height, width):
        return frame
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


def _opencv():
    try:
        import cv2
    except ImportError:
        raise DeviceError(
            "video files and cameras need OpenCV: pip install 'splitnet[device]'"
        ) from None
    return cv2


def _capture(target: str | int, height: int, width: int) -> Iterator[np.ndarray]:
    cv2 = _opencv()
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        raise DeviceError(f"cannot open video source {target!r}")
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield _resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), height, width)
    finally:
        cap.release()


@register_frame_source("synthetic", claims=lambda spec: spec == "synthetic")
def _synthetic(_: str, r: FrameRequest) -> FrameSource:
    frames = rgb_frames(r.height, r.width, seed=r.seed)
    return FrameSource(frames, r.fps is not None, "synthetic steel frames")


@register_frame_source("parts", claims=lambda spec: spec == "parts")
def _parts(_: str, r: FrameRequest) -> FrameSource:
    frames = part_frames(r.height, r.width, seed=r.seed)
    return FrameSource(frames, r.fps is not None, "synthetic component images")


@register_frame_source("camera", claims=str.isdigit)
def _camera(target: str, r: FrameRequest) -> FrameSource:
    if not target.isdigit():
        raise DeviceError(f"a camera is named by its index (camera:0), got {target!r}")
    return FrameSource(_capture(int(target), r.height, r.width), True, f"camera {target}")


def _image_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _images(paths: list[Path], height: int, width: int) -> Iterator[np.ndarray]:
    from PIL import Image

    for path in paths:
        with Image.open(path) as im:
            yield _resize(np.asarray(im.convert("RGB")), height, width)


@register_frame_source("folder", claims=lambda spec: Path(spec).is_dir())
def _folder(target: str, r: FrameRequest) -> FrameSource:
    path = Path(target)
    if not path.is_dir():
        raise DeviceError(f"image folder not found: {path}")
    paths = _image_paths(path)
    if not paths:
        raise DeviceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
    return FrameSource(_images(paths, r.height, r.width), False, f"images in {path}")


@register_frame_source("video", claims=lambda spec: Path(spec).is_file())
def _video(target: str, r: FrameRequest) -> FrameSource:
    if not Path(target).is_file():
        raise DeviceError(f"video file not found: {target}")
    return FrameSource(_capture(target, r.height, r.width), False, f"video {target}")


def _resolve(spec: str) -> tuple[_Entry, str]:
    """The source and its target for ``name:TARGET`` or a bare ``TARGET``."""
    name, colon, target = spec.partition(":")
    if colon and name in FRAME_SOURCES:
        return FRAME_SOURCES.get(name), target
    for entry in FRAME_SOURCES.entries():
        if entry.claims is not None and entry.claims(spec):
            return entry, spec
    raise DeviceError(
        f"source {spec!r} is not 'synthetic', 'parts', a camera index, a folder or a video file "
        f"(or NAME:TARGET with NAME one of {', '.join(FRAME_SOURCES.names())})"
    )


def open_source(
    spec: str,
    *,
    height: int,
    width: int,
    frames: int | None = None,
    fps: float | None = None,
    seed: int = 0,
) -> FrameSource:
    """Opens ``spec``: ``synthetic``, a folder of images, a video file, a camera
    index, or ``NAME:TARGET`` for any registered source (``camera:0``, ``video:a.mp4``).

    Args:
        spec: the ``--source`` string.
        height, width: the frame size; frames of another size are resized.
        frames: stop after this many frames (default: as many as the source has).
        fps: pace of generated frames (makes the synthetic source live).
        seed: seed of generated frames.

    Raises:
        DeviceError: a source that does not exist or cannot be opened.
    """
    entry, target = _resolve(spec)
    source = entry.open(target, FrameRequest(height, width, fps, seed))
    if frames is not None:
        source = FrameSource(
            itertools.islice(source.frames, frames), source.live, source.description
        )
    return source
