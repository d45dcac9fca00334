"""Procedural steel surfaces with four defect classes, seeded, of any size (numpy only).

Each frame is a grayscale rolled-steel texture (brushed streaks along the
rolling direction, a slow illumination gradient, sensor noise) with zero to
three defects drawn on it. The four classes have distinct shapes, so that a
segmentation model has something to learn:

1. ``scratch``: long thin straight lines at a shallow angle, bright or dark;
2. ``pits``: clusters of small dark round spots;
3. ``patch``: a large irregular blob of different brightness and texture;
4. ``crack``: a dark jagged branching polyline.

Masks follow Severstal's layout: one ``H x W`` binary plane per class
(``classes x H x W`` uint8). Frame ``i`` depends only on ``(seed, i)``, so a
dataset of any length is generated lazily and identically on every machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["DEFECT_CLASSES", "make_frame", "rgb_frames"]

DEFECT_CLASSES = ("scratch", "pits", "patch", "crack")


def _segment_distance(
    yy: np.ndarray, xx: np.ndarray, p0: tuple[float, float], p1: tuple[float, float]
) -> np.ndarray:
    """Distance of each pixel (``yy``, ``xx``) to the segment ``p0``-``p1`` (row, col)."""
    (y0, x0), (y1, x1) = p0, p1
    dy, dx = y1 - y0, x1 - x0
    length2 = dy * dy + dx * dx
    t = 0.0 if length2 == 0 else np.clip(((yy - y0) * dy + (xx - x0) * dx) / length2, 0.0, 1.0)
    return np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))


def _draw_segment(
    mask: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], width: float
) -> None:
    """Sets the pixels of ``mask`` within ``width / 2`` of the segment (in place)."""
    h, w = mask.shape
    r = width / 2 + 1
    y_lo, y_hi = int(max(0, min(p0[0], p1[0]) - r)), int(min(h, max(p0[0], p1[0]) + r + 1))
    x_lo, x_hi = int(max(0, min(p0[1], p1[1]) - r)), int(min(w, max(p0[1], p1[1]) + r + 1))
    if y_lo >= y_hi or x_lo >= x_hi:
        return
    yy, xx = np.mgrid[y_lo:y_hi, x_lo:x_hi].astype(np.float32)
    mask[y_lo:y_hi, x_lo:x_hi] |= _segment_distance(yy, xx, p0, p1) <= width / 2


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Brushed steel in [0, 1]: streaks along x, a gradient, a little noise."""
    base = rng.uniform(0.35, 0.6)
    # streaks: per-row noise smoothed along rows, stretched along the rolling direction (x)
    rows = np.convolve(rng.normal(0, 1, h + 8), np.ones(5) / 5, mode="same")[4 : h + 4]
    streak_cols = np.repeat(rng.normal(0, 1, w // 16 + 2), 16)[:w]
    streaks = 0.04 * rows[:, None] + 0.01 * streak_cols[None, :]
    gx = np.linspace(-1, 1, w)[None, :] * rng.uniform(-0.08, 0.08)
    gy = np.linspace(-1, 1, h)[:, None] * rng.uniform(-0.05, 0.05)
    noise = rng.normal(0, 0.025, (h, w))
    return base + streaks + gx + gy + noise


def _scratch(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    for _ in range(rng.integers(1, 3)):
        length = rng.uniform(0.25, 0.6) * w
        angle = rng.uniform(-0.25, 0.25)
        y0, x0 = rng.uniform(0.1 * h, 0.9 * h), rng.uniform(0, w - length * 0.9)
        y1, x1 = y0 + np.sin(angle) * length, x0 + np.cos(angle) * length
        _draw_segment(mask, (y0, x0), (y1, x1), width=max(1.5, h / 48))
    return mask


def _pits(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    cy, cx = rng.uniform(0.15 * h, 0.85 * h), rng.uniform(0.05 * w, 0.95 * w)
    spread = rng.uniform(0.08, 0.18) * h
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(4, 10)):
        py, px = cy + rng.normal(0, spread), cx + rng.normal(0, spread * 1.5)
        r = rng.uniform(0.025, 0.05) * h
        mask |= (yy - py) ** 2 + (xx - px) ** 2 <= r * r
    return mask


def _patch(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    cy, cx = rng.uniform(0.25 * h, 0.75 * h), rng.uniform(0.1 * w, 0.9 * w)
    ry, rx = rng.uniform(0.15, 0.35) * h, rng.uniform(0.25, 0.6) * h
    yy, xx = np.mgrid[0:h, 0:w]
    theta = np.arctan2((yy - cy) / ry, (xx - cx) / rx)
    radius = np.hypot((yy - cy) / ry, (xx - cx) / rx)
    # a wobbly boundary: a few random harmonics of the angle
    wobble = np.ones_like(theta)
    for k in (2, 3, 5):
        wobble += rng.uniform(-0.12, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return radius <= wobble


def _crack(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    width = max(1.5, h / 40)
    step = h / 10
    branches = [
        (rng.uniform(0.1 * h, 0.9 * h), rng.uniform(0.05 * w, 0.8 * w), rng.uniform(0, 2 * np.pi))
    ]
    for b in range(3):
        if b >= len(branches):
            break
        y, x, heading = branches[b]
        for _ in range(rng.integers(6, 14)):
            heading += rng.normal(0, 0.6)  # jagged: large turns between short segments
            ny, nx = y + np.sin(heading) * step, x + np.cos(heading) * step
            _draw_segment(mask, (y, x), (ny, nx), width)
            y, x = float(np.clip(ny, 0, h - 1)), float(np.clip(nx, 0, w - 1))
            if rng.random() < 0.15:
                branches.append((y, x, heading + rng.choice([-1, 1]) * rng.uniform(0.6, 1.2)))
    return mask


_SHAPES = (_scratch, _pits, _patch, _crack)


def make_frame(
    seed: int, index: int, height: int = 128, width: int = 800, p_defect: float = 0.4
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic frame.

    Args:
        seed: dataset seed.
        index: frame index; ``(seed, index)`` determines the frame.
        height, width: frame size in pixels.
        p_defect: probability that each class appears in a frame.

    Returns:
        ``(image, masks)``: ``H x W`` uint8 grayscale and ``4 x H x W`` uint8 {0, 1}.
    """
    rng = np.random.default_rng([seed, index])
    h, w = height, width
    img = _texture(rng, h, w)
    masks = np.zeros((len(_SHAPES), h, w), np.uint8)
    present = rng.random(len(_SHAPES)) < p_defect
    if present.sum() > 3:
        present[rng.integers(len(_SHAPES))] = False
    for c in np.flatnonzero(present):
        m = _SHAPES[c](rng, h, w)
        if c == 0:  # scratch: bright or dark line
            img[m] += rng.choice([-1, 1]) * rng.uniform(0.2, 0.3)
        elif c == 1:  # pits: dark spots with a soft rim
            img[m] -= rng.uniform(0.22, 0.32)
        elif c == 2:  # patch: shifted brightness and a coarser grain
            img[m] += rng.choice([-1, 1]) * rng.uniform(0.1, 0.18) + rng.normal(0, 0.05, m.sum())
        else:  # crack: dark
            img[m] -= rng.uniform(0.25, 0.35)
        masks[c] = m
    image = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    return image, masks


def rgb_frames(
    height: int, width: int, *, seed: int = 0, start: int = 0, p_defect: float = 0.4
) -> Iterator[np.ndarray]:
    """Endless ``H x W x 3`` uint8 RGB frames (the grayscale frame on every channel):
    what a camera over a steel strip would give the device."""
    index = start
    while True:
        gray, _ = make_frame(seed, index, height, width, p_defect)
        yield np.repeat(gray[:, :, None], 3, axis=2)
        index += 1
