"""The :class:`Codec` base class, the two codec registries, and :func:`decode`.

Every wire kind (the preamble's kind byte) is one :class:`Codec` subclass,
registered by that byte with :func:`register_kind`; its names (``q4``, ...)
are registered with :func:`register_codec`. The base class owns what every
payload shares: options, the preamble, the tensor table, the body framing of
the ``none`` and ``zstd`` stages, and the CRC. A subclass only codes tensors:

* encoding: :meth:`Codec.encode_tensor` returns one tensor's record and its
  chunk of the symbol stream (or, for any other entropy stage, its
  self-delimiting section);
* decoding (class methods, as a payload names only its kind):
  :meth:`Codec.read_header` reads a record, :meth:`Codec.chunk_size` and
  :meth:`Codec.decode_chunk` decode a chunk of the symbol stream, and
  :meth:`Codec.read_section` a section. A kind whose decoding needs the
  codec's state (the ``learned`` codec's tables) overrides
  :meth:`Codec.decoder` to decode with the instance instead.

A new codec is one module that subclasses :class:`Codec` and registers itself
(see ``_float.py``); :func:`decode` finds it by the kind byte.
"""

from __future__ import annotations

import dataclasses
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

import numpy as np

from splitnet._registry import Registry
from splitnet.codec import _format as fmt
from splitnet.codec._entropy import zstd_compress, zstd_decompress
from splitnet.codec._format import CodecError, Preamble, Reader, TensorHeader
from splitnet.codec._stats import CodecStats, measure

__all__ = [
    "Codec",
    "CodecOptions",
    "TensorCode",
    "codec_class",
    "decode",
    "get_codec",
    "list_codecs",
    "list_kinds",
    "register_codec",
    "register_kind",
]

ENTROPY_STAGES = ("none", "zstd", "ans")
FRAMED_STAGES = ("none", "zstd")  # stages whose body the base class frames
GRANULARITIES = ("channel", "tensor")
RANGE_METHODS = ("minmax", "percentile", "mse")
ANS_MODELS = ("auto", "channel", "tensor")


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
class TensorCode:
    """One tensor as :meth:`Codec.encode_tensor` codes it.

    Attributes:
        header: its tensor-table record.
        symbols: the symbols whose entropy :meth:`Codec.stats` reports
            (quantization levels, or float codes).
        chunk: for the ``none`` and ``zstd`` stages, its part of the symbol
            stream (:meth:`Codec.chunk_size` bytes); for any other stage, its
            self-delimiting section (read back by :meth:`Codec.read_section`).
        coded_bytes: for a section, how many of its bytes are coded symbols
            (the rest is model tables and counts); unused for a chunk.
    """

    header: TensorHeader
    symbols: np.ndarray
    chunk: bytes
    coded_bytes: int = 0


@dataclass(frozen=True)
class _Encoded:
    payload: bytes
    stream_bytes: int
    symbols: list[np.ndarray]


@dataclass(frozen=True)
class Codec(ABC):
    """A tensor codec: ``encode(arrays) -> bytes`` and ``decode(bytes) -> arrays``.

    Build one with :func:`splitnet.codec.get_codec`. Codecs are immutable;
    :meth:`calibrate` returns a new one with fixed ranges. Subclasses set the
    class attributes below, implement the tensor hooks, and register with
    :func:`register_kind` (which sets ``kind``).

    Attributes:
        name: the registry name (``"q4"``).
        options: the validated options.
        kind: the payload's kind byte (class attribute).
        label: the kind's names, for messages (``"q1..q16"``; class attribute).
        option_names: options the codec takes (class attribute).
        entropy_stages: entropy stages it takes (class attribute).
        valid_bits: values of the preamble's bits byte it writes (class attribute).

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
    options: CodecOptions = CodecOptions()

    kind: ClassVar[int]
    label: ClassVar[str] = ""
    option_names: ClassVar[frozenset[str]] = frozenset({"entropy", "level"})
    entropy_stages: ClassVar[tuple[str, ...]] = FRAMED_STAGES
    valid_bits: ClassVar[range] = range(1)

    @classmethod
    def create(
        cls,
        name: str,
        *,
        calibration: Sequence[Mapping[str, Sequence[float]]] | None = None,
        **options: Any,
    ) -> Self:
        """Validates ``options`` and builds the codec (registry factories call this)."""
        opts = cls.parse_options(name, options)
        if calibration is not None:
            raise CodecError(f"codec {name!r} does not quantize and takes no calibration")
        return cls(name, opts)

    @classmethod
    def parse_options(cls, name: str, options: Mapping[str, Any]) -> CodecOptions:
        """``options`` as :class:`CodecOptions`; anything unknown or invalid raises CodecError."""
        unknown = sorted(set(options) - cls.option_names)
        if unknown:
            raise CodecError(
                f"codec {name!r} has no option {', '.join(map(repr, unknown))}; "
                f"valid options: {', '.join(sorted(cls.option_names))}"
            )
        opts = CodecOptions(**options)
        _check_choice("entropy", opts.entropy, cls.entropy_stages)
        _check_choice("granularity", opts.granularity, GRANULARITIES)
        _check_choice("range", opts.range, RANGE_METHODS)
        _check_choice("ans_model", opts.ans_model, ANS_MODELS)
        if not isinstance(opts.level, int) or not -(1 << 17) <= opts.level <= 22:
            raise CodecError(
                f"zstd level must be an integer from -131072 to 22, got {opts.level!r}"
            )
        if not isinstance(opts.percentile, int | float) or not 50 < opts.percentile <= 100:
            raise CodecError(f"percentile must be in (50, 100], got {opts.percentile!r}")
        return opts

    @property
    def quantizes(self) -> bool:
        """Whether the codec maps values to integer levels (and so can be calibrated)."""
        return False

    @property
    def header_bits(self) -> int:
        """The preamble's bits byte (one of ``valid_bits``)."""
        return 0

    # ---- configuration -------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """JSON-able ``{"name": ..., **options}``; ``get_codec(**config)`` rebuilds it."""
        out: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(CodecOptions):
            if f.name in self.option_names:
                out[f.name] = getattr(self.options, f.name)
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Codec:
        """Inverse of :meth:`config`."""
        return get_codec(**dict(config))

    def calibrate(self, batches: Iterable[Sequence[np.ndarray]]) -> Codec:
        """A copy of this codec with ranges fixed from ``batches`` (quantizing codecs only)."""
        raise CodecError(f"codec {self.name!r} does not quantize; nothing to calibrate")

    # ---- encode / decode -----------------------------------------------------

    def encode(self, arrays: Sequence[np.ndarray]) -> bytes:
        """Encodes float32/float16 arrays into one self-describing payload."""
        return self._encode(arrays, keep_symbols=False).payload

    def decode(
        self,
        payload: bytes,
        *,
        max_elements: int | None = None,
        shapes: Sequence[Sequence[int]] | None = None,
    ) -> list[np.ndarray]:
        """Same as :func:`splitnet.codec.decode` (any stateless codec's payload decodes).

        A payload of this codec's own kind decodes with this instance, so that a
        stateful kind (see :meth:`decoder`) can use its state.
        """
        return _decode(payload, max_elements, self, shapes)

    def stats(self, arrays: Sequence[np.ndarray]) -> CodecStats:
        """Encodes and decodes ``arrays`` and measures size, entropy and error."""
        arrays = check_arrays(arrays)
        enc = self._encode(arrays, keep_symbols=True)
        decoded = self.decode(enc.payload)
        return measure(arrays, enc.payload, enc.stream_bytes, enc.symbols, decoded)

    def _encode(self, arrays: Sequence[np.ndarray], keep_symbols: bool) -> _Encoded:
        arrays = check_arrays(arrays)
        self.check_batch(arrays)
        entropy = self.options.entropy
        head = [
            fmt.PREAMBLE.pack(
                fmt.MAGIC,
                fmt.FORMAT_VERSION,
                self.kind,
                self.header_bits,
                fmt.ENTROPY_CODES[entropy],
                len(arrays),
                0,
            )
        ]
        chunks: list[bytes] = []
        coded_bytes = 0
        symbols: list[np.ndarray] = []
        for i, a in enumerate(arrays):
            code = self.encode_tensor(i, a)
            head.append(code.header.write())
            chunks.append(code.chunk)
            coded_bytes += code.coded_bytes
            if keep_symbols:
                symbols.append(code.symbols.reshape(-1))
        body = b"".join(chunks)
        if entropy == "zstd":
            body = zstd_compress(body, self.options.level)
        stream = len(body) if entropy in FRAMED_STAGES else coded_bytes
        header = b"".join(head)
        crc = zlib.crc32(body, zlib.crc32(header))
        return _Encoded(header + body + fmt.CRC.pack(crc), stream, symbols)

    # ---- tensor hooks ----------------------------------------------------------

    def check_batch(self, arrays: list[np.ndarray]) -> None:  # noqa: B027 (optional hook)
        """Checks the checked, native-order arrays of one :meth:`encode` call as a whole."""

    @abstractmethod
    def encode_tensor(self, index: int, array: np.ndarray) -> TensorCode:
        """Codes tensor ``index`` of a batch (native byte order, float32 or float16)."""

    @classmethod
    def check_preamble(cls, p: Preamble) -> None:
        """Raises CodecError unless this kind takes the preamble's bit width and stage."""
        if p.bits not in cls.valid_bits:
            raise CodecError(f"invalid bit width {p.bits} for codec kind {p.kind}")
        if p.entropy not in cls.entropy_stages:
            raise CodecError(
                f"invalid entropy stage code {fmt.ENTROPY_CODES[p.entropy]} for codec kind {p.kind}"
            )

    @classmethod
    def decoder(cls, codec: Codec | None) -> type[Codec] | Codec:
        """What decodes this kind's tensors: the class itself, for stateless kinds.

        ``codec`` is the instance whose :meth:`decode` was called (``None`` from
        :func:`decode`). A kind whose decoding needs state returns ``codec`` (or
        raises CodecError saying which codec decodes it); its decoding hooks are
        then called on the instance.
        """
        return cls

    @classmethod
    def read_header(cls, r: Reader, p: Preamble, used: int, limit: int) -> TensorHeader:
        """Reads one tensor record (``used`` elements declared before it, ``limit`` in all)."""
        return fmt.read_tensor(r, False, used, limit)

    @classmethod
    @abstractmethod
    def chunk_size(cls, th: TensorHeader, p: Preamble) -> int:
        """Bytes of the symbol stream that the tensor ``th`` takes."""

    @classmethod
    @abstractmethod
    def decode_chunk(cls, chunk: memoryview, th: TensorHeader, p: Preamble) -> np.ndarray:
        """The tensor ``th`` (of shape ``th.shape``) from its chunk of the symbol stream."""

    @classmethod
    def read_section(cls, r: Reader, th: TensorHeader, p: Preamble) -> np.ndarray:
        """The tensor ``th`` from its section of the body, for stages other than none/zstd."""
        raise CodecError(f"codec kind {p.kind} has no entropy stage {p.entropy!r}")


# ---- registries -----------------------------------------------------------------

_KINDS: Registry[type[Codec]] = Registry("codec kind")
_CODECS: Registry[Callable[..., Codec]] = Registry("codec")
C = TypeVar("C", bound=type[Codec])


def register_kind(kind: int) -> Callable[[C], C]:
    """Class decorator registering a :class:`Codec` subclass as the decoder of ``kind``.

    Sets the class's ``kind``; a kind byte registered twice raises ``ValueError``.

    Example:
        >>> @register_kind(200)  # doctest: +SKIP
        ... @dataclass(frozen=True)
        ... class MyCodec(Codec): ...
    """
    if not 0 <= kind <= 255:
        raise ValueError(f"a codec kind is one byte (0..255), got {kind}")

    def decorator(cls: C) -> C:
        _KINDS.add(str(kind), cls)
        cls.kind = kind
        return cls

    return decorator


def list_kinds() -> dict[int, type[Codec]]:
    """The registered kind bytes and their codec classes, by kind."""
    return {int(k): _KINDS.get(k) for k in sorted(_KINDS.names(), key=int)}


def codec_class(kind: int) -> type[Codec]:
    """The codec class registered for ``kind``; an unknown kind raises CodecError."""
    if str(kind) not in _KINDS:
        valid = ", ".join(f"{k} ({c.label or c.__name__})" for k, c in list_kinds().items())
        raise CodecError(f"unknown codec kind {kind} in payload header; valid kinds: {valid}")
    return _KINDS.get(str(kind))


def register_codec(name: str) -> Callable[[Callable[..., Codec]], Callable[..., Codec]]:
    """Decorator registering a factory ``(**options) -> Codec`` under ``name``.

    A duplicate name raises ``ValueError``.
    """
    return _CODECS.register(name)


def list_codecs(pattern: str | None = None) -> list[str]:
    """Registered codec names, sorted, optionally filtered by a shell-style pattern.

    Example:
        >>> list_codecs("f*")
        ['f16', 'f32']
    """
    return _CODECS.names(pattern)


def get_codec(name: str, **options: Any) -> Codec:
    """Builds the codec ``name`` with keyword ``options`` (see :class:`CodecOptions`).

    ``calibration=`` (as in :meth:`Codec.config`) fixes the ranges, so
    ``get_codec(**codec.config())`` rebuilds a codec exactly.

    Raises:
        splitnet._registry.UnknownNameError: unknown name (the message lists the valid ones).
        CodecError: unknown or invalid option.
    """
    return _CODECS.get(name)(**options)


# ---- decode ---------------------------------------------------------------------


def decode(
    payload: bytes,
    *,
    max_elements: int | None = None,
    shapes: Sequence[Sequence[int]] | None = None,
) -> list[np.ndarray]:
    """Decodes any splitnet codec payload, with the codec class its kind byte names.

    Returns float32 arrays, except for the lossless ``f32`` codec, which returns
    the dtype that was encoded (float32 or float16).

    Args:
        payload: the bytes from :meth:`Codec.encode`.
        max_elements: refuse payloads declaring more elements in all
            (default :data:`splitnet.codec.MAX_ELEMENTS`).
        shapes: the tensors' expected shapes; a payload declaring another count
            or shape is refused from its header, before any body is decoded
            (so a hostile header cannot make decoding cost more than a real frame).

    Raises:
        CodecError: the payload is truncated, corrupted, of an unknown kind, or
            exceeds the limits; or it is of a kind that decodes only with its codec
            instance (``learned``: ``codec.decode(payload)``).
    """
    return _decode(payload, max_elements, None, shapes)


def _decode(
    payload: bytes,
    max_elements: int | None,
    codec: Codec | None,
    shapes: Sequence[Sequence[int]] | None = None,
) -> list[np.ndarray]:
    """:func:`decode`, by ``codec`` where the payload's kind needs its state."""
    limit = fmt.MAX_ELEMENTS if max_elements is None else max_elements
    try:
        data = memoryview(payload).cast("B")
    except TypeError as e:
        raise CodecError(f"payload must be a bytes-like object: {e}") from None
    r = Reader(data[: -fmt.CRC.size] if len(data) >= fmt.CRC.size else data)
    p = fmt.read_preamble(r)
    cls = codec_class(p.kind)
    cls.check_preamble(p)
    dec = cls.decoder(codec)
    (crc,) = fmt.CRC.unpack(data[-fmt.CRC.size :])
    if zlib.crc32(r.data) != crc:
        raise CodecError("payload checksum mismatch: the payload is corrupted")
    expected = None if shapes is None else [tuple(int(d) for d in s) for s in shapes]
    if expected is not None and p.n_tensors != len(expected):
        raise CodecError(f"payload declares {p.n_tensors} tensors, expected {len(expected)}")
    headers: list[TensorHeader] = []
    used = 0
    for i in range(p.n_tensors):
        th = dec.read_header(r, p, used, limit)
        if expected is not None and th.shape != expected[i]:
            raise CodecError(
                f"tensor {i} declares shape {list(th.shape)}, expected {list(expected[i])}"
            )
        used += th.size
        headers.append(th)
    if p.entropy in FRAMED_STAGES:
        return _decode_stream(dec, r, p, headers)
    out = [dec.read_section(r, th, p) for th in headers]
    if r.remaining:
        raise CodecError(f"{r.remaining} unexpected bytes after the last tensor")
    return out


def _decode_stream(
    cls: type[Codec] | Codec, r: Reader, p: Preamble, headers: list[TensorHeader]
) -> list[np.ndarray]:
    """The tensors of a ``none`` or ``zstd`` body: the symbol stream, chunk by chunk."""
    sizes = [cls.chunk_size(th, p) for th in headers]
    body = r.take(r.remaining, "body")
    if p.entropy == "zstd":
        body = memoryview(zstd_decompress(body, sum(sizes)))
    elif len(body) != sum(sizes):
        raise CodecError(f"body holds {len(body)} bytes, the header declares {sum(sizes)}")
    out, pos = [], 0
    for th, size in zip(headers, sizes, strict=True):
        out.append(cls.decode_chunk(body[pos : pos + size], th, p))
        pos += size
    return out


# ---- helpers ------------------------------------------------------------------


def _check_choice(option: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise CodecError(f"option {option}={value!r} is not one of {', '.join(choices)}")


def check_arrays(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``arrays`` as native-order float32/float16 arrays within the payload limits."""
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
