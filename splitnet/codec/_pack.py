"""Vectorised sub-byte bit-packing of quantization symbols, for widths 1..16.

Layout (the ``none`` entropy stage, and the bytes that ``zstd`` compresses):

* ``bits <= 8``: one MSB-first bit stream. Symbol ``i`` occupies stream bits
  ``[i*bits, (i+1)*bits)``, its most significant bit first; the last byte is
  padded with zero bits. ``n`` symbols take ``ceil(n*bits/8)`` bytes, so two
  4-bit symbols share a byte (the first in the high nibble), eight 1-bit
  symbols share a byte (as ``np.packbits``), three 6-bit symbols fill 18 bits.
* ``9 <= bits <= 16``: the high ``bits-8`` bits of every symbol as a stream of
  the kind above, followed by the low 8 bits of every symbol, one byte each.
  ``n`` symbols take ``ceil(n*(bits-8)/8) + n`` bytes. Splitting the planes
  keeps the stream byte aligned and lets zstd see the slowly varying high
  bits apart from the noisy low byte.
"""

from __future__ import annotations

import numpy as np

from splitnet.codec._format import CodecError

__all__ = ["pack", "packed_size", "unpack"]


def packed_size(n: int, bits: int) -> int:
    """Bytes that :func:`pack` writes for ``n`` symbols of ``bits`` bits."""
    if bits <= 8:
        return (n * bits + 7) // 8
    return (n * (bits - 8) + 7) // 8 + n


def pack(symbols: np.ndarray, bits: int) -> bytes:
    """Packs a flat uint8 (bits <= 8) or uint16 array of symbols ``< 2**bits``."""
    if bits <= 8:
        return _pack_low(np.ascontiguousarray(symbols, dtype=np.uint8), bits)
    pairs = np.ascontiguousarray(symbols, dtype="<u2").view(np.uint8).reshape(-1, 2)
    return _pack_low(np.ascontiguousarray(pairs[:, 1]), bits - 8) + pairs[:, 0].tobytes()


def unpack(data: bytes | memoryview, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack`; ``data`` must hold exactly ``packed_size(n, bits)`` bytes.

    Returns uint8 symbols for ``bits <= 8``, else uint16.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size != packed_size(n, bits):
        raise CodecError(f"expected {packed_size(n, bits)} packed bytes, got {buf.size}")
    if bits <= 8:
        return _unpack_low(buf, n, bits)
    nh = packed_size(n, bits - 8)
    out = np.empty((n, 2), dtype=np.uint8)
    out[:, 1] = _unpack_low(buf[:nh], n, bits - 8)
    out[:, 0] = buf[nh:]
    return out.view("<u2").reshape(-1).astype(np.uint16, copy=False)


def _pack_low(q: np.ndarray, bits: int) -> bytes:
    n = q.size
    if bits == 8:
        return q.tobytes()
    if bits == 1:
        return np.packbits(q).tobytes()
    per = 8 // bits if 8 % bits == 0 else 8  # symbols per group
    grp = _pad(q, per).reshape(-1, per)
    if bits in (2, 4):  # groups fill exactly one byte
        out = grp[:, 0] << np.uint8(8 - bits)
        for j in range(1, per):
            out |= grp[:, j] << np.uint8(8 - bits * (j + 1))
        return out.tobytes()
    # 3, 5, 6, 7 bits: 8 symbols -> one big-endian 64-bit word holding 8*bits bits
    word = grp[:, 0].astype(np.uint64) << np.uint64(bits * 7)
    for j in range(1, 8):
        word |= grp[:, j].astype(np.uint64) << np.uint64(bits * (7 - j))
    raw = word.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 8 - bits :]
    return raw.tobytes()[: packed_size(n, bits)]


def _unpack_low(buf: np.ndarray, n: int, bits: int) -> np.ndarray:
    if bits == 8:
        return buf.copy()
    if bits == 1:
        return np.unpackbits(buf, count=n)
    mask = np.uint8((1 << bits) - 1)
    if bits in (2, 4):
        per = 8 // bits
        out = np.empty(buf.size * per, dtype=np.uint8)
        for j in range(per):
            out[j::per] = (buf >> np.uint8(8 - bits * (j + 1))) & mask
        return out[:n]
    groups = (n + 7) // 8
    flat = np.zeros(groups * bits, dtype=np.uint8)
    flat[: buf.size] = buf  # the tail of the last group stays zero
    raw = np.zeros((groups, 8), dtype=np.uint8)
    raw[:, 8 - bits :] = flat.reshape(groups, bits)
    word = raw.view(">u8").reshape(-1).astype(np.uint64)
    out = np.empty((groups, 8), dtype=np.uint8)
    for j in range(8):
        out[:, j] = (word >> np.uint64(bits * (7 - j))).astype(np.uint8) & mask
    return out.reshape(-1)[:n]


def _pad(q: np.ndarray, multiple: int) -> np.ndarray:
    extra = (-q.size) % multiple
    if extra == 0:
        return q
    return np.concatenate([q, np.zeros(extra, dtype=q.dtype)])
