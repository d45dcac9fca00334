"""The ``learned`` codec (kind 4): a latent coded with a learned prior's integer tables.

A learned bottleneck's encoder maps the crossing tensors to one latent ``y``
(``N x C x ...``, float32). Its prior
(:class:`splitnet.bottleneck.FactorizedPrior`) exports integer tables with
``cdf_tables()``; this codec, numpy and constriction only, codes ``y`` with them:

* encode: per channel ``c``, ``symbols = clip(rint(y - medians[c]) - offset[c], 0, L_c - 1)``,
  rANS-coded (constriction's ``AnsCoder``) under the categorical model of
  ``pmf[c]``; values outside a channel's range are clamped into it (no escape
  code; :meth:`LearnedCodec.count_clamped` counts them);
* decode: ``(symbols + offset[c]).astype(float32) + medians[c]``, which equals the
  prior's eval-mode ``round(y - m) + m`` wherever nothing was clamped.

The tables travel in the bundle (the codec's :meth:`~LearnedCodec.config`), not in
the payload, which records only their 32-bit fingerprint (crc32 of their
canonical JSON). So a learned payload decodes with its codec instance
(``get_codec("learned", tables=...).decode(payload)`` or
``Manifest.make_codec().decode(payload)``), never with the module-level
:func:`splitnet.codec.decode`.

Payload: the common preamble (kind 4, bits 0, entropy ``ans``, one tensor), one
plain tensor record (rank >= 2, ``shape[1]`` = the tables' channels), then the
section ``fingerprint u32, n_words u32, n_words x u32`` of ``AnsCoder`` output, in
which the channels' symbols (each channel in C order of the other axes) decode in
channel order; then the CRC.
"""

from __future__ import annotations

import functools
import json
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

from splitnet.codec import _format as fmt
from splitnet.codec._base import Codec, CodecOptions, TensorCode, register_codec, register_kind
from splitnet.codec._entropy import ans_decode_rows, ans_encode_rows
from splitnet.codec._format import CodecError, Preamble, Reader, TensorHeader

__all__ = ["LearnedCodec", "tables_fingerprint"]

MAX_PRECISION = 16
MAX_CHANNELS = 1 << 16
SECTION = struct.Struct("<II")  # tables fingerprint, rANS word count
TABLE_KEYS = ("medians", "offset", "pmf", "precision")


@dataclass(frozen=True)
class _Model:
    """The validated tables in the form coding needs."""

    canonical: dict[str, Any]
    medians: np.ndarray  # (C,) float32
    offsets: np.ndarray  # (C,) int64
    lengths: np.ndarray  # (C,) int64
    pmfs: tuple[np.ndarray, ...]  # the integer frequencies, as int64 arrays
    fingerprint: int


@register_kind(fmt.KIND_LEARNED)
@dataclass(frozen=True)
class LearnedCodec(Codec):
    """A latent coded with a learned factorized prior's integer tables; decodes to float32.

    Attributes:
        tables: ``{"precision", "medians", "offset", "pmf"}`` as
            :meth:`splitnet.bottleneck.FactorizedPrior.cdf_tables` returns them;
            validated (and normalised) when the codec is built.

    Example:
        >>> tables = {"precision": 4, "medians": [0.5], "offset": [-1], "pmf": [[4, 8, 4]]}
        >>> codec = get_codec("learned", tables=tables)
        >>> y = np.array([[[0.4, 1.6, -2.0]]], np.float32)
        >>> codec.decode(codec.encode([y]))[0].tolist()
        [[[0.5, 1.5, -0.5]]]
    """

    tables: Mapping[str, Any] = field(default_factory=dict, hash=False)
    _model: _Model = field(init=False, repr=False, compare=False)

    label = "learned"
    option_names = frozenset()
    entropy_stages = ("ans",)

    def __post_init__(self) -> None:
        model = _parse_tables(self.tables)
        object.__setattr__(self, "tables", model.canonical)
        object.__setattr__(self, "_model", model)

    @classmethod
    def create(
        cls,
        name: str,
        *,
        calibration: Sequence[Mapping[str, Sequence[float]]] | None = None,
        tables: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Self:
        """Builds the codec from its ``tables`` (required); it takes no other option."""
        if options:
            raise CodecError(
                f"codec {name!r} has no option {', '.join(map(repr, sorted(options)))}; "
                "it takes only tables="
            )
        if calibration is not None:
            raise CodecError(f"codec {name!r} does not quantize and takes no calibration")
        if tables is None:
            raise CodecError(
                f"codec {name!r} needs tables= (FactorizedPrior.cdf_tables(), or the bundle's "
                "codec config)"
            )
        return cls(name, CodecOptions(entropy="ans"), tables)

    @property
    def channels(self) -> int:
        """Latent channels the tables cover."""
        return int(self._model.medians.size)

    @property
    def fingerprint(self) -> int:
        """The tables' 32-bit fingerprint, as recorded in every payload."""
        return self._model.fingerprint

    def config(self) -> dict[str, Any]:
        """``{"name": ..., "tables": ...}`` (JSON-able); ``get_codec(**config)`` rebuilds it."""
        return {**super().config(), "tables": self.tables}

    @classmethod
    def decoder(cls, codec: Codec | None) -> LearnedCodec:
        if not isinstance(codec, LearnedCodec):
            raise CodecError(
                "a learned payload decodes only with its bundle's codec, which holds the tables: "
                'get_codec("learned", tables=...).decode(payload), or '
                "Manifest.make_codec().decode(payload)"
            )
        return codec

    # ---- encoding ----------------------------------------------------------------

    def check_batch(self, arrays: list[np.ndarray]) -> None:
        if len(arrays) != 1:
            raise CodecError(
                f"the learned codec takes exactly one latent, got {len(arrays)} tensors"
            )
        self._check_shape(arrays[0].shape)
        if np.isnan(arrays[0]).any():
            raise CodecError("the latent holds NaN; the learned codec cannot code it")

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if len(shape) < 2 or shape[1] != self.channels:
            raise CodecError(
                f"the learned codec's tables cover {self.channels} channels: it takes an "
                f"N x {self.channels} x ... latent, got shape {shape}"
            )

    def symbols(self, y: np.ndarray) -> tuple[np.ndarray, int]:
        """``(symbols, clamped)``: ``y``'s channel-table indices and how many were clamped.

        ``symbols`` has ``y``'s shape (int32); ``clamped`` counts the values of
        ``rint(y - medians)`` outside their channel's table range.
        """
        m = self._model
        bshape = (1, -1) + (1,) * (y.ndim - 2)
        q = np.rint(y.astype(np.float32, copy=False) - m.medians.reshape(bshape))
        idx = q - m.offsets.reshape(bshape)
        hi = (m.lengths - 1).reshape(bshape)
        clamped = int(np.count_nonzero((idx < 0) | (idx > hi)))
        return np.clip(idx, 0, hi).astype(np.int32), clamped

    def count_clamped(self, y: np.ndarray) -> int:
        """How many values of the latent ``y`` fall outside the tables' range (and are clamped)."""
        self._check_shape(np.shape(y))
        return self.symbols(np.asarray(y))[1]

    def encode_tensor(self, index: int, array: np.ndarray) -> TensorCode:
        sym, _ = self.symbols(array)
        rows = np.moveaxis(sym, 1, 0).reshape(self.channels, -1)
        words = ans_encode_rows(list(zip(rows, self._model.pmfs, strict=True)))
        section = SECTION.pack(self.fingerprint, words.size) + words.tobytes()
        return TensorCode(TensorHeader(array.dtype, array.shape), sym, section, 4 * words.size)

    # ---- decoding ----------------------------------------------------------------

    @classmethod
    def chunk_size(cls, th: TensorHeader, p: Preamble) -> int:
        raise CodecError("the learned codec has no none/zstd symbol stream")  # see entropy_stages

    @classmethod
    def decode_chunk(cls, chunk: memoryview, th: TensorHeader, p: Preamble) -> np.ndarray:
        raise CodecError("the learned codec has no none/zstd symbol stream")

    def read_section(self, r: Reader, th: TensorHeader, p: Preamble) -> np.ndarray:  # type: ignore[override]
        """The latent ``th`` from its section, with this codec's tables."""
        fingerprint, n_words = r.unpack(SECTION, "learned section")
        if fingerprint != self.fingerprint:
            raise CodecError(
                f"the payload was coded with tables of fingerprint {fingerprint:#010x}, this "
                f"codec's tables have {self.fingerprint:#010x}: decode with the bundle's codec"
            )
        self._check_shape(th.shape)
        words = r.array("<u4", n_words, "ans words").astype(np.uint32)
        per_channel = th.size // self.channels
        rows = ans_decode_rows(words, list(self._model.pmfs), per_channel)
        m = self._model
        values = (rows + m.offsets[:, None]).astype(np.float32) + m.medians[:, None]
        values = values.reshape(self.channels, th.shape[0], per_channel // max(th.shape[0], 1))
        return np.moveaxis(values, 0, 1).reshape(th.shape)


# ---- tables ----------------------------------------------------------------------


def tables_fingerprint(tables: Mapping[str, Any]) -> int:
    """crc32 of the canonical JSON (sorted keys, no spaces) of normalised ``tables``."""
    text = json.dumps(tables, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return zlib.crc32(text.encode())


def _parse_tables(tables: Mapping[str, Any]) -> _Model:
    """Validates ``tables`` and builds the coding model; anything malformed raises CodecError."""
    if not isinstance(tables, Mapping) or sorted(tables) != sorted(TABLE_KEYS):
        got = sorted(tables) if isinstance(tables, Mapping) else type(tables).__name__
        raise CodecError(
            f"learned codec tables need exactly the keys {list(TABLE_KEYS)}, got {got}"
        )
    precision = tables["precision"]
    if not _is_int(precision) or not 1 <= precision <= MAX_PRECISION:
        raise CodecError(
            f"tables: precision must be an integer 1..{MAX_PRECISION}, got {precision!r}"
        )
    medians = _number_list(tables["medians"], "medians", float)
    offsets = _number_list(tables["offset"], "offset", int)
    pmf = tables["pmf"]
    c = len(medians)
    if not 1 <= c <= MAX_CHANNELS or len(offsets) != c or not _is_list(pmf) or len(pmf) != c:
        raise CodecError(
            f"tables: medians, offset and pmf need one entry per channel (1..{MAX_CHANNELS}), got "
            f"{c}, {len(offsets)} and {len(pmf) if _is_list(pmf) else type(pmf).__name__}"
        )
    with np.errstate(over="ignore"):
        med32 = np.asarray(medians, dtype=np.float32)
    if not np.isfinite(med32).all():
        raise CodecError("tables: medians must be finite float32 values")
    freqs = [_number_list(f, f"pmf[{i}]", int) for i, f in enumerate(pmf)]
    for i, (f, off) in enumerate(zip(freqs, offsets, strict=True)):
        if not f or min(f) < 1 or sum(f) != 1 << precision:
            raise CodecError(
                f"tables: pmf[{i}] must be positive integers summing to 2**precision "
                f"({1 << precision}), got {len(f)} values summing to {sum(f)}"
            )
        if not -(1 << 31) <= off <= (1 << 31) - len(f):
            raise CodecError(f"tables: offset[{i}] = {off} takes channel {i} past 32 bits")
    canonical = {
        "precision": int(precision),
        "medians": [float(m) for m in med32],
        "offset": offsets,
        "pmf": freqs,
    }
    return _Model(
        canonical=canonical,
        medians=med32,
        offsets=np.asarray(offsets, dtype=np.int64),
        lengths=np.asarray([len(f) for f in freqs], dtype=np.int64),
        pmfs=tuple(np.asarray(f, dtype=np.int64) for f in freqs),
        fingerprint=tables_fingerprint(canonical),
    )


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _is_list(v: object) -> bool:
    return isinstance(v, Sequence | np.ndarray) and not isinstance(v, str | bytes)


def _number_list(values: object, what: str, kind: type) -> list:
    """``values`` as a list of Python ints (``kind=int``) or finite floats."""
    if not _is_list(values):
        raise CodecError(f"tables: {what} must be a list, got {type(values).__name__}")
    ok = _is_int if kind is int else lambda v: _is_int(v) or isinstance(v, float | np.floating)
    bad = [v for v in values if not ok(v)]
    if bad or (kind is float and not all(math.isfinite(v) for v in values)):
        raise CodecError(f"tables: {what} must hold {kind.__name__}s, got {(bad or values)[0]!r}")
    return [kind(v) for v in values]


register_codec("learned")(functools.partial(LearnedCodec.create, "learned"))
