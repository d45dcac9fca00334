"""Image codecs: the frame itself as PNG or JPEG (Pillow), for the image baseline.

An ``image`` bundle (``splitnet export MODEL --whole --image-codec png``) has no
head: the device codes the raw ``1 x H x W x 3`` uint8 frame with one of these
codecs and the server runs the whole model on the decoded frame. The payload is
the PNG or JPEG file as is (what any client of an image service would send),
not a splitnet payload, so it decodes with its codec instance
(``codec.decode(payload)``), not with :func:`splitnet.codec.decode`.

A frame whose three channels are equal (a grayscale camera, as the steel frames)
is coded as one channel and decoded back to three, as the rate-accuracy sweep's
image baselines measure it (one implementation: :func:`encode_image`,
:func:`decode_image`). Decoding reads the image's header first and refuses a
size other than ``max_elements`` allows before any sample is decompressed; a
truncated or corrupted file raises :class:`CodecError`.

Torch-free: numpy and Pillow.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitnet.codec._base import register_codec
from splitnet.codec._format import MAX_ELEMENTS, CodecError

__all__ = ["IMAGE_CODECS", "PNG_OPTIONS", "ImageCodec", "decode_image", "encode_image"]

IMAGE_CODECS = ("png", "jpeg")

# The one PNG setting of every image baseline (profile, rate-accuracy, image bundles):
# Pillow's strongest lossless setting (zlib level 9 with its optimizer), the fairest
# figure for "send the image instead".
PNG_OPTIONS = {"optimize": True}

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG"}
# how a whole file ends (the IEND chunk; the EOI marker): Pillow decodes a file cut after
# its last samples without a word, so a truncated payload is caught here
_TRAILERS = {"png": b"\x00\x00\x00\x00IEND\xaeB`\x82", "jpeg": b"\xff\xd9"}


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - depends on the host
        raise ImportError("image codecs need Pillow: pip install 'splitnet[device]'") from None
    return Image


def encode_image(a: np.ndarray, fmt: str, quality: int | None = None) -> bytes:
    """``H x W`` (grayscale) or ``H x W x 3`` (RGB) uint8 samples -> PNG or JPEG bytes."""
    Image = _pil()
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(a).save(buf, format="PNG", **PNG_OPTIONS)
    else:
        Image.fromarray(a).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_image(payload: bytes, mode: str) -> np.ndarray:
    """PNG or JPEG bytes -> samples in Pillow ``mode`` (``"L"``, ``"RGB"``); no size check."""
    Image = _pil()
    with Image.open(io.BytesIO(payload)) as im:
        return np.asarray(im.convert(mode)).copy()


@dataclass(frozen=True)
class ImageCodec:
    """The frame as a PNG (lossless) or JPEG (``quality`` 1..100) file.

    Attributes:
        name: ``"png"`` or ``"jpeg"``.
        quality: the JPEG quality (``None`` for PNG).

    Example:
        >>> codec = get_codec("jpeg", quality=95)
        >>> frame = np.zeros((1, 64, 384, 3), np.uint8)
        >>> [a.shape for a in codec.decode(codec.encode([frame]))]
        [(1, 64, 384, 3)]
    """

    name: str
    quality: int | None = None

    @property
    def quantizes(self) -> bool:
        return False

    def config(self) -> dict[str, Any]:
        """``{"name": ..., "quality": ...}``; ``get_codec(**config)`` rebuilds it."""
        return (
            {"name": self.name}
            if self.quality is None
            else {"name": self.name, "quality": self.quality}
        )

    def calibrate(self, batches) -> ImageCodec:
        raise CodecError(f"codec {self.name!r} does not quantize; nothing to calibrate")

    def encode(self, arrays: Sequence[np.ndarray]) -> bytes:
        """One ``1 x H x W x 3`` (or ``H x W x 3``) uint8 frame -> the image file's bytes."""
        if isinstance(arrays, np.ndarray) or len(arrays) != 1:
            raise CodecError(f"codec {self.name!r} codes one frame: pass [frame]")
        a = np.asarray(arrays[0])
        if a.ndim == 4 and a.shape[0] == 1:
            a = a[0]
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise CodecError(
                f"codec {self.name!r} codes an H x W x 3 uint8 frame, got "
                f"{'x'.join(map(str, a.shape))} {a.dtype}"
            )
        if (a == a[:, :, :1]).all():  # a grayscale frame: one channel on the wire
            a = a[:, :, 0]
        return encode_image(np.ascontiguousarray(a), self.name, self.quality)

    def decode(
        self,
        payload: bytes,
        *,
        max_elements: int | None = None,
        shapes: Sequence[Sequence[int]] | None = None,
    ) -> list[np.ndarray]:
        """The image file -> ``[1 x H x W x 3 uint8]``.

        Args:
            payload: the file.
            max_elements: the most samples it may hold.
            shapes: the bundle's frame shape (``[(1, H, W, C)]``), checked from the
                header: another size is refused before decompressing.

        Raises:
            CodecError: not a file of this codec's format, more samples than
                ``max_elements`` or another size than ``shapes`` (checked from the
                header, before decompressing),
                a mode other than grayscale or RGB, or a truncated/corrupted file.
        """
        Image = _pil()
        limit = MAX_ELEMENTS if max_elements is None else max_elements
        try:
            data = bytes(memoryview(payload).cast("B"))
        except TypeError as e:
            raise CodecError(f"payload must be a bytes-like object: {e}") from None
        if not data.endswith(_TRAILERS[self.name]):
            raise CodecError(f"not a whole {self.name} file: truncated or corrupted")
        try:
            with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[self.name]]) as im:
                w, h = im.size
                if im.mode not in ("L", "RGB"):
                    raise CodecError(f"{self.name} image of mode {im.mode}; frames are L or RGB")
                if shapes is not None and (len(shapes) != 1 or tuple(shapes[0])[1:3] != (h, w)):
                    want = "x".join(map(str, tuple(shapes[0])[1:3])) if shapes else "nothing"
                    raise CodecError(f"{self.name} image of {h}x{w}; the bundle takes {want}")
                if w * h * 3 > limit:
                    raise CodecError(
                        f"{self.name} image of {w}x{h} exceeds the limit of {limit} samples"
                    )
                im.load()
                rgb = np.asarray(im.convert("RGB"))
        except CodecError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
            # Pillow's UnidentifiedImageError, truncated files and decompression bombs included
            raise CodecError(f"not a valid {self.name} image: {e}") from None
        except Image.DecompressionBombError as e:  # Pillow's own limit, opening the file
            raise CodecError(f"{self.name} image too large: {e}") from None
        return [rgb[None].copy()]


@register_codec("png")
def _png(**options: Any) -> ImageCodec:
    if options:
        raise CodecError(f"codec 'png' has no option {', '.join(map(repr, sorted(options)))}")
    return ImageCodec("png")


@register_codec("jpeg")
def _jpeg(*, quality: int = 95, **options: Any) -> ImageCodec:
    if options:
        raise CodecError(
            f"codec 'jpeg' has no option {', '.join(map(repr, sorted(options)))}; valid options: quality"
        )
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise CodecError(f"JPEG quality must be an integer from 1 to 100, got {quality!r}")
    return ImageCodec("jpeg", quality)
