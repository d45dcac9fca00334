"""The :class:`Codec` object: options, calibration, encode, decode and stats."""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitnet.codec import _format as fmt
from splitnet.codec._entropy import ans_decode, ans_encode, zstd_compress, zstd_decompress
from splitnet.codec._format import CodecError, Reader, TensorHeader
from splitnet.codec._pack import pack, packed_size, unpack
from splitnet.codec._quant import (
    bf16_bits,
    bf16_to_f32,
    dequantize,
    group_shape,
    group_view,
    quantize,
    ranges,
    steps,
)

__all__ = ["Codec", "CodecOptions", "CodecStats", "decode"]

ENTROPY_STAGES = ("none", "zstd", "ans")
GRANULARITIES = ("channel", "tensor")
RANGE_METHODS = ("minmax", "percentile", "mse")
ANS_MODELS = ("auto", "channel", "tensor")
QUANT_OPTIONS = frozenset({"granularity", "range", "percentile", "ans_model"})


@dataclass(frozen=True)
class CodecOptions:
    """Codec options; ``get_codec(name, **options)`` takes these as keywords.

    Attributes:
        entropy: ``"none"`` (bit-packing only), ``"zstd"`` or ``"ans"`` (rANS,
            quantizing codecs only).
        level: zstd compression level (1 is fast and, on bit-packed symbols,
            as small as the higher levels).
        granularity: one quantization range per ``"channel"`` (axis 1 of
            tensors of rank >= 2; others fall back to one range) or per ``"tensor"``.
        range: how ranges are chosen: ``"minmax"``, ``"percentile"`` or ``"mse"``.
        percentile: ``p`` for ``range="percentile"``: clip to the ``100 - p`` and
            ``p`` percentiles.
        ans_model: order-0 model per ``"tensor"``, per ``"channel"``, or
            ``"auto"``: whichever is smaller once the model tables are counted.
    """

    entropy: str = "zstd"
    level: int = 1
    granularity: str = "channel"
    range: str = "minmax"
    percentile: float = 99.99
    ans_model: str = "auto"


@dataclass(frozen=True)
class TensorRange:
    """A calibrated clip range per group (channel, or one for the tensor)."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]


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


@dataclass(frozen=True)
class _Encoded:
    payload: bytes
    stream_bytes: int
    symbols: list[np.ndarray]


@dataclass(frozen=True)
class Codec:
    """A tensor codec: ``encode(arrays) -> bytes`` and ``decode(bytes) -> arrays``.

    Build one with :func:`splitnet.codec.get_codec`. Codecs are immutable;
    :meth:`calibrate` returns a new one with fixed ranges.

    Example:
        >>> import numpy as np
        >>> from splitnet.codec import get_codec, decode
        >>> codec = get_codec("q4", entropy="zstd")
        >>> x = np.maximum(np.random.default_rng(0).standard_normal((1, 8, 4, 4)), 0)
        >>> payload = codec.encode([x.astype(np.float32)])
        >>> [y.shape for y in decode(payload)]
        [(1, 8, 4, 4)]
    """

    name: str
    kind: int
    bits: int
    options: CodecOptions = CodecOptions()
    calibration: tuple[TensorRange, ...] | None = None

    @classmethod
    def create(
        cls,
        name: str,
        kind: int,
        bits: int = 0,
        *,
        calibration: Sequence[Mapping[str, Sequence[float]]] | None = None,
        **options: Any,
    ) -> Codec:
        """Validates ``options`` and builds the codec (registry factories call this)."""
        quantized = kind == fmt.KIND_QUANT
        valid = {f.name for f in dataclasses.fields(CodecOptions)}
        if not quantized:
            valid -= QUANT_OPTIONS
        unknown = sorted(set(options) - valid)
        if unknown:
            raise CodecError(
                f"codec {name!r} has no option {', '.join(map(repr, unknown))}; "
                f"valid options: {', '.join(sorted(valid))}"
            )
        opts = CodecOptions(**options)
        _check_choice("entropy", opts.entropy, ENTROPY_STAGES if quantized else ("none", "zstd"))
        _check_choice("granularity", opts.granularity, GRANULARITIES)
        _check_choice("range", opts.range, RANGE_METHODS)
        _check_choice("ans_model", opts.ans_model, ANS_MODELS)
        if not isinstance(opts.level, int) or not -(1 << 17) <= opts.level <= 22:
            raise CodecError(
                f"zstd level must be an integer from -131072 to 22, got {opts.level!r}"
            )
        if not isinstance(opts.percentile, int | float) or not 50 < opts.percentile <= 100:
            raise CodecError(f"percentile must be in (50, 100], got {opts.percentile!r}")
        if quantized and not 1 <= bits <= 16:
            raise CodecError(f"bit width must be 1..16, got {bits}")
        cal = None
        if calibration is not None:
            if not quantized:
                raise CodecError(f"codec {name!r} does not quantize and takes no calibration")
            cal = tuple(_tensor_range(c) for c in calibration)
        return cls(name, kind, bits, opts, cal)

    @property
    def quantizes(self) -> bool:
        """Whether the codec maps values to integer levels (and so can be calibrated)."""
        return self.kind == fmt.KIND_QUANT

    # ---- configuration -------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """JSON-able ``{"name": ..., **options, "calibration": ...}``; ``get_codec(**config)`` rebuilds it."""
        out: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(CodecOptions):
            if self.kind == fmt.KIND_QUANT or f.name not in QUANT_OPTIONS:
                out[f.name] = getattr(self.options, f.name)
        if self.calibration is not None:
            out["calibration"] = [{"lo": list(c.lo), "hi": list(c.hi)} for c in self.calibration]
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Codec:
        """Inverse of :meth:`config`."""
        from splitnet.codec import get_codec

        return get_codec(**dict(config))

    # ---- calibration ---------------------------------------------------------

    def calibrate(self, batches: Iterable[Sequence[np.ndarray]]) -> Codec:
        """A copy of this codec with ranges fixed from ``batches``.

        Each batch is a sequence of arrays, as given to :meth:`encode`. Min-max
        ranges take the extremes over all batches; percentile and MSE ranges
        average the per-batch ranges. Encoding with fixed ranges skips the range
        computation and clips values outside.
        """
        if self.kind != fmt.KIND_QUANT:
            raise CodecError(f"codec {self.name!r} does not quantize; nothing to calibrate")
        per_channel = self.options.granularity == "channel"
        acc: list[list[np.ndarray]] | None = None
        mins: list[float] = []
        count = 0
        for batch in batches:
            arrays = _check_arrays(batch)
            if acc is not None and len(arrays) != len(acc):
                raise CodecError(f"calibration batches hold {len(acc)} and {len(arrays)} tensors")
            found = []
            for a in arrays:
                x3 = group_view(a.astype(np.float32, copy=False), per_channel)
                lo, hi = ranges(x3, self.bits, self.options.range, self.options.percentile)
                found.append((lo, hi, float(x3.min()) if x3.size else 0.0))
            if acc is None:
                acc = [[lo, hi] for lo, hi, _ in found]
                mins = [m for _, _, m in found]
            else:
                for i, (lo, hi, m) in enumerate(found):
                    if lo.shape != acc[i][0].shape:
                        raise CodecError(f"tensor {i} changes channel count between batches")
                    if self.options.range == "minmax":
                        acc[i] = [np.minimum(acc[i][0], lo), np.maximum(acc[i][1], hi)]
                    else:
                        acc[i] = [acc[i][0] + lo, acc[i][1] + hi]
                    mins[i] = min(mins[i], m)
            count += 1
        if acc is None:
            raise CodecError("calibrate needs at least one batch")
        cal = []
        for (lo, hi), mn in zip(acc, mins, strict=True):
            if self.options.range != "minmax":
                lo, hi = lo / count, hi / count
            if mn >= 0:
                lo = np.zeros_like(lo)
            cal.append(TensorRange(tuple(map(float, lo)), tuple(map(float, hi))))
        return dataclasses.replace(self, calibration=tuple(cal))

    # ---- encode / decode -----------------------------------------------------

    def encode(self, arrays: Sequence[np.ndarray]) -> bytes:
        """Encodes float32/float16 arrays into one self-describing payload."""
        return self._encode(arrays, keep_symbols=False).payload

    def decode(self, payload: bytes, *, max_elements: int | None = None) -> list[np.ndarray]:
        """Same as :func:`splitnet.codec.decode` (any codec's payload decodes)."""
        return decode(payload, max_elements=max_elements)

    def stats(self, arrays: Sequence[np.ndarray]) -> CodecStats:
        """Encodes and decodes ``arrays`` and measures size, entropy and error."""
        arrays = _check_arrays(arrays)
        enc = self._encode(arrays, keep_symbols=True)
        decoded = decode(enc.payload)
        n = sum(a.size for a in arrays)
        ent = sum(_entropy(s.reshape(1, -1)) * s.size for s in enc.symbols)
        ent_c = sum(
            _entropy(s.reshape(group_shape(a.shape, True)[:2] + (-1,))) * s.size
            for s, a in zip(enc.symbols, arrays, strict=True)
            if s.size
        )
        err_max, err_sum = 0.0, 0.0
        for a, d in zip(arrays, decoded, strict=True):
            if a.size:
                e = np.abs(d.astype(np.float64) - a.astype(np.float64))
                err_max = max(err_max, float(np.nanmax(e)) if not np.isnan(e).all() else 0.0)
                err_sum += float(np.nansum(e))
        size = len(enc.payload)
        return CodecStats(
            elements=n,
            payload_bytes=size,
            stream_bytes=enc.stream_bytes,
            bits_per_element=8 * size / max(n, 1),
            stream_bits_per_element=8 * enc.stream_bytes / max(n, 1),
            entropy_bits=ent / max(n, 1),
            channel_entropy_bits=ent_c / max(n, 1),
            max_abs_error=err_max,
            mean_abs_error=err_sum / max(n, 1),
            compression_ratio=4 * n / size,
        )

    def _encode(self, arrays: Sequence[np.ndarray], keep_symbols: bool) -> _Encoded:
        arrays = _check_arrays(arrays)
        quantized = self.kind == fmt.KIND_QUANT
        if self.calibration is not None and len(self.calibration) != len(arrays):
            raise CodecError(
                f"codec is calibrated for {len(self.calibration)} tensors, got {len(arrays)}"
            )
        entropy = self.options.entropy
        header = [
            fmt.PREAMBLE.pack(
                fmt.MAGIC,
                fmt.FORMAT_VERSION,
                self.kind,
                self.bits,
                fmt.ENTROPY_CODES[entropy],
                len(arrays),
                0,
            )
        ]
        chunks: list[bytes] = []
        words_bytes = 0
        symbols: list[np.ndarray] = []
        for i, a in enumerate(arrays):
            if quantized:
                th, sym = self._quantize(i, a)
                if entropy == "ans":
                    section, n_bytes = ans_encode(
                        sym.reshape(group_shape(a.shape, True)), self.bits, self.options.ans_model
                    )
                    chunks.append(section)
                    words_bytes += n_bytes
                else:
                    chunks.append(pack(sym.reshape(-1), self.bits))
            else:
                th = TensorHeader(a.dtype, a.shape)
                sym = _float_codes(a, self.kind)
                chunks.append(sym.tobytes())
            header.append(th.write())
            if keep_symbols:
                symbols.append(sym.reshape(-1))
        body = b"".join(chunks)
        if entropy == "zstd":
            body = zstd_compress(body, self.options.level)
        stream = len(body) if entropy != "ans" else words_bytes
        head = b"".join(header)
        crc = zlib.crc32(body, zlib.crc32(head))
        return _Encoded(head + body + fmt.CRC.pack(crc), stream, symbols)

    def _quantize(self, i: int, a: np.ndarray) -> tuple[TensorHeader, np.ndarray]:
        per_channel = self.options.granularity == "channel" and a.ndim >= 2
        x3 = group_view(a.astype(np.float32, copy=False), per_channel)
        if self.calibration is not None:
            c = self.calibration[i]
            if len(c.lo) != x3.shape[1]:
                raise CodecError(
                    f"tensor {i}: codec is calibrated for {len(c.lo)} range groups, "
                    f"the tensor of shape {a.shape} has {x3.shape[1]}"
                )
            lo, hi = np.asarray(c.lo), np.asarray(c.hi)
        else:
            lo, hi = ranges(x3, self.bits, self.options.range, self.options.percentile)
        lo32, step = steps(lo, hi, self.bits)
        sym3 = quantize(x3, lo32, step, self.bits)
        return TensorHeader(a.dtype, a.shape, per_channel, lo32, step), sym3


def decode(payload: bytes, *, max_elements: int | None = None) -> list[np.ndarray]:
    """Decodes any splitnet codec payload.

    Returns float32 arrays, except for the lossless ``f32`` codec, which returns
    the dtype that was encoded (float32 or float16).

    Args:
        payload: the bytes from :meth:`Codec.encode`.
        max_elements: refuse payloads declaring more elements in all
            (default :data:`splitnet.codec.MAX_ELEMENTS`).

    Raises:
        CodecError: the payload is truncated, corrupted, or exceeds the limits.
    """
    limit = fmt.MAX_ELEMENTS if max_elements is None else max_elements
    try:
        data = memoryview(payload).cast("B")
    except TypeError as e:
        raise CodecError(f"payload must be a bytes-like object: {e}") from None
    r = Reader(data[: -fmt.CRC.size] if len(data) >= fmt.CRC.size else data)
    kind, bits, entropy, n = fmt.read_preamble(r)
    (crc,) = fmt.CRC.unpack(data[-fmt.CRC.size :])
    if zlib.crc32(r.data) != crc:
        raise CodecError("payload checksum mismatch: the payload is corrupted")
    quantized = kind == fmt.KIND_QUANT
    headers: list[TensorHeader] = []
    used = 0
    for _ in range(n):
        th = fmt.read_tensor(r, quantized, used, limit)
        used += th.size
        headers.append(th)

    if entropy == fmt.ENTROPY_CODES["ans"]:
        syms = [ans_decode(r, th.shape, bits) for th in headers]
        if r.remaining:
            raise CodecError(f"{r.remaining} unexpected bytes after the last tensor")
    else:
        sizes = [_stream_size(th, kind, bits) for th in headers]
        body = r.take(r.remaining, "body")
        if entropy == fmt.ENTROPY_CODES["zstd"]:
            body = memoryview(zstd_decompress(body, sum(sizes)))
        elif len(body) != sum(sizes):
            raise CodecError(f"body holds {len(body)} bytes, the header declares {sum(sizes)}")
        syms, pos = [], 0
        for th, size in zip(headers, sizes, strict=True):
            chunk = body[pos : pos + size]
            pos += size
            syms.append(unpack(chunk, th.size, bits) if quantized else _from_codes(chunk, th, kind))

    out = []
    for th, sym in zip(headers, syms, strict=True):
        if quantized:
            sym3 = sym.reshape(group_shape(th.shape, th.per_channel))
            out.append(dequantize(sym3, th.lo, th.step).reshape(th.shape))
        else:
            out.append(sym.reshape(th.shape))
    return out


# ---- helpers ------------------------------------------------------------------


def _check_choice(option: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise CodecError(f"option {option}={value!r} is not one of {', '.join(choices)}")


def _tensor_range(c: Mapping[str, Sequence[float]] | TensorRange) -> TensorRange:
    if isinstance(c, TensorRange):
        return c
    try:
        lo = tuple(float(v) for v in c["lo"])
        hi = tuple(float(v) for v in c["hi"])
    except (KeyError, TypeError, ValueError) as e:
        raise CodecError(f"calibration entries need 'lo' and 'hi' lists of numbers: {e}") from None
    if len(lo) != len(hi) or not all(math.isfinite(v) for v in lo + hi):
        raise CodecError("calibration 'lo' and 'hi' must be finite and of equal length")
    return TensorRange(lo, hi)


def _check_arrays(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(arrays, np.ndarray) or not isinstance(arrays, Sequence):
        raise CodecError("encode takes a sequence of arrays; wrap a single array in a list")
    if len(arrays) > fmt.MAX_TENSORS:
        raise CodecError(f"{len(arrays)} tensors exceed the limit of {fmt.MAX_TENSORS} per payload")
    out, total = [], 0
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        native = a.dtype.newbyteorder("=") if a.dtype.byteorder not in "=|" else a.dtype
        if native not in fmt.DTYPE_CODES:
            raise CodecError(
                f"tensor {i} has dtype {a.dtype}; codecs encode float32 or float16 "
                "(cast with .astype(np.float32))"
            )
        a = a.astype(native, copy=False)
        if a.ndim > fmt.MAX_RANK or any(d >= 1 << 32 for d in a.shape):
            raise CodecError(
                f"tensor {i} of shape {a.shape} exceeds rank {fmt.MAX_RANK} or 2**32 per axis"
            )
        total += a.size
        out.append(a)
    if total > fmt.MAX_ELEMENTS:
        raise CodecError(f"{total} elements exceed the limit of {fmt.MAX_ELEMENTS} per payload")
    return out


def _float_codes(a: np.ndarray, kind: int) -> np.ndarray:
    if kind == fmt.KIND_F32:
        return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    if kind == fmt.KIND_F16:
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(a, dtype="<f2")
    return bf16_bits(a.astype(np.float32, copy=False)).astype("<u2", copy=False)


def _from_codes(chunk: memoryview, th: TensorHeader, kind: int) -> np.ndarray:
    if kind == fmt.KIND_F32:
        return np.frombuffer(chunk, dtype=th.dtype.newbyteorder("<")).astype(th.dtype)
    if kind == fmt.KIND_F16:
        return np.frombuffer(chunk, dtype="<f2").astype(np.float32)
    return bf16_to_f32(np.frombuffer(chunk, dtype="<u2"))


def _stream_size(th: TensorHeader, kind: int, bits: int) -> int:
    if kind == fmt.KIND_QUANT:
        return packed_size(th.size, bits)
    if kind == fmt.KIND_F32:
        return th.size * th.dtype.itemsize
    return th.size * 2


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
