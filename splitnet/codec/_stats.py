"""What :meth:`Codec.stats` measures: sizes, order-0 entropy of the symbols, errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from splitnet.codec._quant import group_shape

__all__ = ["CodecStats", "measure"]


@dataclass(frozen=True)
class CodecStats:
    """What :meth:`Codec.stats` measures on one set of arrays.

    Attributes:
        elements: elements in all arrays.
        payload_bytes: the whole payload.
        stream_bytes: the coded symbols only (packed bits, the zstd frame, or the
            rANS words); the rest of the payload is header, rANS model tables and
            the checksum (``payload_bytes - stream_bytes``).
        bits_per_element: ``8 * payload_bytes / elements``.
        stream_bits_per_element: ``8 * stream_bytes / elements``.
        entropy_bits: order-0 entropy of the symbols (quantization symbols, or
            the 16/32-bit float codes), per element, from each tensor's own
            histogram, averaged over elements.
        channel_entropy_bits: the same with one histogram per channel (axis 1
            of tensors of rank >= 2): what order-0 models per channel can reach.
        max_abs_error: largest ``|decoded - input|``.
        mean_abs_error: mean ``|decoded - input|``.
        compression_ratio: float32 size of the input over ``payload_bytes``.
    """

    elements: int
    payload_bytes: int
    stream_bytes: int
    bits_per_element: float
    stream_bits_per_element: float
    entropy_bits: float
    channel_entropy_bits: float
    max_abs_error: float
    mean_abs_error: float
    compression_ratio: float


def measure(
    arrays: Sequence[np.ndarray],
    payload: bytes,
    stream_bytes: int,
    symbols: Sequence[np.ndarray],
    decoded: Sequence[np.ndarray],
) -> CodecStats:
    """The stats of ``arrays`` coded as ``payload`` (``symbols``: each tensor's, flat)."""
    n = sum(a.size for a in arrays)
    ent = sum(_entropy(s.reshape(1, -1)) * s.size for s in symbols)
    ent_c = sum(
        _entropy(s.reshape(group_shape(a.shape, True)[:2] + (-1,))) * s.size
        for s, a in zip(symbols, arrays, strict=True)
        if s.size
    )
    err_max, err_sum = 0.0, 0.0
    for a, d in zip(arrays, decoded, strict=True):
        if a.size:
            e = np.abs(d.astype(np.float64) - a.astype(np.float64))
            err_max = max(err_max, float(np.nanmax(e)) if not np.isnan(e).all() else 0.0)
            err_sum += float(np.nansum(e))
    size = len(payload)
    return CodecStats(
        elements=n,
        payload_bytes=size,
        stream_bytes=stream_bytes,
        bits_per_element=8 * size / max(n, 1),
        stream_bits_per_element=8 * stream_bytes / max(n, 1),
        entropy_bits=ent / max(n, 1),
        channel_entropy_bits=ent_c / max(n, 1),
        max_abs_error=err_max,
        mean_abs_error=err_sum / max(n, 1),
        compression_ratio=4 * n / size,
    )


def _entropy(symbols: np.ndarray) -> float:
    """Order-0 entropy in bits per symbol, one histogram per row of ``(N, C, S)``
    or ``(1, n)`` symbols (float codes are viewed as unsigned integers)."""
    if symbols.size == 0:
        return 0.0
    s3 = symbols.view(f"u{symbols.dtype.itemsize}").reshape(symbols.shape[0], -1, symbols.shape[-1])
    rows = np.moveaxis(s3, 1, 0).reshape(s3.shape[1], -1)
    total = 0.0
    if symbols.dtype.itemsize <= 2:
        levels = int(rows.max()) + 1
        offset = (np.arange(rows.shape[0], dtype=np.int64) * levels)[:, None]
        counts = np.bincount((rows + offset).reshape(-1)).reshape(-1)
        groups = [counts]
    else:
        groups = [np.unique(row, return_counts=True)[1] for row in rows]
    for counts in groups:
        c = counts[counts > 0].astype(np.float64)
        total -= float((c * np.log2(c / rows.shape[1])).sum())
    return total / symbols.size
