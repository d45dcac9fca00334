"""Uniform affine quantization to n bits, clipping ranges, and 16-bit float casts.

A range ``[lo, hi]`` and a width ``bits`` give ``L = 2**bits`` levels at
``lo + k * step``, ``step = (hi - lo) / (L - 1)``. Encoding rounds to the
nearest level (half up) after clipping to the range, so the error is at most
half a step inside the range. When the whole tensor is non-negative, ``lo`` is
0 so post-ReLU zeros decode exactly.

Tensors are viewed as ``(N, G, S)``: ``G`` range groups (channels on axis 1
for per-channel granularity, else 1), ``N`` the product of the axes before,
``S`` of the axes after. Every operation below is a numpy expression over that
view with the ranges broadcast as ``(1, G, 1)``; nothing loops over elements
or channels.
"""

from __future__ import annotations

import math

import numpy as np

from splitnet.codec._format import CodecError

__all__ = [
    "bf16_bits",
    "bf16_to_f32",
    "dequantize",
    "group_shape",
    "group_view",
    "quantize",
    "ranges",
    "steps",
]

SAMPLE_CAP = 1 << 16  # values per group used to estimate percentile ranges
MSE_SAMPLE_CAP = 1 << 12  # values per group used by the MSE search
MSE_CANDIDATES = np.geomspace(1.0, 0.02, 48)  # clip fractions tried (ties keep the wider)


def group_shape(shape: tuple[int, ...], per_channel: bool) -> tuple[int, int, int]:
    """The ``(N, G, S)`` view of ``shape``: channels (axis 1) as groups, or one group."""
    if per_channel and len(shape) >= 2:
        return shape[0], shape[1], math.prod(shape[2:])
    return 1, 1, math.prod(shape)


def group_view(x: np.ndarray, per_channel: bool) -> np.ndarray:
    """``x`` as a C-contiguous ``(N, G, S)`` array (a view when possible)."""
    return np.ascontiguousarray(x).reshape(group_shape(x.shape, per_channel))


def ranges(
    x3: np.ndarray, bits: int, method: str, percentile: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group clip range ``(lo, hi)`` (float64 arrays of length G) of ``x3``.

    Args:
        x3: ``(N, G, S)`` float32 view from :func:`group_view`.
        bits: the quantization width (the MSE search depends on it).
        method: ``"minmax"``, ``"percentile"`` (clip to the ``100 - p`` and ``p``
            percentiles) or ``"mse"`` (the clip range that minimises the
            quantization mean squared error on a sample, searched over shrunken
            min-max ranges, as ACIQ does analytically).
        percentile: ``p`` for ``"percentile"``.
    """
    g = x3.shape[1]
    if x3.size == 0:
        return np.zeros(g), np.zeros(g)
    mn = x3.min(axis=(0, 2)).astype(np.float64)
    mx = x3.max(axis=(0, 2)).astype(np.float64)
    if not (np.isfinite(mn).all() and np.isfinite(mx).all()):
        raise CodecError("cannot quantize a tensor holding NaN or infinite values")
    unsigned = bool(mn.min() >= 0)
    if unsigned:
        mn = np.zeros_like(mn)
    if method == "minmax":
        return mn, mx
    sample = _sample(x3, SAMPLE_CAP if method == "percentile" else MSE_SAMPLE_CAP)
    if method == "percentile":
        hi = np.percentile(sample, percentile, axis=1)
        lo = mn if unsigned else np.percentile(sample, 100.0 - percentile, axis=1)
        return np.minimum(lo, hi), hi
    if method == "mse":
        return _mse_search(sample, mn, mx, bits)
    raise ValueError(f"unknown range method {method!r}")


def steps(lo: np.ndarray, hi: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``(lo, step)`` as stored in the payload, for float64 ranges."""
    lo32 = lo.astype(np.float32)
    with np.errstate(over="ignore"):
        step = ((hi - lo32.astype(np.float64)) / ((1 << bits) - 1)).astype(np.float32)
    if not (np.isfinite(lo32).all() and np.isfinite(step).all()):
        raise CodecError("quantization range is too wide for float32 parameters")
    return lo32, np.maximum(step, np.float32(0))


def quantize(x3: np.ndarray, lo: np.ndarray, step: np.ndarray, bits: int) -> np.ndarray:
    """Symbols (uint8 for bits <= 8, else uint16) of ``x3`` for float32 ``lo``/``step``.

    Computes ``floor(clip((x - lo) / step + 0.5, 0, L - 1))`` in float32 (float64
    above 8 bits, so the rounding stays exact to well under a step, and for a
    subnormal step, whose reciprocal float32 cannot hold).
    """
    g = (1, -1, 1)
    with np.errstate(divide="ignore"):
        inv64 = np.where(step > 0, 1.0 / step.astype(np.float64), 0.0)
    # A subnormal step has a reciprocal past float32's range (inf, and 0 * inf = NaN):
    # such ranges are computed in float64 too.
    narrow = bits <= 8 and bool((inv64 <= np.finfo(np.float32).max).all())
    ftype = np.float32 if narrow else np.float64
    inv = inv64.astype(ftype).reshape(g)
    if lo.any():
        t = np.subtract(x3, lo.astype(ftype).reshape(g), dtype=ftype)
        t *= inv
    else:  # unsigned range: one pass fewer
        t = np.multiply(x3, inv, dtype=ftype)
    t += ftype(0.5)
    np.clip(t, 0, (1 << bits) - 1, out=t)
    try:
        with np.errstate(invalid="raise"):
            return t.astype(np.uint8 if bits <= 8 else np.uint16)
    except FloatingPointError:
        raise CodecError("cannot quantize a tensor holding NaN values") from None


def dequantize(sym3: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """float32 ``lo + sym * step`` over an ``(N, G, S)`` symbol array."""
    out = sym3.astype(np.float32)
    with np.errstate(over="ignore"):  # only a hostile header reaches float32's limit
        out *= step.reshape(1, -1, 1)
        if lo.any():
            out += lo.reshape(1, -1, 1)
    return out


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of float32 ``x``, rounded to nearest even.

    Matches ``torch.tensor(x).bfloat16()``: NaN becomes 0x7FC0, overflow rounds
    to infinity.
    """
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + (((u >> 16) & 1) + np.uint32(0x7FFF))) >> 16
    out = rounded.astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bit patterns."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _sample(x3: np.ndarray, cap: int) -> np.ndarray:
    """A deterministic strided sample of at most about ``cap`` values per group, ``(G, m)``."""
    n, g, s = x3.shape
    stride = max(1, math.ceil(n * s / cap))
    if s >= stride:
        sub = x3[:, :, ::stride]
    else:
        sub = x3[:: max(1, stride // s)]
    return np.moveaxis(sub, 1, 0).reshape(g, -1).astype(np.float64)


def _mse_search(
    v: np.ndarray, mn: np.ndarray, mx: np.ndarray, bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group clip range minimising the quantization MSE of the sample ``v``.

    Candidates shrink ``[mn, mx]`` towards an anchor (0 when the range holds it,
    else the nearer end) by the fractions in ``MSE_CANDIDATES``, then by a finer
    grid around each group's best; the loops run over candidates, each
    vectorised over all groups and samples.
    """
    anchor = np.clip(0.0, mn, mx)
    levels = (1 << bits) - 1
    best = np.full(v.shape[0], np.inf)
    frac_best = np.ones(v.shape[0])

    def try_fracs(frac: np.ndarray) -> None:
        nonlocal best, frac_best
        lo = anchor + frac * (mn - anchor)
        hi = anchor + frac * (mx - anchor)
        step = (hi - lo) / levels
        safe = np.where(step > 0, step, 1.0)[:, None]
        q = np.clip(np.floor((v - lo[:, None]) / safe + 0.5), 0, levels)
        err = np.mean((lo[:, None] + q * safe - v) ** 2, axis=1)
        better = err < best
        best = np.where(better, err, best)
        frac_best = np.where(better, frac, frac_best)

    for frac in MSE_CANDIDATES:
        try_fracs(np.full(v.shape[0], frac))
    spacing = MSE_CANDIDATES[0] / MSE_CANDIDATES[1]
    coarse = frac_best.copy()
    for r in np.geomspace(1 / spacing, spacing, 17):
        try_fracs(np.minimum(coarse * r, 1.0))
    return anchor + frac_best * (mn - anchor), anchor + frac_best * (mx - anchor)
