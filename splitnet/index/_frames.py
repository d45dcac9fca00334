"""Labelled images and video frames from ``DIR/<label>/*`` (OpenCV, torch-free).

Images (``.png .jpg .jpeg .bmp .tif .tiff .webp .ppm .pgm``) give one reference each;
video clips (``.mp4 .avi .mov .mkv``) give frames, either every ``every``-th frame
(0, N, 2N, ...) or, with ``scene_change=T``, the first frame and each frame whose
HSV histogram's Bhattacharyya distance to the last kept frame exceeds ``T``.
A file that is neither (or that does not decode) raises naming it, unless
``skip_unreadable`` is set; hidden files (``.*``) are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitnet.index._features import IndexError_, _need, histogram

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "Frame", "list_files", "read_frames"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")


@dataclass(frozen=True)
class Frame:
    """One reference: its id (``label/file`` or ``label/clip.mp4#frame=N``), label, RGB."""

    id: str
    label: str
    rgb: np.ndarray


def list_files(root: str | os.PathLike) -> tuple[list[str], list[tuple[Path, str]]]:
    """``(labels, [(file, label), ...])`` of ``root/<label>/*``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise IndexError_(f"data folder not found: {root}")
    labels = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not labels:
        raise IndexError_(f"{root} has no label folders (expected {root}/<label>/<image or clip>)")
    files = [
        (f, label)
        for label in labels
        for f in sorted((root / label).rglob("*"))
        if f.is_file() and not f.name.startswith(".")
    ]
    return labels, files


def _read_image(path: Path) -> np.ndarray | None:
    cv2 = _need("cv2", "device")
    data = np.fromfile(str(path), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_frames(
    path: Path,
    label: str,
    *,
    root: Path,
    every: int = 10,
    scene_change: float | None = None,
    skip_unreadable: bool = False,
) -> Iterator[Frame]:
    """The references that ``path`` gives (one for an image, frames for a clip)."""
    cv2 = _need("cv2", "device")
    rel = path.relative_to(root).as_posix()
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        rgb = _read_image(path)
        if rgb is not None:
            yield Frame(rel, label, rgb)
            return
    elif ext in VIDEO_EXTENSIONS:
        cap = cv2.VideoCapture(str(path))
        n, kept, last = 0, 0, None
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                if scene_change is None:
                    keep = n % every == 0
                else:
                    h = histogram(rgb, "hsv")
                    keep = last is None or (
                        cv2.compareHist(last, h, cv2.HISTCMP_BHATTACHARYYA) > scene_change
                    )
                    if keep:
                        last = h
                if keep:
                    kept += 1
                    yield Frame(f"{rel}#frame={n}", label, rgb)
                n += 1
        finally:
            cap.release()
        if n:
            return
    if not skip_unreadable:
        raise IndexError_(
            f"not an image or video clip OpenCV can read: {path} "
            f"(use --skip-unreadable to leave such files out)"
        )
