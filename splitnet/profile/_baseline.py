"""Remote-inference baseline: what sending the image itself would cost."""

from __future__ import annotations

import os

import numpy as np

from splitnet.codec._image import PNG_OPTIONS, decode_image, encode_image
from splitnet.synthetic import make_frame

__all__ = [
    "PNG_OPTIONS",
    "STAND_IN",
    "code_image",
    "decode_image",
    "encode_image",
    "image_png_bytes",
]

STAND_IN = "frame 0 of the synthetic steel dataset (splitnet.synthetic, seed 0), grayscale replicated to each channel"


def image_png_bytes(
    channels: int, height: int, width: int, *, image: str | os.PathLike | None = None
) -> int | None:
    """Bytes of one frame as PNG (Pillow, :data:`PNG_OPTIONS`).

    Args:
        channels: 1 (grayscale) or 3 (RGB); other counts have no PNG baseline.
        height, width: frame size; ``image`` is resized to it.
        image: a real image file; default: frame 0 of :func:`splitnet.synthetic.make_frame`.

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
        gray = Image.fromarray(make_frame(0, 0, height, width)[0], mode="L")
        img = gray if channels == 1 else Image.merge("RGB", (gray, gray, gray))
    else:
        try:
            with Image.open(image) as src:
                img = src.convert(mode)
        except UnidentifiedImageError:
            raise OSError(f"cannot read {os.fspath(image)!r} as an image") from None
        if img.size != (width, height):
            img = img.resize((width, height), Image.BILINEAR)
    return len(code_image(np.asarray(img), "png")[1])


def code_image(a: np.ndarray, fmt: str, quality: int | None = None) -> tuple[np.ndarray, bytes]:
    """Encodes an image with Pillow and decodes it again: the image baseline's coding.

    Args:
        a: ``H x W`` (grayscale) or ``H x W x 3`` (RGB) uint8 samples.
        fmt: ``"png"`` (lossless, :data:`PNG_OPTIONS`) or ``"jpeg"``.
        quality: the JPEG quality, 1..100 (ignored for PNG).

    Returns:
        ``(decoded, payload)``: the decoded samples, shaped as ``a``, and the file's bytes.
    """
    payload = encode_image(a, fmt, quality)
    return decode_image(payload, "L" if a.ndim == 2 else "RGB"), payload
