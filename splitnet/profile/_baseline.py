"""Remote-inference baseline: what sending the image itself would cost."""

from __future__ import annotations

import io
import os

from splitnet.synthetic import make_frame

__all__ = ["STAND_IN", "image_png_bytes"]

STAND_IN = "frame 0 of the synthetic steel dataset (splitnet.synthetic, seed 0), grayscale replicated to each channel"


def image_png_bytes(
    channels: int, height: int, width: int, *, image: str | os.PathLike | None = None
) -> int | None:
    """Bytes of one frame as PNG (Pillow, default compression).

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
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.tell()
