"""Tensor codecs for the crossing tensors: quantization, packing, entropy coding.

A codec turns a list of arrays into one self-describing payload and back::

    codec = get_codec("q4", entropy="zstd", granularity="channel")
    payload = codec.encode([skip1, pool2])      # bytes
    skip1_hat, pool2_hat = decode(payload)      # needs nothing but the bytes

Codecs: ``f32`` (lossless), ``f16``, ``bf16`` (round to nearest even, as
``torch.Tensor.bfloat16``), ``q1`` ... ``q16`` (uniform affine quantization
to n bits) and ``learned`` (a learned bottleneck's latent, coded with its
prior's tables; it decodes with its codec instance, see :mod:`splitnet.codec._learned`),
and the image codecs ``png`` and ``jpeg`` (the raw frame as an image file, for the
image baseline's bundles; :mod:`splitnet.codec._image`). Entropy stages: ``none`` (bit-packing), ``zstd`` (default) and
``ans`` (rANS via ``constriction``, quantizing codecs only). Lossy codecs
decode to float32; ``f32`` decodes to the dtype it was given.

Each wire kind is a :class:`Codec` subclass registered by its kind byte
(:func:`register_kind`) and its names (:func:`register_codec`); :func:`decode`
dispatches on the payload's kind byte. A new codec is one module that
subclasses :class:`Codec`, implements its tensor hooks and registers itself
(see :mod:`splitnet.codec._base`), imported below.

This package imports numpy, zstandard and (when ``ans`` is used) constriction,
never torch: it runs on the device host. The byte layout is documented in
:mod:`splitnet.codec._format`.
"""

from __future__ import annotations

from splitnet.codec import (  # noqa: F401  (register the built-in codecs)
    _float,
    _image,
    _learned,
    _quant_codec,
)
from splitnet.codec._base import (
    Codec,
    CodecOptions,
    TensorCode,
    decode,
    get_codec,
    list_codecs,
    list_kinds,
    register_codec,
    register_kind,
)
from splitnet.codec._float import FloatCodec
from splitnet.codec._format import (
    FORMAT_VERSION,
    MAX_ELEMENTS,
    MAX_RANK,
    MAX_TENSORS,
    CodecError,
)
from splitnet.codec._image import IMAGE_CODECS, ImageCodec
from splitnet.codec._learned import LearnedCodec
from splitnet.codec._quant_codec import QuantCodec
from splitnet.codec._stats import CodecStats

__all__ = [
    "FORMAT_VERSION",
    "IMAGE_CODECS",
    "MAX_ELEMENTS",
    "MAX_RANK",
    "MAX_TENSORS",
    "Codec",
    "CodecError",
    "CodecOptions",
    "CodecStats",
    "FloatCodec",
    "ImageCodec",
    "LearnedCodec",
    "QuantCodec",
    "TensorCode",
    "decode",
    "get_codec",
    "list_codecs",
    "list_kinds",
    "register_codec",
    "register_kind",
]
