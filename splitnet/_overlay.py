"""Defect masks drawn over a frame, for people to look at (numpy only).

:func:`overlay` tints each class's pixels with its colour and outlines them;
:func:`comparison` stacks a frame's ground truth above its prediction.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLASS_COLORS", "comparison", "overlay"]

# one colour per class (RGB), distinct on grey steel: the matplotlib tab10 colours
CLASS_COLORS = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (23, 190, 207),
)


def overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``image`` with each class's pixels tinted and outlined in its colour.

    Args:
        image: ``H x W x 3`` or ``H x W`` uint8.
        masks: ``classes x H x W``, nonzero where the class is.
        alpha: opacity of the tint (the outline is opaque).

    Returns:
        ``H x W x 3`` uint8.
    """
    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image
    if masks.shape[1:] != rgb.shape[:2]:
        raise ValueError(f"masks of shape {masks.shape} for an image of shape {image.shape}")
    out = rgb.astype(np.float32)
    for k, plane in enumerate(masks.astype(bool)):
        if not plane.any():
            continue
        color = np.array(CLASS_COLORS[k % len(CLASS_COLORS)], np.float32)
        out[plane] = (1 - alpha) * out[plane] + alpha * color
        out[_edge(plane)] = color
    return out.round().astype(np.uint8)


def _edge(plane: np.ndarray) -> np.ndarray:
    """The pixels of ``plane`` with a 4-neighbour outside it."""
    p = np.pad(plane, 1)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return plane & ~inner


def comparison(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """The ground truth's overlay above the prediction's, a white line between them."""
    top, bottom = overlay(image, truth), overlay(image, prediction)
    line = np.full((2, top.shape[1], 3), 255, np.uint8)
    return np.concatenate([top, line, bottom], axis=0)
