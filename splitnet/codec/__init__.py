"""Tensor codecs for the crossing tensors: quantization, packing, entropy coding.

A codec turns a list of arrays into one self-describing payload and back::

    codec = get_codec("q4", entropy="zstd", granularity="channel")
    payload = codec.encode([skip1, pool2])      # bytes
    skip1_hat, pool2_hat = decode(payload)      # needs nothing but the bytes

Codecs: ``f32`` (lossless), ``f16``, ``bf16`` (round to nearest even, as
``torch.Tensor.bfloat16``) and ``q1`` ... ``q16`` (uniform affine quantization
to n bits). Entropy stages: ``none`` (bit-packing), ``zstd`` (default) and
``ans`` (rANS via ``constriction``, quantizing codecs only). Lossy codecs
decode to float32; ``f32`` decodes to the dtype it was given.

This package imports numpy, zstandard and (when ``ans`` is used) constriction,
never torch: it runs on the device host. The byte layout is documented in
:mod:`splitnet.codec._format`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from splitnet._registry import Registry
from splitnet.codec._codec import Codec, CodecOptions, CodecStats, decode
from splitnet.codec._format import (
    FORMAT_VERSION,
    KIND_BF16,
    KIND_F16,
    KIND_F32,
    KIND_QUANT,
    MAX_ELEMENTS,
    MAX_RANK,
    MAX_TENSORS,
    CodecError,
)

__all__ = [
    "FORMAT_VERSION",
    "MAX_ELEMENTS",
    "MAX_RANK",
    "MAX_TENSORS",
    "Codec",
    "CodecError",
    "CodecOptions",
    "CodecStats",
    "decode",
    "get_codec",
    "list_codecs",
    "register_codec",
]

_CODECS: Registry[Callable[..., Codec]] = Registry("codec")


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


@register_codec("f32")
def _f32(**options: Any) -> Codec:
    return Codec.create("f32", KIND_F32, **options)


@register_codec("f16")
def _f16(**options: Any) -> Codec:
    return Codec.create("f16", KIND_F16, **options)


@register_codec("bf16")
def _bf16(**options: Any) -> Codec:
    return Codec.create("bf16", KIND_BF16, **options)


def _quant_factory(bits: int) -> Callable[..., Codec]:
    def factory(**options: Any) -> Codec:
        return Codec.create(f"q{bits}", KIND_QUANT, bits, **options)

    factory.__name__ = f"_q{bits}"
    return factory


for _bits in range(1, 17):
    register_codec(f"q{_bits}")(_quant_factory(_bits))
del _bits
