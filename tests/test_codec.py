"""Tests of splitnet.codec: round trips, error bounds, calibration, format, bad input."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from _no_torch import run_without_torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import splitnet
from splitnet._registry import UnknownNameError
from splitnet.codec import (
    FORMAT_VERSION,
    Codec,
    CodecError,
    FloatCodec,
    QuantCodec,
    TensorCode,
    _base,
    decode,
    get_codec,
    list_codecs,
    list_kinds,
    register_codec,
    register_kind,
)
from splitnet.codec import _format as fmt
from splitnet.codec._base import codec_class
from splitnet.codec._pack import pack, packed_size, unpack

EXPECTED = Path(__file__).parent / "expected" / "codec"
GENERATE = os.environ.get("GENERATE_EXPECTED") == "1"
QUANT = [f"q{b}" for b in range(1, 17)]


def stages(name: str) -> list[str]:
    if name == "learned":  # needs tables; tested in test_learned_codec.py
        return []
    if name in ("png", "jpeg"):  # code frames, not tensors; tested in test_image_bundles.py
        return []
    return ["none", "zstd", "ans"] if name.startswith("q") else ["none", "zstd"]


ALL = [(name, stage) for name in list_codecs() for stage in stages(name)]


@pytest.fixture(autouse=True)
def _seeded():
    state = np.random.get_state()
    np.random.seed(0)
    yield
    np.random.set_state(state)


def relu(shape, seed=0) -> np.ndarray:
    return np.maximum(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32), 0)


def read_header(payload: bytes) -> tuple[list[fmt.TensorHeader], int]:
    """The tensor records of a payload and where its body starts (private format module)."""
    r = fmt.Reader(memoryview(payload)[:-4])
    p = fmt.read_preamble(r)
    cls = codec_class(p.kind)
    out, used = [], 0
    for _ in range(p.n_tensors):
        th = cls.read_header(r, p, used, fmt.MAX_ELEMENTS)
        used += th.size
        out.append(th)
    return out, r.pos


def header_ranges(payload: bytes) -> list[fmt.TensorHeader]:
    return read_header(payload)[0]


def check_quant_error(x: np.ndarray, y: np.ndarray, th: fmt.TensorHeader, bits: int) -> None:
    """|y - clip(x)| <= step/2 everywhere (plus float32 rounding), per range group."""
    if x.size == 0:
        return
    g = x.shape[1] if th.per_channel else 1
    shape3 = (x.shape[0], g, -1) if th.per_channel else (1, 1, -1)
    x3 = x.astype(np.float64).reshape(shape3)
    y3 = y.astype(np.float64).reshape(shape3)
    lo = th.lo.astype(np.float64).reshape(1, -1, 1)
    step = th.step.astype(np.float64).reshape(1, -1, 1)
    hi = lo + step * ((1 << bits) - 1)
    err = np.abs(y3 - np.clip(x3, lo, hi))
    eps = np.finfo(np.float32).eps
    tol = step * (0.5 + 1e-4) + 4 * eps * np.maximum(np.abs(lo), np.abs(hi))
    assert (err <= tol).all(), float((err - tol).max())


def check_bf16_error(x: np.ndarray, y: np.ndarray) -> None:
    """``y`` is ``x`` rounded to bfloat16: within half an ulp, NaN stays NaN."""
    assert y.dtype == np.float32 and y.shape == x.shape
    ref = x.astype(np.float32)
    finite = np.isfinite(ref) & (np.abs(ref) < 3e38)
    # round to nearest: half an ulp, 2^-8 relative for normals; bf16 subnormals are
    # multiples of 2^-133, so below 2^-126 the error is at most 2^-134 absolute
    bound = np.maximum(np.abs(ref[finite]) * 2.0**-8, 2.0**-134)
    assert (np.abs(y[finite] - ref[finite]) <= bound).all()
    assert np.isnan(y[np.isnan(ref)]).all()


# ---- registry and options ------------------------------------------------------


def test_registry_names():
    names = list_codecs()
    assert {"f32", "f16", "bf16", *QUANT} <= set(names)
    assert list_codecs("f*") == ["f16", "f32"]
    assert splitnet.list_codecs() == names
    assert splitnet.get_codec("q4").name == "q4"


def test_unknown_name_lists_valid():
    with pytest.raises(UnknownNameError, match="q16"):
        get_codec("q17")
    with pytest.raises(UnknownNameError):
        get_codec("q0")


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_codec("q4")(lambda **o: get_codec("q4", **o))


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("q4", {"colour": "red"}, "no option 'colour'"),
        ("f16", {"granularity": "tensor"}, "no option 'granularity'"),
        ("f16", {"entropy": "ans"}, "entropy='ans'"),
        ("q4", {"entropy": "lz4"}, "entropy='lz4'"),
        ("q4", {"granularity": "row"}, "granularity"),
        ("q4", {"range": "max"}, "range"),
        ("q4", {"level": 99}, "level"),
        ("q4", {"percentile": 10}, "percentile"),
        ("f32", {"calibration": [{"lo": [0.0], "hi": [1.0]}]}, "calibration"),
        ("q4", {"calibration": [{"lo": [0.0]}]}, "'lo' and 'hi'"),
    ],
)
def test_bad_options(name, options, match):
    with pytest.raises(CodecError, match=match):
        get_codec(name, **options)


# ---- round trips ----------------------------------------------------------------


@pytest.mark.parametrize("name, stage", ALL)
def test_round_trip_every_codec(name, stage):
    rng = np.random.default_rng(1)
    arrays = [
        relu((2, 8, 5, 7)),
        rng.standard_normal((3, 4), dtype=np.float32),
        np.float32(2.5) * np.ones((), np.float32),
        np.zeros((2, 0, 3), np.float32),
        rng.standard_normal((1, 3, 4), dtype=np.float32).astype(np.float16),
    ]
    codec = get_codec(name, entropy=stage)
    payload = codec.encode(arrays)
    out = decode(payload)
    assert np.array_equal(codec.decode(payload)[0], out[0])
    assert [o.shape for o in out] == [a.shape for a in arrays]
    if name == "f32":
        for a, o in zip(arrays, out, strict=True):
            assert o.dtype == a.dtype and np.array_equal(o, a)
        return
    assert all(o.dtype == np.float32 for o in out)
    if name == "f16":
        for a, o in zip(arrays, out, strict=True):
            assert np.array_equal(o, a.astype(np.float16).astype(np.float32))
    elif name == "bf16":
        for a, o in zip(arrays, out, strict=True):
            check_bf16_error(a, o)
        assert (out[0][arrays[0] == 0] == 0).all() and (out[2] == 2.5).all()  # exact in bf16
    elif name.startswith("q"):
        bits = int(name[1:])
        for a, o, th in zip(arrays, out, header_ranges(payload), strict=True):
            check_quant_error(a, o, th, bits)
        assert (out[0][arrays[0] == 0] == 0).all()  # post-ReLU zeros are exact
        assert (out[2] == 2.5).all()  # a constant tensor is exact


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    bits=st.integers(1, 16),
    granularity=st.sampled_from(["channel", "tensor"]),
    stage=st.sampled_from(["none", "zstd", "ans"]),
    method=st.sampled_from(["minmax", "percentile", "mse"]),
)
def test_quant_round_trip_property(data, bits, granularity, stage, method):
    dtype = data.draw(st.sampled_from([np.float32, np.float16]))
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))
    elements = st.floats(-1e4, 1e4, width=16 if dtype == np.float16 else 32)
    x = data.draw(hnp.arrays(dtype, shape, elements=elements))
    codec = get_codec(f"q{bits}", entropy=stage, granularity=granularity, range=method)
    payload = codec.encode([x])
    (y,) = decode(payload)
    assert y.shape == x.shape and y.dtype == np.float32
    (th,) = header_ranges(payload)
    assert th.per_channel == (granularity == "channel" and x.ndim >= 2)
    check_quant_error(x.astype(np.float32), y, th, bits)
    if method == "minmax" and x.size and x.min() >= 0:
        assert (y[x == 0] == 0).all()


@pytest.mark.parametrize("bits", [3, 8, 12])
def test_quant_subnormal_step_round_trips(bits):
    # Found by hypothesis: a range of float32's smallest normal gives a subnormal step
    # whose float32 reciprocal is inf, and 0 * inf made a NaN symbol.
    x = np.array([[[np.finfo(np.float32).tiny, 0.0]]], dtype=np.float32)
    payload = get_codec(f"q{bits}", entropy="none", granularity="channel").encode([x])
    (y,) = decode(payload)
    (th,) = header_ranges(payload)
    check_quant_error(x, y, th, bits)


@settings(max_examples=100, deadline=None)
@given(
    codec=st.sampled_from(["f32", "f16", "bf16"]),
    stage=st.sampled_from(["none", "zstd"]),
    x=hnp.arrays(
        st.sampled_from([np.float32, np.float16]),
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    ),
)
def test_float_round_trip_property(codec, stage, x):
    (y,) = decode(get_codec(codec, entropy=stage).encode([x]))
    if codec == "f32":
        assert y.dtype == x.dtype and y.tobytes() == x.tobytes()
    elif codec == "f16":
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(y, x.astype(np.float16).astype(np.float32))
    else:
        check_bf16_error(x, y)


def test_bf16_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    specials = np.array(
        [
            0.0,
            -0.0,
            1.0,
            -1.0,
            np.inf,
            -np.inf,
            np.nan,
            -np.nan,
            3.4028235e38,
            -3.4028235e38,
            1e-45,
            1e-40,
            1.17549435e-38,
            1.00390625,
            1.01171875,
            65504.0,
        ],
        dtype=np.float32,
    )
    halfway = (rng.integers(0, 2**16, 1000, dtype=np.uint32) << 16 | 0x8000).view(np.float32)
    values = np.concatenate(
        [
            specials,
            halfway,
            rng.standard_normal(5000).astype(np.float32)
            * np.float32(10.0) ** rng.integers(-30, 30, 5000).astype(np.float32),
        ]
    )
    values = values.reshape(1, -1)
    (y,) = decode(get_codec("bf16").encode([values]))
    ref = torch.tensor(values).bfloat16().float().numpy()
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(y), nan)
    assert y[~nan].view(np.uint32).tolist() == ref[~nan].view(np.uint32).tolist()
    (y16,) = decode(get_codec("f16").encode([values]))
    ref16 = torch.tensor(values).half().float().numpy()
    np.testing.assert_array_equal(y16, ref16)


def test_non_native_byte_order_and_views():
    x = relu((1, 4, 6, 6))
    big = x.astype(">f4")
    strided = np.asfortranarray(x)[:, ::2]
    for codec in ["f32", "q8"]:
        c = get_codec(codec)
        np.testing.assert_array_equal(decode(c.encode([big]))[0], decode(c.encode([x]))[0])
        np.testing.assert_array_equal(
            decode(c.encode([strided]))[0], decode(c.encode([np.ascontiguousarray(strided)]))[0]
        )


# ---- quantization ranges and calibration -----------------------------------------


def test_signed_range_error_and_unsigned_zero():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 8, 8), dtype=np.float32)
    payload = get_codec("q3").encode([x, np.abs(x)])
    signed, unsigned = header_ranges(payload)
    assert (signed.lo < 0).all() and (unsigned.lo == 0).all()


def test_percentile_and_mse_clip_outliers():
    rng = np.random.default_rng(6)
    x = rng.laplace(size=(1, 4, 64, 64)).astype(np.float32)
    x[0, :, 0, 0] = 30.0  # outliers
    err = {}
    for method in ["minmax", "percentile", "mse"]:
        codec = get_codec("q4", range=method, percentile=99.9)
        payload = codec.encode([x])
        (th,) = header_ranges(payload)
        err[method] = float(np.mean((decode(payload)[0] - x) ** 2))
        if method != "minmax":
            assert (th.lo + 15 * th.step < 20).all()
    assert err["percentile"] < err["minmax"] and err["mse"] < err["minmax"]
    assert err["mse"] <= 1.05 * err["percentile"]  # mse shrinks both ends by one factor


def test_calibration_fixes_ranges_and_serialises():
    batches = [
        [
            relu((1, 4, 8, 8), seed=s),
            np.random.default_rng(s).standard_normal(10).astype(np.float32),
        ]
        for s in range(3)
    ]
    codec = get_codec("q6", entropy="ans").calibrate(batches)
    config = json.loads(json.dumps(codec.config()))
    assert config["name"] == "q6" and len(config["calibration"]) == 2
    again = get_codec(**config)
    assert again == codec and type(codec).from_config(config) == codec
    frame = [batches[0][0] * 3, batches[0][1]]  # beyond the calibrated range: clipped
    p1, p2 = codec.encode(frame), again.encode(frame)
    assert p1 == p2
    (th, _) = header_ranges(p1)
    hi = np.array(config["calibration"][0]["hi"], dtype=np.float32)
    np.testing.assert_allclose(th.lo + 63 * th.step, hi, rtol=1e-6)
    y = decode(p1)[0]
    assert (y <= hi.reshape(1, -1, 1, 1) * (1 + 1e-6)).all()
    assert (th.lo == 0).all()  # calibrated on non-negative data: unsigned
    with pytest.raises(CodecError, match="calibrated for 2 tensors"):
        codec.encode([frame[0]])
    with pytest.raises(CodecError, match="range groups"):
        codec.encode([frame[0][:, :2], frame[1]])
    with pytest.raises(CodecError, match="at least one batch"):
        get_codec("q4").calibrate([])
    with pytest.raises(CodecError, match="nothing to calibrate"):
        get_codec("f16").calibrate(batches)


def test_float_codec_config_round_trip():
    codec = get_codec("bf16", entropy="none")
    assert codec.config() == {"name": "bf16", "entropy": "none", "level": 1}
    assert get_codec(**codec.config()) == codec


# ---- stats ------------------------------------------------------------------------


def test_stats():
    x = relu((1, 16, 32, 32))
    s = get_codec("q4", entropy="ans").stats([x])
    assert s.elements == x.size
    assert s.stream_bytes < s.payload_bytes
    assert 1.5 < s.entropy_bits < 3.0
    assert s.stream_bits_per_element <= 1.03 * s.entropy_bits
    assert s.compression_ratio == pytest.approx(4 * x.size / s.payload_bytes)
    assert 0 < s.mean_abs_error < s.max_abs_error
    assert get_codec("f32").stats([x]).max_abs_error == 0


@pytest.mark.parametrize("stage, bound", [("ans", 1.03), ("zstd", 1.3)])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_entropy_targets_on_relu(stage, bound, bits):
    x = relu((1, 32, 64, 100))
    s = get_codec(f"q{bits}", entropy=stage).stats([x])
    assert s.stream_bits_per_element <= bound * s.entropy_bits


# ---- bit packing ----------------------------------------------------------------


@pytest.mark.parametrize("bits", range(1, 17))
def test_pack_every_width(bits):
    rng = np.random.default_rng(bits)
    for n in [0, 1, 2, 7, 8, 9, 31, 1000]:
        s = rng.integers(0, 1 << bits, n).astype(np.uint8 if bits <= 8 else np.uint16)
        data = pack(s, bits)
        assert len(data) == packed_size(n, bits)
        np.testing.assert_array_equal(unpack(data, n, bits), s)
    if bits <= 8:  # the layout is one MSB-first bit stream
        s = rng.integers(0, 1 << bits, 13)
        stream = "".join(format(int(v), f"0{bits}b") for v in s)
        stream += "0" * (-len(stream) % 8)
        assert pack(s.astype(np.uint8), bits) == int(stream, 2).to_bytes(len(stream) // 8, "big")


# ---- golden payloads ----------------------------------------------------------------

GOLDEN = {
    "f32-none": ("f32", {"entropy": "none"}),
    "f16-none": ("f16", {"entropy": "none"}),
    "bf16-none": ("bf16", {"entropy": "none"}),
    "q4-none": ("q4", {"entropy": "none"}),
    "q3-none-tensor": ("q3", {"entropy": "none", "granularity": "tensor"}),
    "q12-none-percentile": ("q12", {"entropy": "none", "range": "percentile", "percentile": 99.0}),
    "q4-ans": ("q4", {"entropy": "ans"}),
    "q8-ans-channel": ("q8", {"entropy": "ans", "ans_model": "channel"}),
    "q4-zstd": ("q4", {"entropy": "zstd"}),
}


def golden_input() -> list[np.ndarray]:
    rng = np.random.default_rng(2024)
    return [
        np.round(np.maximum(rng.standard_normal((1, 3, 4, 5)), 0), 3).astype(np.float32),
        np.round(rng.standard_normal(7), 3).astype(np.float32),
    ]


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_golden_payload(key):
    """The format cannot drift silently: a change here needs a FORMAT_VERSION bump
    and `GENERATE_EXPECTED=1 pytest tests/test_codec.py -k golden`."""
    name, options = GOLDEN[key]
    payload = get_codec(name, **options).encode(golden_input())
    path = EXPECTED / f"{key}.bin"
    if GENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    expected = path.read_bytes()
    assert expected[4] == FORMAT_VERSION
    if options["entropy"] == "zstd":
        # zstd's exact bytes may change with the library; the header and content may not
        start = read_header(payload)[1]
        assert payload[:start] == expected[:start]
        assert [a.tobytes() for a in decode(expected)] == [a.tobytes() for a in decode(payload)]
    else:
        assert payload == expected, (
            f"payload bytes of {key} changed: {hashlib.sha256(payload).hexdigest()}"
        )


# ---- bad input ----------------------------------------------------------------------


def reseal(body: bytes) -> bytes:
    """``body`` with a valid CRC32 trailer, to reach the checks behind the checksum."""
    return body + struct.pack("<I", zlib.crc32(body))


def test_truncated_payloads_raise():
    payload = get_codec("q4", entropy="ans").encode([relu((1, 3, 4, 4)), relu((5,))])
    for n in range(len(payload)):
        with pytest.raises(CodecError):
            decode(payload[:n])
    with pytest.raises(CodecError, match="checksum"):
        decode(payload[:-1] + bytes([payload[-1] ^ 1]))
    with pytest.raises(CodecError, match="bytes-like"):
        decode("text")  # type: ignore[arg-type]


def test_magic_version_and_trailing():
    payload = get_codec("q4").encode([relu((1, 2, 3))])
    with pytest.raises(CodecError, match="not a splitnet"):
        decode(b"XXXX" + payload[4:])
    with pytest.raises(CodecError, match="version 99"):
        decode(reseal(payload[:4] + bytes([99]) + payload[5:-4]))
    none = get_codec("q4", entropy="none").encode([relu((1, 2, 3))])
    with pytest.raises(CodecError, match="body holds"):
        decode(reseal(none[:-4] + b"\0"))
    ans = get_codec("q4", entropy="ans").encode([relu((1, 2, 3))])
    with pytest.raises(CodecError, match="unexpected bytes"):
        decode(reseal(ans[:-4] + b"\0"))


def huge_header(dims: list[int], kind: int = fmt.KIND_F32, entropy: int = 1) -> bytes:
    head = fmt.PREAMBLE.pack(fmt.MAGIC, FORMAT_VERSION, kind, 0, entropy, 1, 0)
    head += fmt.RECORD.pack(0, len(dims), 0, 0) + struct.pack(f"<{len(dims)}I", *dims)
    return head


def test_huge_declared_tensor_rejected_cheaply():
    payload = reseal(huge_header([100_000, 100_000, 10]) + b"\x28\xb5\x2f\xfd" + bytes(16))
    t0 = time.perf_counter()
    with pytest.raises(CodecError, match="limit"):
        decode(payload)
    assert time.perf_counter() - t0 < 0.1
    small = get_codec("f32").encode([np.zeros((4, 4), np.float32)])
    with pytest.raises(CodecError, match="limit of 10 elements"):
        decode(small, max_elements=10)


def test_zstd_frame_cannot_expand_past_header():
    import zstandard

    dims = [4, 4]  # 64 bytes of float32 declared
    bomb = zstandard.ZstdCompressor().compress(bytes(10_000_000))
    with pytest.raises(CodecError, match="declares 10000000 bytes"):
        decode(reseal(huge_header(dims) + bomb))
    # a frame without a content size that expands too far
    stream = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(10_000_000))
    assert zstandard.frame_content_size(stream) == -1
    with pytest.raises(CodecError, match="corrupt zstd"):
        decode(reseal(huge_header(dims) + stream))
    short = zstandard.ZstdCompressor().compress(bytes(60))
    with pytest.raises(CodecError, match="declares 60"):
        decode(reseal(huge_header(dims) + short))
    with pytest.raises(CodecError):
        decode(reseal(huge_header(dims) + zstandard.ZstdCompressor().compress(bytes(64)) + b"x"))


@pytest.mark.parametrize(
    "arrays, match",
    [
        ([np.zeros(3, np.float64)], "dtype float64"),
        ([np.zeros(3, np.int32)], "dtype int32"),
        ([np.zeros(3, bool)], "dtype bool"),
        (np.zeros(3, np.float32), "sequence of arrays"),
        ([np.array([1.0, np.nan], np.float32)], "NaN"),
        ([np.array([1.0, np.inf], np.float32)], "NaN or infinite"),
        ([np.zeros((1,) * 9, np.float32)], "rank"),
    ],
)
def test_encode_rejects(arrays, match):
    with pytest.raises(CodecError, match=match):
        get_codec("q4").encode(arrays)


def test_calibrated_encode_rejects_nan():
    codec = get_codec("q4").calibrate([[np.ones((1, 2, 2), np.float32)]])
    with pytest.raises(CodecError, match="NaN"):
        codec.encode([np.full((1, 2, 2), np.nan, np.float32)])


# ---- a codec of its own: one class, registered by its kind byte ---------------------


@dataclass(frozen=True)
class RoundCodec(Codec):
    """A throwaway codec, as a new module would define it: values rounded to int8."""

    label = "round-i8"

    def encode_tensor(self, index: int, array: np.ndarray) -> TensorCode:
        sym = np.clip(np.rint(array.astype(np.float32)), -128, 127).astype(np.int8)
        return TensorCode(fmt.TensorHeader(array.dtype, array.shape), sym, sym.tobytes())

    @classmethod
    def chunk_size(cls, th: fmt.TensorHeader, p: fmt.Preamble) -> int:
        return th.size

    @classmethod
    def decode_chunk(cls, chunk: memoryview, th: fmt.TensorHeader, p: fmt.Preamble) -> np.ndarray:
        return np.frombuffer(chunk, np.int8).astype(np.float32).reshape(th.shape)


@pytest.fixture
def scratch_registries(monkeypatch):
    """Registrations made in the test are dropped after it."""
    for registry in (_base._KINDS, _base._CODECS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))


def test_builtin_kinds():
    kinds = list_kinds()
    assert {k: c.label for k, c in kinds.items()} == {
        0: "f32",
        1: "f16",
        2: "bf16",
        3: "q1..q16",
        4: "learned",
    }
    assert issubclass(kinds[fmt.KIND_QUANT], QuantCodec)
    assert all(issubclass(kinds[k], FloatCodec) for k in (0, 1, 2))
    assert get_codec("q4").quantizes and not get_codec("bf16").quantizes


def test_new_codec_registers_and_round_trips(scratch_registries):
    register_kind(200)(RoundCodec)
    register_codec("round-i8")(functools.partial(RoundCodec.create, "round-i8"))
    assert RoundCodec.kind == 200 and "round-i8" in list_codecs()
    rng = np.random.default_rng(9)
    arrays = [rng.normal(0, 50, (1, 3, 4, 5)).astype(np.float32), np.arange(7, dtype=np.float16)]
    for stage in ["none", "zstd"]:
        codec = get_codec("round-i8", entropy=stage)
        payload = codec.encode(arrays)
        assert payload[5] == 200  # the preamble's kind byte
        out = decode(payload)
        for a, o in zip(arrays, out, strict=True):
            assert o.dtype == np.float32
            np.testing.assert_array_equal(o, np.clip(np.rint(a.astype(np.float32)), -128, 127))
        assert get_codec(**codec.config()) == codec
    assert 0 < get_codec("round-i8").stats(arrays[1:]).stream_bytes
    with pytest.raises(CodecError, match="entropy='ans'"):
        get_codec("round-i8", entropy="ans")
    with pytest.raises(CodecError, match="nothing to calibrate"):
        get_codec("round-i8").calibrate([arrays])


def test_duplicate_kind_raises(scratch_registries):
    @dataclass(frozen=True)
    class Other(RoundCodec):
        pass

    register_kind(201)(Other)
    with pytest.raises(ValueError, match="already registered"):
        register_kind(201)(RoundCodec)
    with pytest.raises(ValueError, match="already registered"):
        register_kind(fmt.KIND_QUANT)(RoundCodec)
    with pytest.raises(ValueError, match="one byte"):
        register_kind(256)(RoundCodec)
    assert codec_class(201) is Other


def test_unknown_kind_names_the_valid_kinds():
    payload = get_codec("f32").encode([np.ones(3, np.float32)])
    unknown = payload[:5] + bytes([200]) + payload[6:-4]
    valid = r"valid kinds: 0 \(f32\), 1 \(f16\), 2 \(bf16\), 3 \(q1..q16\)"
    for bad in [unknown + payload[-4:], reseal(unknown)]:
        with pytest.raises(CodecError, match="unknown codec kind 200.*" + valid):
            decode(bad)


def test_import_without_torch():
    code = """
import numpy as np
import splitnet.codec as c
x = np.maximum(np.random.default_rng(0).standard_normal((1, 4, 8, 8)), 0).astype(np.float32)
for stage in ["none", "zstd", "ans"]:
    assert c.decode(c.get_codec("q4", entropy=stage).encode([x]))[0].shape == x.shape
print("ok")
"""
    out = run_without_torch(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_element_limit_on_encode(monkeypatch):
    monkeypatch.setattr(fmt, "MAX_ELEMENTS", 100)
    with pytest.raises(CodecError, match="limit of 100"):
        get_codec("q4").encode([np.zeros(101, np.float32)])
    get_codec("q4").encode([np.zeros((10, 10), np.float32)])
