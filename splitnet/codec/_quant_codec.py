"""The quantizing codecs ``q1`` ... ``q16`` (kind 3): uniform affine quantization.

Each tensor record carries its ranges (``lo`` and ``step`` per channel or per
tensor); the symbols are bit-packed (``none``, ``zstd``) or rANS-coded per
tensor (``ans``). Ranges are measured per frame, or fixed by :meth:`QuantCodec.calibrate`.
The arithmetic is in :mod:`splitnet.codec._quant`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from splitnet.codec import _format as fmt
from splitnet.codec._base import (
    Codec,
    CodecOptions,
    TensorCode,
    check_arrays,
    register_codec,
    register_kind,
)
from splitnet.codec._entropy import ans_decode, ans_encode
from splitnet.codec._format import CodecError, Preamble, Reader, TensorHeader
from splitnet.codec._pack import pack, packed_size, unpack
from splitnet.codec._quant import dequantize, group_shape, group_view, quantize, ranges, steps

__all__ = ["QuantCodec", "TensorRange"]


@dataclass(frozen=True)
class TensorRange:
    """A calibrated clip range per group (channel, or one for the tensor)."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]


@register_kind(fmt.KIND_QUANT)
@dataclass(frozen=True)
class QuantCodec(Codec):
    """Uniform affine quantization to ``bits`` bits; decodes to float32.

    Attributes:
        bits: the width, 1..16.
        calibration: fixed ranges per tensor, or ``None`` to measure them per frame.
    """

    bits: int = 8
    calibration: tuple[TensorRange, ...] | None = None

    label = "q1..q16"
    option_names = frozenset(f.name for f in dataclasses.fields(CodecOptions))
    entropy_stages = ("none", "zstd", "ans")
    valid_bits = range(1, 17)

    @classmethod
    def create(
        cls,
        name: str,
        *,
        calibration: Sequence[Mapping[str, Sequence[float]]] | None = None,
        bits: int = 8,
        **options: Any,
    ) -> Self:
        """Validates ``options`` and ``bits`` and builds the codec."""
        opts = cls.parse_options(name, options)
        if bits not in cls.valid_bits:
            raise CodecError(f"bit width must be 1..16, got {bits}")
        cal = None if calibration is None else tuple(_tensor_range(c) for c in calibration)
        return cls(name, opts, bits, cal)

    @property
    def quantizes(self) -> bool:
        return True

    @property
    def header_bits(self) -> int:
        return self.bits

    def config(self) -> dict[str, Any]:
        """JSON-able ``{"name": ..., **options, "calibration": ...}``; ``get_codec(**config)`` rebuilds it."""
        out = super().config()
        if self.calibration is not None:
            out["calibration"] = [{"lo": list(c.lo), "hi": list(c.hi)} for c in self.calibration]
        return out

    def calibrate(self, batches: Iterable[Sequence[np.ndarray]]) -> QuantCodec:
        """A copy of this codec with ranges fixed from ``batches``.

        Each batch is a sequence of arrays, as given to :meth:`encode`. Min-max
        ranges take the extremes over all batches; percentile and MSE ranges
        average the per-batch ranges. Encoding with fixed ranges skips the range
        computation and clips values outside.
        """
        acc: list[list[np.ndarray]] | None = None
        mins: list[float] = []
        count = 0
        for batch in batches:
            found = self._batch_ranges(batch)
            if acc is None:
                acc = [[lo, hi] for lo, hi, _ in found]
                mins = [m for _, _, m in found]
            elif len(found) != len(acc):
                raise CodecError(f"calibration batches hold {len(acc)} and {len(found)} tensors")
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

    def _batch_ranges(
        self, batch: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """``(lo, hi, min)`` of each tensor of one calibration batch."""
        per_channel = self.options.granularity == "channel"
        found = []
        for a in check_arrays(batch):
            x3 = group_view(a.astype(np.float32, copy=False), per_channel)
            lo, hi = ranges(x3, self.bits, self.options.range, self.options.percentile)
            found.append((lo, hi, float(x3.min()) if x3.size else 0.0))
        return found

    # ---- tensor hooks ------------------------------------------------------------

    def check_batch(self, arrays: list[np.ndarray]) -> None:
        if self.calibration is not None and len(self.calibration) != len(arrays):
            raise CodecError(
                f"codec is calibrated for {len(self.calibration)} tensors, got {len(arrays)}"
            )

    def encode_tensor(self, index: int, array: np.ndarray) -> TensorCode:
        th, sym3 = self._quantize(index, array)
        if self.options.entropy == "ans":
            section, n_bytes = ans_encode(
                sym3.reshape(group_shape(array.shape, True)), self.bits, self.options.ans_model
            )
            return TensorCode(th, sym3, section, n_bytes)
        return TensorCode(th, sym3, pack(sym3.reshape(-1), self.bits))

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

    @classmethod
    def read_header(cls, r: Reader, p: Preamble, used: int, limit: int) -> TensorHeader:
        return fmt.read_tensor(r, True, used, limit)

    @classmethod
    def chunk_size(cls, th: TensorHeader, p: Preamble) -> int:
        return packed_size(th.size, p.bits)

    @classmethod
    def decode_chunk(cls, chunk: memoryview, th: TensorHeader, p: Preamble) -> np.ndarray:
        return _dequantize(unpack(chunk, th.size, p.bits), th)

    @classmethod
    def read_section(cls, r: Reader, th: TensorHeader, p: Preamble) -> np.ndarray:
        return _dequantize(ans_decode(r, th.shape, p.bits), th)


def _dequantize(sym: np.ndarray, th: TensorHeader) -> np.ndarray:
    """float32 values of the tensor ``th`` from its flat symbols."""
    assert th.lo is not None and th.step is not None  # read_tensor(quantized=True) sets them
    sym3 = sym.reshape(group_shape(th.shape, th.per_channel))
    return dequantize(sym3, th.lo, th.step).reshape(th.shape)


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


for _bits in QuantCodec.valid_bits:
    register_codec(f"q{_bits}")(functools.partial(QuantCodec.create, f"q{_bits}", bits=_bits))
del _bits
