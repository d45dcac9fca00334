"""Payload framing: the versioned, self-describing byte layout of a codec payload.

Every integer is little-endian. A payload is::

    preamble      12 bytes  struct "<4sBBBBHH"
                  magic      b"SNTC"
                  version    u8   FORMAT_VERSION (1)
                  kind       u8   0 f32, 1 f16, 2 bf16, 3 quantized (q1..q16), 4 learned
                                  (its section: splitnet.codec._learned): the
                                  codec class registered for it decodes the rest
                  bits       u8   1..16 for kind 3, else 0
                  entropy    u8   0 none, 1 zstd, 2 ans
                  n_tensors  u16  <= MAX_TENSORS
                  reserved   u16  0
    tensor table  one record per tensor:
                  dtype      u8   dtype given to encode: 0 float32, 1 float16
                  rank       u8   <= MAX_RANK
                  groups     u8   kind 3: 0 one range per tensor, 1 one per channel
                                  (axis 1, rank >= 2); otherwise 0
                  reserved   u8   0
                  shape      rank x u32
                  kind 3 only, G = 1 or shape[1] ranges:
                  lo         G x f32  value of symbol 0
                  step       G x f32  quantization step (0 for a constant range)
    body          entropy-stage specific, see below
    crc32         u32  zlib.crc32 of every byte before it

The symbol stream is the concatenation over tensors (in order, each in C
order) of: quantized symbols bit-packed as in :mod:`splitnet.codec._pack`
(kind 3), float16 / bfloat16 bit patterns (kinds 1, 2, u16 each), or the
input's own bytes (kind 0: float32 or float16, lossless). Bodies:

* ``none``: the symbol stream itself.
* ``zstd``: one zstd frame whose declared content size equals the symbol
  stream's length, and nothing after it.
* ``ans`` (kind 3 only): per tensor, ``mode u8`` (0 one model for the tensor,
  1 one model per channel); then, unless the tensor is empty, M models
  (M = 1 or shape[1]) each ``first u16, length-1 u16, counts length x u16``
  (an order-0 model over symbols ``first .. first+length-1``, counts scaled so
  the largest is at most 65535); then ``n_words u32`` and ``n_words x u32`` of
  constriction ``AnsCoder`` output. Symbols of the tensor (channel by channel
  for mode 1, each channel in C order of the remaining axes) decode in order.

Decoding checks every size against the bytes present and against
``max_elements`` (and, when given, the expected ``shapes``) before
allocating or building any entropy model; anything inconsistent raises
:class:`CodecError`.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from splitnet._errors import SplitnetError

__all__ = [
    "CodecError",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_ELEMENTS",
    "MAX_RANK",
    "MAX_TENSORS",
    "Preamble",
    "Reader",
    "TensorHeader",
]

MAGIC = b"SNTC"
FORMAT_VERSION = 1
MAX_TENSORS = 1024
MAX_RANK = 8
MAX_ELEMENTS = 1 << 28  # per payload; 1 GiB of float32

KIND_F32, KIND_F16, KIND_BF16, KIND_QUANT, KIND_LEARNED = 0, 1, 2, 3, 4
ENTROPY_CODES = {"none": 0, "zstd": 1, "ans": 2}
ENTROPY_NAMES = {v: k for k, v in ENTROPY_CODES.items()}
DTYPE_CODES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}
DTYPES = {v: k for k, v in DTYPE_CODES.items()}

PREAMBLE = struct.Struct("<4sBBBBHH")
RECORD = struct.Struct("<BBBB")
CRC = struct.Struct("<I")


class CodecError(SplitnetError):
    """A payload that cannot be decoded, or input a codec cannot encode."""


@dataclass(frozen=True)
class TensorHeader:
    """One tensor-table record. ``lo``/``step`` are float32 arrays for kind 3."""

    dtype: np.dtype
    shape: tuple[int, ...]
    per_channel: bool = False
    lo: np.ndarray | None = None
    step: np.ndarray | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def write(self) -> bytes:
        rank = len(self.shape)
        out = RECORD.pack(DTYPE_CODES[self.dtype], rank, int(self.per_channel), 0)
        out += struct.pack(f"<{rank}I", *self.shape)
        if self.lo is not None and self.step is not None:
            out += self.lo.astype("<f4").tobytes() + self.step.astype("<f4").tobytes()
        return out


class Reader:
    """Bounds-checked cursor over a payload; slices are zero-copy memoryviews."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.remaining:
            raise CodecError(
                f"truncated payload: {what} needs {n} bytes at offset {self.pos}, "
                f"{self.remaining} left"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: struct.Struct, what: str) -> tuple:
        return fmt.unpack(self.take(fmt.size, what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        item = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(count * item, what), dtype=dtype)


@dataclass(frozen=True)
class Preamble:
    """The fixed fields of a payload's preamble, as read by :func:`read_preamble`.

    Attributes:
        kind: the codec kind byte (which codec class decodes the payload).
        bits: the kind's bit-width byte (1..16 for kind 3, else 0).
        entropy: the entropy stage's name (``"none"``, ``"zstd"``, ``"ans"``).
        n_tensors: tensor records that follow.
    """

    kind: int
    bits: int
    entropy: str
    n_tensors: int


def read_preamble(r: Reader) -> Preamble:
    """Checks magic, version, entropy code, tensor count and the reserved field.

    Whether the kind, bit width and entropy stage go together is the codec
    class's call (``Codec.check_preamble``), looked up by the kind byte.
    """
    if len(r.data) < PREAMBLE.size + CRC.size:
        raise CodecError(f"payload too short ({len(r.data)} bytes) to be a splitnet payload")
    magic, version, kind, bits, entropy, n, reserved = r.unpack(PREAMBLE, "preamble")
    if magic != MAGIC:
        raise CodecError(
            f"not a splitnet codec payload (magic {bytes(magic)!r}, expected {MAGIC!r})"
        )
    if version != FORMAT_VERSION:
        raise CodecError(
            f"unsupported payload format version {version}; this splitnet reads version {FORMAT_VERSION}"
        )
    if entropy not in ENTROPY_NAMES:
        raise CodecError(f"invalid entropy stage code {entropy} for codec kind {kind}")
    if n > MAX_TENSORS:
        raise CodecError(f"payload declares {n} tensors, more than the limit {MAX_TENSORS}")
    if reserved != 0:
        raise CodecError("reserved preamble field is not zero")
    return Preamble(kind, bits, ENTROPY_NAMES[entropy], n)


def read_tensor(r: Reader, quantized: bool, used: int, limit: int) -> TensorHeader:
    """Reads one tensor record; ``used`` elements are already declared, ``limit`` in all.

    ``quantized``: the record may be per channel and carries ``lo``/``step`` (kind 3).
    """
    dtype_code, rank, per_channel, reserved = r.unpack(RECORD, "tensor record")
    if dtype_code not in DTYPES:
        raise CodecError(f"unknown dtype code {dtype_code} in tensor record")
    if rank > MAX_RANK:
        raise CodecError(f"tensor rank {rank} exceeds the limit {MAX_RANK}")
    if reserved != 0 or per_channel > 1 or (per_channel and (not quantized or rank < 2)):
        raise CodecError("invalid flags in tensor record")
    shape = tuple(int(d) for d in r.array("<u4", rank, "tensor shape"))
    size = math.prod(shape)
    # numpy refuses a shape whose non-zero extents overflow its index type, empty or not
    if math.prod(d for d in shape if d) * 8 > np.iinfo(np.intp).max:
        raise CodecError(f"tensor shape {shape} is too large for an array")
    if used + size > limit:
        raise CodecError(
            f"tensor of shape {shape} ({size} elements) takes the payload past its limit "
            f"of {limit} elements ({used} declared before it)"
        )
    if not quantized:
        return TensorHeader(DTYPES[dtype_code], shape)
    groups = shape[1] if per_channel else 1
    lo = r.array("<f4", groups, "quantization ranges")
    step = r.array("<f4", groups, "quantization steps")
    if not (np.isfinite(lo).all() and np.isfinite(step).all() and (step >= 0).all()):
        raise CodecError("non-finite or negative quantization parameters in tensor record")
    return TensorHeader(DTYPES[dtype_code], shape, bool(per_channel), lo, step)
