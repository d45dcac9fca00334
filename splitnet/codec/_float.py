"""Float codecs: ``f32`` (lossless), ``f16`` and ``bf16`` (kinds 0, 1, 2).

Each sends one fixed-width code per element, in C order, little-endian: the
input's own bytes (``f32``, float32 or float16 as given), float16 values, or
bfloat16 bit patterns rounded to nearest even. Their tensor records carry no
ranges, and the entropy stage is ``none`` or ``zstd``.
"""

from __future__ import annotations

import functools
from abc import abstractmethod
from dataclasses import dataclass

import numpy as np

from splitnet.codec import _format as fmt
from splitnet.codec._base import Codec, TensorCode, register_codec, register_kind
from splitnet.codec._format import Preamble, TensorHeader
from splitnet.codec._quant import bf16_bits, bf16_to_f32

__all__ = ["BF16Codec", "F16Codec", "F32Codec", "FloatCodec"]


@dataclass(frozen=True)
class FloatCodec(Codec):
    """Base of the codecs that send one float code per element."""

    def encode_tensor(self, index: int, array: np.ndarray) -> TensorCode:
        codes = self.to_codes(array)
        return TensorCode(TensorHeader(array.dtype, array.shape), codes, codes.tobytes())

    @classmethod
    def chunk_size(cls, th: TensorHeader, p: Preamble) -> int:
        return th.size * cls.code_bytes(th)

    @classmethod
    def decode_chunk(cls, chunk: memoryview, th: TensorHeader, p: Preamble) -> np.ndarray:
        return cls.from_codes(chunk, th).reshape(th.shape)

    @classmethod
    def code_bytes(cls, th: TensorHeader) -> int:
        """Bytes per element on the wire."""
        return 2

    @staticmethod
    @abstractmethod
    def to_codes(a: np.ndarray) -> np.ndarray:
        """The little-endian codes of ``a`` (C-contiguous)."""

    @staticmethod
    @abstractmethod
    def from_codes(chunk: memoryview, th: TensorHeader) -> np.ndarray:
        """The flat decoded values of one tensor's codes."""


@register_kind(fmt.KIND_F32)
@dataclass(frozen=True)
class F32Codec(FloatCodec):
    """Lossless: the input's own float32 or float16 bytes; decodes to that dtype."""

    label = "f32"

    @classmethod
    def code_bytes(cls, th: TensorHeader) -> int:
        return th.dtype.itemsize

    @staticmethod
    def to_codes(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))

    @staticmethod
    def from_codes(chunk: memoryview, th: TensorHeader) -> np.ndarray:
        return np.frombuffer(chunk, dtype=th.dtype.newbyteorder("<")).astype(th.dtype)


@register_kind(fmt.KIND_F16)
@dataclass(frozen=True)
class F16Codec(FloatCodec):
    """float16 values (overflow becomes infinity); decodes to float32."""

    label = "f16"

    @staticmethod
    def to_codes(a: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(a, dtype="<f2")

    @staticmethod
    def from_codes(chunk: memoryview, th: TensorHeader) -> np.ndarray:
        return np.frombuffer(chunk, dtype="<f2").astype(np.float32)


@register_kind(fmt.KIND_BF16)
@dataclass(frozen=True)
class BF16Codec(FloatCodec):
    """bfloat16 bit patterns, rounded to nearest even as ``torch.Tensor.bfloat16``."""

    label = "bf16"

    @staticmethod
    def to_codes(a: np.ndarray) -> np.ndarray:
        return bf16_bits(a.astype(np.float32, copy=False)).astype("<u2", copy=False)

    @staticmethod
    def from_codes(chunk: memoryview, th: TensorHeader) -> np.ndarray:
        return bf16_to_f32(np.frombuffer(chunk, dtype="<u2"))


for _cls in (F32Codec, F16Codec, BF16Codec):
    register_codec(_cls.label)(functools.partial(_cls.create, _cls.label))
del _cls
