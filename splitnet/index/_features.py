"""What the index stores per image, and how two of them are compared (numpy, torch-free).

Every feature is computed from an ``H x W x 3`` uint8 RGB image:

- colour histograms (OpenCV ``calcHist``, L1-normalised) of the image resized to the
  index size, in the index's colour space, compared with ``cv2.compareHist``;
- perceptual hashes (``imagehash``) of the image as given: the hashes resize
  internally, so the device can hash a frame without knowing the index size; they are
  stored as packed bits (``np.packbits``) and compared by a vectorised popcount of the
  XOR (``np.bitwise_count`` on numpy >= 2, a 256-entry lookup table otherwise);
- a grey thumbnail at the index size for SSIM (scikit-image) and MSE.

OpenCV, imagehash and scikit-image are imported where used, with an error naming the
extra that installs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from splitnet._errors import SplitnetError

__all__ = [
    "COLOUR_SPACES",
    "HASH_METHODS",
    "HIST_METHODS",
    "METHODS",
    "IndexError_",
    "Method",
    "get_method",
    "hamming",
    "image_hash",
    "list_methods",
]


class IndexError_(SplitnetError):  # noqa: N801 - ``IndexError`` is a builtin
    """A bad index, query or method: the message says what is wrong."""


COLOUR_SPACES = ("rgb", "hsv", "grey")


def _need(module: str, extra: str = "research"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pip = {"cv2": "opencv-python-headless", "imagehash": "imagehash", "skimage": "scikit-image"}
        raise IndexError_(
            f"representative search needs {pip.get(module.split('.')[0], module)}: "
            f"pip install 'splitnet[{extra}]'"
        ) from None


@dataclass(frozen=True)
class Method:
    """One comparison method: its feature kind and whether a higher score is nearer."""

    name: str
    kind: str  # "hist", "hash" or "thumb"
    higher_is_better: bool
    description: str


HIST_METHODS = {
    "hist-correl": ("HISTCMP_CORREL", True, "histogram correlation (cv2.compareHist)"),
    "hist-chisqr": ("HISTCMP_CHISQR", False, "histogram chi-square (cv2.compareHist)"),
    "hist-intersect": ("HISTCMP_INTERSECT", True, "histogram intersection (cv2.compareHist)"),
    "hist-bhattacharyya": ("HISTCMP_BHATTACHARYYA", False, "Bhattacharyya (cv2.compareHist)"),
}
HASH_METHODS = {
    "ahash": "average hash (imagehash), Hamming distance",
    "phash": "perceptual DCT hash (imagehash), Hamming distance",
    "dhash": "difference hash (imagehash), Hamming distance",
    "whash": "wavelet hash (imagehash), Hamming distance",
    "colorhash": "colour hash (imagehash), Hamming distance",
}

METHODS: dict[str, Method] = {
    **{k: Method(k, "hist", hib, d) for k, (_, hib, d) in HIST_METHODS.items()},
    **{k: Method(k, "hash", False, d) for k, d in HASH_METHODS.items()},
    "ssim": Method("ssim", "thumb", True, "structural similarity (scikit-image), grey"),
    "mse": Method("mse", "thumb", False, "mean squared error of grey thumbnails"),
}


def list_methods() -> list[str]:
    """The comparison methods' names."""
    return list(METHODS)


def get_method(name: str) -> Method:
    """The method called ``name``; an unknown name raises, listing the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise IndexError_(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}") from None


# -- images ---------------------------------------------------------------------------


def as_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` (H x W grey, H x W x 3 RGB or H x W x 4 RGBA) as H x W x 3 uint8 RGB."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise IndexError_(f"images must be uint8, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise IndexError_(f"an image must be HxW, HxWx3 or HxWx4, got shape {a.shape}")
    return np.ascontiguousarray(a[:, :, :3])


def resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgb`` resized to ``size`` = (height, width) with area interpolation."""
    cv2 = _need("cv2", "device")
    h, w = size
    if rgb.shape[:2] == (h, w):
        return rgb
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)


def grey(rgb: np.ndarray) -> np.ndarray:
    """The luminance of ``rgb`` (uint8)."""
    cv2 = _need("cv2", "device")
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def histogram(rgb: np.ndarray, colour_space: str, bins: int = 8) -> np.ndarray:
    """The L1-normalised colour histogram (float32, flat) of ``rgb`` in ``colour_space``."""
    cv2 = _need("cv2", "device")
    if colour_space == "grey":
        h = cv2.calcHist([grey(rgb)], [0], None, [bins * 4], [0, 256])
    elif colour_space == "hsv":
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        h = cv2.calcHist([hsv], [0, 1, 2], None, [bins] * 3, [0, 180, 0, 256, 0, 256])
    elif colour_space == "rgb":
        h = cv2.calcHist([rgb], [0, 1, 2], None, [bins] * 3, [0, 256] * 3)
    else:
        raise IndexError_(
            f"unknown colour space {colour_space!r}; valid: {', '.join(COLOUR_SPACES)}"
        )
    h = h.ravel().astype(np.float32)
    return h / max(float(h.sum()), 1.0)


def image_hash(rgb: np.ndarray, method: str) -> np.ndarray:
    """The packed bits (uint8, ``np.packbits``) of ``method``'s imagehash of ``rgb``."""
    if method not in HASH_METHODS:
        raise IndexError_(f"unknown hash method {method!r}; valid: {', '.join(HASH_METHODS)}")
    imagehash = _need("imagehash", "device")
    from PIL import Image

    pil = Image.fromarray(as_rgb(rgb))
    fn: Callable = {
        "ahash": imagehash.average_hash,
        "phash": imagehash.phash,
        "dhash": imagehash.dhash,
        "whash": imagehash.whash,
        "colorhash": imagehash.colorhash,
    }[method]
    return np.packbits(np.asarray(fn(pil).hash, dtype=bool).ravel())


# -- comparison -----------------------------------------------------------------------

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming(refs: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Hamming distances between packed hashes: ``refs`` N x B uint8, ``query`` B uint8.

    One XOR and one popcount over the whole array, no Python loop over references.
    """
    x = np.bitwise_xor(refs, query[None, :])
    if hasattr(np, "bitwise_count"):
        counts = np.bitwise_count(x)
    else:  # numpy < 2
        counts = _POPCOUNT[x]
    return counts.sum(axis=1, dtype=np.int32)


def hist_scores(refs: np.ndarray, query: np.ndarray, method: str) -> np.ndarray:
    """``cv2.compareHist`` of ``query`` against each row of ``refs`` (float32)."""
    cv2 = _need("cv2", "device")
    flag = getattr(cv2, HIST_METHODS[method][0])
    q = np.ascontiguousarray(query, dtype=np.float32)
    return np.fromiter(
        (cv2.compareHist(q, r, flag) for r in refs), dtype=np.float64, count=len(refs)
    )


def mse_scores(flat: np.ndarray, sq_norms: np.ndarray, query: np.ndarray) -> np.ndarray:
    """MSE of ``query`` against float32 rows ``flat`` (N x H*W) with squared norms ``sq_norms``.

    ``|r - q|^2 = |r|^2 - 2 r.q + |q|^2``: one float32 matrix-vector product (BLAS) per
    query, 20x faster than the difference of every pixel; the float32 sums round by about
    1e-6 of ``|r|^2`` (at 64x64, a few tenths of an MSE of 0..65025).
    """
    q = query.astype(np.float32).ravel()
    d = sq_norms - 2.0 * (flat @ q) + float(q @ q)
    return np.maximum(d, 0.0).astype(np.float64) / q.shape[0]


def thumb_scores(refs: np.ndarray, query: np.ndarray, method: str) -> np.ndarray:
    """SSIM (scikit-image) or MSE of the grey ``query`` thumbnail against ``refs`` N x H x W."""
    if method == "mse":
        flat = refs.reshape(len(refs), -1).astype(np.float32)
        return mse_scores(flat, np.einsum("ij,ij->i", flat, flat), query)
    metrics = _need("skimage.metrics")
    win = min(7, *query.shape) // 2 * 2 + 1 if min(query.shape) < 7 else 7
    return np.array(
        [metrics.structural_similarity(query, r, data_range=255, win_size=win) for r in refs]
    )
