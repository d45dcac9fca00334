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

__all__ = [
    "DEFECT_CLASSES",
    "PART_CLASSES",
    "make_frame",
    "make_part",
    "make_part_sample",
    "part_frames",
    "rgb_frames",
]

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


# --- component classification: one part per frame, six classes -------------------------

PART_CLASSES = ("resistor", "capacitor", "ic", "screw", "nut", "washer")


def _box(u: np.ndarray, v: np.ndarray, hu: float, hv: float, r: float = 0.0) -> np.ndarray:
    """Signed distance (pixels) to a box of half-sizes ``hu`` x ``hv`` with corner radius ``r``."""
    qu, qv = np.abs(u) - (hu - r), np.abs(v) - (hv - r)
    outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
    return outside + np.minimum(np.maximum(qu, qv), 0) - r


def _hexagon(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Signed distance to a regular hexagon of inner radius ``r`` (flat sides along u)."""
    kx, ky, kz = -0.8660254, 0.5, 0.57735027
    pu, pv = np.abs(u), np.abs(v)
    dot = np.minimum(kx * pu + ky * pv, 0.0)
    pu, pv = pu - 2 * dot * kx, pv - 2 * dot * ky
    pu = pu - np.clip(pu, -kz * r, kz * r)
    pv = pv - r
    return np.hypot(pu, pv) * np.sign(pv)


def _paint(img: np.ndarray, dist: np.ndarray, colour, shade: np.ndarray | float = 1.0) -> None:
    """Composites ``colour`` (RGB in [0, 1]) where ``dist < 0``, anti-aliased over one pixel."""
    alpha = np.clip(0.5 - dist, 0.0, 1.0)
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # paint only the part's box
    a = alpha[box][..., None]
    shade = np.broadcast_to(np.asarray(shade, np.float64), alpha.shape)[box]
    img[box] = img[box] * (1 - a) + a * (np.asarray(colour, np.float64) * shade[..., None])


def _blur(a: np.ndarray, k: int, axis: int) -> np.ndarray:
    """A ``k``-wide moving average along ``axis`` (edges padded by reflection)."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (k // 2 + 1, k // 2)
    c = np.cumsum(np.pad(a, pad, mode="reflect"), axis=axis)
    n = a.shape[axis]
    return (np.take(c, range(k, k + n), axis=axis) - np.take(c, range(n), axis=axis)) / k


def _part_background(rng: np.random.Generator, s: int) -> np.ndarray:
    """A textured board or tray: a tinted base, blotchy low-frequency texture, grain."""
    base = rng.uniform(0.25, 0.7) * (1 + rng.uniform(-0.25, 0.25, 3))
    coarse = rng.normal(0, 1, (s // 8 + 2, s // 8 + 2))
    coarse = np.kron(coarse, np.ones((8, 8)))[:s, :s]
    coarse = _blur(_blur(coarse, 7, 0), 7, 1)  # smooth the blocks into blotches
    tex = 0.06 * coarse + rng.normal(0, 0.03, (s, s))
    return np.clip(base[None, None, :] + tex[..., None], 0, 1)


def _clutter(img: np.ndarray, rng: np.random.Generator, yy, xx, s: int) -> None:
    """Distractors: small specks, short strokes (solder, scratches), a blob."""
    for _ in range(rng.integers(1, 5)):
        cy, cx = rng.uniform(0, s, 2)
        colour = rng.uniform(0.1, 0.9, 3)
        kind = rng.integers(3)
        if kind == 0:
            d = np.hypot(yy - cy, xx - cx) - rng.uniform(0.01, 0.04) * s
        elif kind == 1:
            a = rng.uniform(0, np.pi)
            u = np.cos(a) * (xx - cx) + np.sin(a) * (yy - cy)
            v = -np.sin(a) * (xx - cx) + np.cos(a) * (yy - cy)
            d = _box(u, v, rng.uniform(0.05, 0.15) * s, rng.uniform(0.005, 0.015) * s)
        else:
            a = rng.uniform(0, np.pi)
            u = np.cos(a) * (xx - cx) + np.sin(a) * (yy - cy)
            v = -np.sin(a) * (xx - cx) + np.cos(a) * (yy - cy)
            d = _box(u, v, rng.uniform(0.03, 0.08) * s, rng.uniform(0.02, 0.06) * s, 0.02 * s)
        _paint(img, d, colour)


def _metal(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.55, 0.9) * (1 + rng.uniform(-0.08, 0.08, 3))


def make_part(cls: int | str, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """One ``size x size x 3`` uint8 RGB image of a component of class ``cls``.

    The part is drawn from signed distance functions (anti-aliased), at a random
    position, rotation, scale and colour, on a textured background with clutter,
    under a random lighting gradient and sensor noise. Screws, nuts and washers are
    metal; washers and nuts differ in their outline (round or hexagonal), resistors
    and capacitors in their body (banded and slim, or plain with a stripe).
    """
    c = PART_CLASSES.index(cls) if isinstance(cls, str) else int(cls)
    if not 0 <= c < len(PART_CLASSES):
        raise ValueError(f"part class {cls!r} out of range")
    s = size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) + 0.5
    img = _part_background(rng, s)
    _clutter(img, rng, yy, xx, s)
    scale = rng.uniform(0.4, 0.95) * s  # the part's nominal length in pixels
    cy, cx = rng.uniform(0.35, 0.65, 2) * s
    a = rng.uniform(0, 2 * np.pi)
    u = np.cos(a) * (xx - cx) + np.sin(a) * (yy - cy)
    v = -np.sin(a) * (xx - cx) + np.cos(a) * (yy - cy)
    name = PART_CLASSES[c]
    if name in ("resistor", "capacitor"):
        length, radius = scale * 0.5, scale * rng.uniform(0.08, 0.13)
        if name == "capacitor":
            length, radius = scale * rng.uniform(0.32, 0.45), scale * rng.uniform(0.14, 0.2)
        lead = rng.uniform(0.1, 0.22) * scale
        _paint(img, _box(u, v, length / 2 + lead, 0.012 * s + 0.5), _metal(rng))
        shade = 0.75 + 0.35 * np.cos(np.clip(v / radius, -1, 1) * np.pi / 2)
        body = rng.uniform(0.15, 0.9, 3)
        _paint(img, _box(u, v, length / 2, radius, radius * 0.8), body, shade)
        if name == "resistor":  # three or four colour bands across the body
            n = rng.integers(3, 5)
            for i in range(n):
                pos = (-0.3 + 0.6 * i / (n - 1)) * length
                band = _box(u - pos, v, 0.045 * length + 0.4, radius * 0.95)
                _paint(
                    img,
                    np.maximum(band, _box(u, v, length / 2, radius, radius * 0.8)),
                    rng.uniform(0, 1, 3),
                    shade,
                )
        else:  # a light polarity stripe along one side
            stripe = _box(u, v - radius * 0.55, length / 2 * 0.92, radius * 0.22)
            _paint(img, stripe, np.clip(body + 0.45, 0, 1), shade)
    elif name == "ic":
        hu, hv = scale * rng.uniform(0.3, 0.42), scale * rng.uniform(0.16, 0.24)
        pins = rng.integers(3, 8)
        pitch = 2 * hu / pins
        for i in range(pins):
            pu = -hu + pitch * (i + 0.5)
            for side in (-1, 1):
                _paint(
                    img,
                    _box(u - pu, v - side * (hv + 0.05 * scale), pitch * 0.28, 0.06 * scale),
                    _metal(rng) * 0.9,
                )
        dark = rng.uniform(0.05, 0.25) * np.ones(3)
        _paint(img, _box(u, v, hu, hv, 0.02 * scale), dark)
        _paint(img, np.hypot(u + hu * 0.7, v + hv * 0.5) - 0.04 * scale, dark + 0.2)
    elif name == "screw":
        head_r, shaft = scale * rng.uniform(0.13, 0.18), scale * rng.uniform(0.45, 0.65)
        metal = _metal(rng)
        shade = 0.8 + 0.25 * np.cos(np.clip(v / (head_r * 0.5), -1, 1) * np.pi / 2)
        thread = 0.85 + 0.2 * np.sign(np.sin(u / (0.025 * scale) * np.pi))
        shaft_d = _box(u - shaft / 2, v, shaft / 2, head_r * 0.45, head_r * 0.2)
        _paint(img, shaft_d, metal, shade * thread)
        _paint(img, _box(u, v, head_r * 0.45, head_r, head_r * 0.35), metal * 1.05, shade)
        _paint(img, _box(u + head_r * 0.1, v, head_r * 0.12, head_r * 0.7), metal * 0.4)
    else:  # nut or washer: top view of a flat part with a hole
        outer = scale * rng.uniform(0.22, 0.32)
        metal = _metal(rng)
        if name == "nut":
            outline = _hexagon(u, v, outer * 0.9)
            hole = outer * rng.uniform(0.38, 0.5)
        else:
            outline = np.hypot(u, v) - outer
            hole = outer * rng.uniform(0.4, 0.6)
        light = 0.85 + 0.2 * (u / outer).clip(-1, 1)
        _paint(img, np.maximum(outline, hole - np.hypot(u, v)), metal, light)
    if rng.random() < 0.3:  # clutter over the part: partly occluded
        _clutter(img, rng, yy, xx, s)
    # lighting: a linear gradient and a vignette, then sensor noise
    ang = rng.uniform(0, 2 * np.pi)
    grad = 1 + rng.uniform(0, 0.35) * ((np.cos(ang) * xx + np.sin(ang) * yy) / s - 0.5)
    vignette = 1 - rng.uniform(0, 0.3) * (np.hypot(xx - s / 2, yy - s / 2) / s) ** 2
    img = img * (grad * vignette * rng.uniform(0.7, 1.2))[..., None]
    img += rng.normal(0, rng.uniform(0.01, 0.07), img.shape)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def make_part_sample(seed: int, index: int, size: int = 96) -> tuple[np.ndarray, int]:
    """Sample ``index`` of a part set: ``(size x size x 3 uint8 image, class index)``;
    ``(seed, index)`` determines both, the classes balanced in every run of six."""
    rng = np.random.default_rng([seed, index, 7])
    label = int(index % len(PART_CLASSES))
    return make_part(label, rng, size), label


def part_frames(height: int, width: int, *, seed: int = 0, start: int = 0) -> Iterator[np.ndarray]:
    """Endless ``H x W x 3`` uint8 RGB frames of components (drawn square at the
    smaller side, then centred on a frame of the asked size): a camera over a
    conveyor of parts."""
    index = start
    side = min(height, width)
    while True:
        part, _ = make_part_sample(seed, index, side)
        if (height, width) == (side, side):
            yield part
        else:
            frame = np.empty((height, width, 3), np.uint8)
            frame[...] = part.mean(axis=(0, 1)).astype(np.uint8)
            y0, x0 = (height - side) // 2, (width - side) // 2
            frame[y0 : y0 + side, x0 : x0 + side] = part
            yield frame
        index += 1
