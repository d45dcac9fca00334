"""Remote-inference baseline: what sending the image itself would cost."""

from __future__ import annotations

import io
import os

import numpy as np

__all__ = ["STAND_IN", "image_png_bytes", "steel_like_frame"]

STAND_IN = "synthetic steel-like grayscale texture (seed 0), replicated to each channel"


def steel_like_frame(height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """A deterministic stand-in for a steel-strip camera frame, ``uint8 [H, W]``.

    A smooth grey level that drifts along the strip, horizontal rolling marks
    (slowly varying per row), low-contrast blotches and fine sensor grain (a
    few grey levels). Real frames differ; the PNG size depends on the content.
    """
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height)[:, None]
    x = np.linspace(0.0, 1.0, width)[None, :]
    base = 95 + 25 * np.sin(2 * np.pi * (0.6 * x + 0.15)) * np.cos(np.pi * y)
    rows = np.cumsum(rng.normal(0, 0.6, height))  # rolling marks: a random walk across rows
    rows = (rows - rows.mean())[:, None]
    blotch = _smooth(rng.normal(0, 1, (max(height // 32, 2), max(width // 32, 2))), height, width)
    grain = rng.normal(0, 2.0, (height, width))
    frame = base + rows + 8 * blotch + grain
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def _smooth(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a coarse noise grid to ``height x width``."""
    from PIL import Image

    img = Image.fromarray(coarse.astype(np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.BILINEAR), dtype=np.float64)


def image_png_bytes(
    channels: int, height: int, width: int, *, image: str | os.PathLike | None = None
) -> int | None:
    """Bytes of one frame as PNG (Pillow, default compression).

    Args:
        channels: 1 (grayscale) or 3 (RGB); other counts have no PNG baseline.
        height, width: frame size; ``image`` is resized to it.
        image: a real image file; default: :func:`steel_like_frame`.

    Returns:
        The PNG size in bytes, or ``None`` when ``channels`` is not 1 or 3.

    Raises:
        OSError: ``image`` cannot be read as an image.
    """
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        return None
    mode = "L" if channels == 1 else "RGB"
    if image is None:
        gray = Image.fromarray(steel_like_frame(height, width), mode="L")
        img = gray if channels == 1 else Image.merge("RGB", (gray, gray, gray))
    else:
        try:
            with Image.open(image) as src:
                img = src.convert(mode)
        except UnidentifiedImageError:
            raise OSError(f"cannot read {os.fspath(image)!r} as an image") from None
        if img.size != (width, height):
            img = img.resize((width, height), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.tell()
