"""Frame sources for the device daemon: image folders, video files, cameras, synthetic frames.

Every source yields ``H x W x 3`` uint8 RGB frames of the bundle's frame size
(frames of another size are resized). No torch here: numpy, Pillow and, for
video and cameras, OpenCV (``pip install splitnet[device]``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitnet.device._runner import DeviceError
from splitnet.synthetic import rgb_frames

__all__ = ["FrameSource", "open_source"]

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


def _resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    if frame.shape[:2] == (height, width):
        return frame
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


def _images(folder: Path, height: int, width: int) -> Iterator[np.ndarray]:
    from PIL import Image

    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        with Image.open(path) as im:
            yield _resize(np.asarray(im.convert("RGB")), height, width)


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


def open_source(
    spec: str,
    *,
    height: int,
    width: int,
    frames: int | None = None,
    fps: float | None = None,
    seed: int = 0,
) -> FrameSource:
    """Opens ``spec``: ``synthetic``, a folder of images, a video file, or a camera index.

    Raises:
        ValueError: a source that does not exist or cannot be opened.
    """
    if spec == "synthetic":
        it, live, desc = (
            rgb_frames(height, width, seed=seed),
            fps is not None,
            "synthetic steel frames",
        )
    elif spec.isdigit():
        it, live, desc = _capture(int(spec), height, width), True, f"camera {spec}"
    else:
        path = Path(spec)
        if path.is_dir():
            it, live, desc = _images(path, height, width), False, f"images in {path}"
            if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
                raise DeviceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
        elif path.is_file():
            it, live, desc = _capture(str(path), height, width), False, f"video {path}"
        else:
            raise DeviceError(
                f"source {spec!r} is not 'synthetic', a camera index, a folder or a video file"
            )
    if frames is not None:
        it = itertools.islice(it, frames)
    return FrameSource(it, live, desc)
