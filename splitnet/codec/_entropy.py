"""Entropy stages: bounded zstd frames and rANS (constriction) with order-0 models.

The byte layouts are described in :mod:`splitnet.codec._format`.
"""

from __future__ import annotations

import math
import struct
import threading

import numpy as np
import zstandard

from splitnet.codec._format import CodecError, Reader

__all__ = [
    "ans_decode",
    "ans_decode_rows",
    "ans_encode",
    "ans_encode_rows",
    "zstd_compress",
    "zstd_decompress",
]

_local = threading.local()  # zstd contexts are reused, but not shared between threads


def zstd_compress(data: bytes, level: int) -> bytes:
    """One zstd frame of ``data`` with its content size in the frame header."""
    cache = _local.__dict__.setdefault("compressors", {})
    cctx = cache.get(level)
    if cctx is None:
        cctx = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cctx.compress(data)


def zstd_decompress(frame: memoryview, expected: int) -> bytes:
    """Decompresses one frame that must expand to exactly ``expected`` bytes.

    The declared content size is checked before anything is allocated; a frame
    without one is decompressed into at most ``expected`` bytes.
    """
    dctx = _local.__dict__.get("decompressor")
    if dctx is None:
        dctx = _local.decompressor = zstandard.ZstdDecompressor()
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as e:
        raise CodecError(f"corrupt zstd frame header: {e}") from None
    if declared not in (-1, expected):
        raise CodecError(f"zstd frame declares {declared} bytes, the header expects {expected}")
    try:
        out = dctx.decompress(frame, max_output_size=expected, allow_extra_data=False)
    except zstandard.ZstdError as e:
        raise CodecError(f"corrupt zstd frame: {e}") from None
    if len(out) != expected:
        raise CodecError(f"zstd frame expands to {len(out)} bytes, the header expects {expected}")
    return out


# ---- rANS -------------------------------------------------------------------

MODEL = struct.Struct("<BHH")  # table format (0 dense, 1 sparse), first symbol, length - 1
COUNT_MAX = 65535
_DENSE_COUNTS = 1 << 22  # count tables up to this size are built in one bincount


def ans_encode(sym3: np.ndarray, bits: int, mode: str) -> tuple[bytes, int]:
    """The ans section of one tensor, and how many of its bytes are rANS words.

    Args:
        sym3: ``(N, C, S)`` symbols with the channels on axis 1 (``C == 1`` for
            rank < 2).
        bits: symbol width.
        mode: ``"tensor"``, ``"channel"`` or ``"auto"`` (the one with the
            smaller estimated size, model tables included).
    """
    n, c, s = sym3.shape
    if sym3.size == 0:
        return bytes([0]) + struct.pack("<I", 0), 0
    levels = 1 << bits
    if c > 1 and mode != "tensor":
        rows = np.moveaxis(sym3, 1, 0).reshape(c, n * s)
        counts = _counts(rows, levels)
        if mode == "auto":
            total = counts.sum(axis=0, keepdims=True)
            if _cost_bits(total) <= _cost_bits(counts):
                rows, counts = sym3.reshape(1, -1), total
    else:
        rows = sym3.reshape(1, -1)
        counts = _counts(rows, levels)
    per_channel = rows.shape[0] > 1

    records, coded = [], []
    for row, row_counts in zip(rows, _scale(counts), strict=True):
        alphabet = np.flatnonzero(row_counts)
        first, last = int(alphabet[0]), int(alphabet[-1])
        if 2 * (last - first + 1) <= 4 * alphabet.size:  # dense table over first..last
            table = row_counts[first : last + 1]
            records.append(MODEL.pack(0, first, last - first) + table.astype("<u2").tobytes())
            idx = row.astype(np.int32) - np.int32(first)
        else:  # sparse: the symbols that occur, then their counts
            table = row_counts[alphabet]
            records.append(
                MODEL.pack(1, first, alphabet.size - 1)
                + alphabet.astype("<u2").tobytes()
                + table.astype("<u2").tobytes()
            )
            lut = np.zeros(levels, dtype=np.int32)
            lut[alphabet] = np.arange(alphabet.size, dtype=np.int32)
            idx = lut[row]
        coded.append((idx, table))
    words = ans_encode_rows(coded)
    section = b"".join([bytes([int(per_channel)]), *records, struct.pack("<I", words.size)])
    return section + words.tobytes(), 4 * words.size


def ans_decode(r: Reader, shape: tuple[int, ...], bits: int) -> np.ndarray:
    """Reads one tensor's ans section; returns its symbols as a flat array in C order."""
    size = math.prod(shape)
    (mode,) = r.take(1, "ans model mode")
    if mode > 1 or (mode == 1 and len(shape) < 2):
        raise CodecError(f"invalid ans model mode {mode} for a tensor of shape {shape}")
    n_models = 0 if size == 0 else (shape[1] if mode == 1 else 1)
    # every model takes at least its record and one count: a header cannot declare more
    # models than its bytes hold, so the work below stays bounded by the payload's size
    if n_models * (MODEL.size + 2) + 4 > r.remaining:
        raise CodecError(
            f"ans section declares {n_models} models, more than its {r.remaining} bytes can hold"
        )
    tables = []
    for _ in range(n_models):
        sparse, first, length_m1 = r.unpack(MODEL, "ans model")
        if sparse > 1:
            raise CodecError(f"invalid ans model table format {sparse}")
        if sparse:
            alphabet = r.array("<u2", length_m1 + 1, "ans model symbols")
            valid = alphabet[0] == first and bool((np.diff(alphabet.astype(np.int32)) > 0).all())
            last = int(alphabet[-1])
        else:
            alphabet = None
            valid, last = True, first + length_m1
        table = r.array("<u2", length_m1 + 1, "ans model counts")
        if not valid or last >= 1 << bits or not table.any():
            raise CodecError("invalid ans model (symbols out of range or unordered, or no counts)")
        tables.append((first, alphabet, table))
    (n_words,) = r.unpack(struct.Struct("<I"), "ans word count")
    words = r.array("<u4", n_words, "ans words").astype(np.uint32)
    dtype = np.uint8 if bits <= 8 else np.uint16
    if size == 0:
        if n_words:
            raise CodecError("ans words present for an empty tensor")
        return np.zeros(0, dtype=dtype)

    per_model = size // n_models
    rows = ans_decode_rows(words, [table for _, _, table in tables], per_model)
    out = np.empty((n_models, per_model), dtype=dtype)
    for i, ((first, alphabet, _), idx) in enumerate(zip(tables, rows, strict=True)):
        out[i] = idx + first if alphabet is None else alphabet[idx]
    if n_models > 1:
        out = np.moveaxis(out.reshape(n_models, shape[0], -1), 0, 1)
    return out.reshape(-1)


def ans_encode_rows(rows: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """One ``AnsCoder`` stream (``<u4`` words) of each ``(indices, table)`` in turn.

    ``table`` holds the categorical model's counts (its probabilities, unnormalised);
    a one-symbol table costs nothing, so its indices are not coded.
    """
    Categorical, AnsCoder = _constriction()
    coder = AnsCoder()
    for idx, table in reversed(rows):
        if table.size > 1 and idx.size:
            coder.encode_reverse(idx, Categorical(table.astype(np.float64), perfect=False))
    return coder.get_compressed().astype("<u4")


def ans_decode_rows(words: np.ndarray, tables: list[np.ndarray], count: int) -> np.ndarray:
    """``(len(tables), count)`` int32 indices decoded from :func:`ans_encode_rows` words.

    Raises:
        CodecError: the words do not decode, or words are left over.
    """
    Categorical, AnsCoder = _constriction()
    out = np.zeros((len(tables), count), dtype=np.int32)
    try:
        coder = AnsCoder(words)
        for i, table in enumerate(tables):
            if table.size > 1 and count:
                model = Categorical(table.astype(np.float64), perfect=False)
                out[i] = coder.decode(model, count)
        empty = coder.is_empty()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # constriction reports bad data as ValueError or a Rust panic
        raise CodecError(f"corrupt ans stream: {e}") from None
    if not empty:
        raise CodecError("corrupt ans stream: data left over after the declared symbols")
    return out


def _constriction() -> tuple[type, type]:
    """``(Categorical, AnsCoder)``, imported on first use of the ans stage."""
    try:
        import constriction
    except ImportError as e:  # pragma: no cover - a base dependency
        raise CodecError("the ans entropy stage needs the 'constriction' package") from e
    return constriction.stream.model.Categorical, constriction.stream.stack.AnsCoder


def _counts(rows: np.ndarray, levels: int) -> np.ndarray:
    """``(M, levels)`` int64 histogram of each row of ``rows``."""
    m = rows.shape[0]
    if m * levels <= _DENSE_COUNTS:
        offset = (np.arange(m, dtype=np.int64) * levels)[:, None]
        flat = (rows.astype(np.int64) + offset).reshape(-1)
        return np.bincount(flat, minlength=m * levels).reshape(m, levels)
    return np.stack([np.bincount(row, minlength=levels) for row in rows])


def _scale(counts: np.ndarray) -> np.ndarray:
    """Counts scaled so each row's largest is ``COUNT_MAX`` at most; non-zero stays non-zero."""
    peak = counts.max(axis=1, keepdims=True)
    scaled = np.where(
        peak > COUNT_MAX, (counts * COUNT_MAX + peak // 2) // np.maximum(peak, 1), counts
    )
    return np.where(counts > 0, np.maximum(scaled, 1), 0)


def _cost_bits(counts: np.ndarray) -> float:
    """Estimated section size in bits: order-0 code lengths plus the model tables."""
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        code = -np.nansum(counts * np.log2(counts / np.maximum(total, 1)))
    nz = counts > 0
    any_nz = nz.any(axis=1)
    first = np.argmax(nz, axis=1)
    last = counts.shape[1] - 1 - np.argmax(nz[:, ::-1], axis=1)
    dense, sparse = 2 * (last - first + 1), 4 * nz.sum(axis=1)
    table_bytes = np.where(any_nz, MODEL.size + np.minimum(dense, sparse), 0).sum()
    return float(code + 8 * table_bytes)
