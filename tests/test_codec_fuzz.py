"""Fuzzing decode: random and mutated payloads raise CodecError or decode, nothing else.

Mutated payloads are tried twice: as they are (the checksum catches them) and
resealed with a valid checksum, so that the parser behind it is exercised. The
``learned`` codec's payloads decode only with its instance (which holds the
tables), so theirs are fuzzed through ``LEARNED.decode`` as well.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitnet.codec import CodecError, decode, get_codec

LIMIT = 1 << 22  # elements: keeps a hostile-but-valid payload's decode cheap in tests


def seeds() -> list[bytes]:
    rng = np.random.default_rng(7)
    x = np.maximum(rng.standard_normal((1, 4, 6, 5), dtype=np.float32), 0)
    y = rng.standard_normal((3, 2), dtype=np.float32)
    out = []
    for name, stage, extra in [
        ("f32", "none", {}),
        ("f16", "zstd", {}),
        ("bf16", "none", {}),
        ("q4", "none", {}),
        ("q3", "zstd", {"granularity": "tensor"}),
        ("q4", "ans", {}),
        ("q8", "ans", {"ans_model": "channel"}),
        ("q12", "ans", {}),
        ("q11", "none", {}),
    ]:
        out.append(get_codec(name, entropy=stage, **extra).encode([x, y]))
    return out


SEEDS = seeds()

LEARNED = get_codec(
    "learned",
    tables={
        "precision": 12,
        "medians": [0.25, -1.0, 3.5],
        "offset": [-2, 0, -1],
        "pmf": [[96, 1000, 2000, 900, 100], [4096], [1024, 2048, 1024]],
    },
)


def learned_seeds() -> list[bytes]:
    rng = np.random.default_rng(8)
    out = []
    for shape in [(1, 3, 6, 5), (2, 3, 4), (1, 3, 0, 2)]:
        y = rng.laplace(size=shape).astype(np.float32) * 2
        out.append(LEARNED.encode([y]))
    return out


LEARNED_SEEDS = learned_seeds()


def reseal(payload: bytes) -> bytes:
    body = payload[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def mutate(rng: np.random.Generator, payload: bytes) -> bytes:
    b = bytearray(payload)
    op = rng.integers(6)
    if op == 0 and b:  # flip bits
        for _ in range(rng.integers(1, 4)):
            i = rng.integers(len(b))
            b[i] ^= 1 << rng.integers(8)
    elif op == 1 and b:  # random bytes at a random place
        i = rng.integers(len(b))
        n = rng.integers(1, 9)
        b[i : i + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    elif op == 2:  # truncate
        del b[rng.integers(len(b) + 1) :]
    elif op == 3:  # insert
        i = rng.integers(len(b) + 1)
        b[i:i] = rng.integers(0, 256, rng.integers(1, 16), dtype=np.uint8).tobytes()
    elif op == 4 and len(b) > 16:  # large values in the header (sizes, counts)
        i = rng.integers(4, min(len(b), 64))
        b[i : i + 4] = struct.pack("<I", int(rng.choice([0, 1, 255, 65535, 2**31, 2**32 - 1])))
    else:  # delete a range
        i = rng.integers(len(b) + 1)
        del b[i : i + rng.integers(1, 16)]
    return bytes(b)


def check(payload: bytes, decoder: Callable[..., list[np.ndarray]] = decode) -> None:
    t0 = time.perf_counter()
    try:
        out = decoder(payload, max_elements=LIMIT)
    except CodecError as e:
        assert str(e)
    else:
        assert isinstance(out, list) and all(isinstance(a, np.ndarray) for a in out)
    assert time.perf_counter() - t0 < 5.0


def run_fuzz(
    cases: int,
    seed: int,
    seeds: list[bytes] = SEEDS,
    decoder: Callable[..., list[np.ndarray]] = decode,
) -> None:
    rng = np.random.default_rng(seed)
    for i in range(cases):
        if i % 10 == 0:
            check(rng.integers(0, 256, rng.integers(0, 200), dtype=np.uint8).tobytes(), decoder)
            check(
                b"SNTC\x01" + rng.integers(0, 256, rng.integers(0, 100), dtype=np.uint8).tobytes(),
                decoder,
            )
            continue
        payload = seeds[rng.integers(len(seeds))]
        for _ in range(rng.integers(1, 4)):
            payload = mutate(rng, payload)
        check(payload, decoder)
        if len(payload) >= 4:
            check(reseal(payload), decoder)


def test_seeds_decode():
    for payload in SEEDS:
        assert len(decode(payload)) == 2


def test_fuzz_decode():
    run_fuzz(400, seed=0)


def test_learned_seeds_decode_with_their_codec_only():
    for payload in LEARNED_SEEDS:
        assert len(LEARNED.decode(payload)) == 1
        with pytest.raises(CodecError, match="bundle's codec"):
            decode(payload)


def test_fuzz_decode_learned():
    run_fuzz(400, seed=2, seeds=LEARNED_SEEDS, decoder=LEARNED.decode)
    run_fuzz(100, seed=3, seeds=LEARNED_SEEDS)


@pytest.mark.slow
def test_fuzz_decode_long():
    run_fuzz(10_000, seed=1)
    run_fuzz(5_000, seed=4, seeds=LEARNED_SEEDS, decoder=LEARNED.decode)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decode_hypothesis(data):
    check(data)
    check(b"SNTC\x01" + data)
    if len(data) >= 4:
        check(reseal(b"SNTC\x01" + data))
        check(reseal(b"SNTC\x01\x04\x00\x02" + data), LEARNED.decode)


def _payload(kind: int, bits: int, entropy: int, shape: tuple[int, ...], section: bytes) -> bytes:
    """A sealed one-tensor payload with a hand-written header (float32 record, one range)."""
    body = struct.pack("<4sBBBBHH", b"SNTC", 1, kind, bits, entropy, 1, 0)
    body += struct.pack(f"<BBBB{len(shape)}I", 0, len(shape), 0, 0, *shape)
    if kind == 3:
        body += struct.pack("<ff", 0.0, 1.0)
    body += section
    return reseal(body + b"\0\0\0\0")


@pytest.mark.parametrize(
    "kind, bits, entropy, section",
    [(0, 0, 0, b""), (1, 0, 0, b""), (3, 4, 0, b""), (3, 4, 2, b"\0\0\0\0\0")],
    ids=["f32", "f16", "q4", "q4-ans"],
)
@pytest.mark.parametrize("shape", [(0, 2**32 - 1, 2**32 - 1), (2**32 - 1, 0, 2**32 - 1, 7)])
def test_empty_tensor_with_overflowing_dimensions_is_a_codec_error(
    kind, bits, entropy, section, shape
):
    # issue 13, item 11: numpy's "array is too big" ValueError escaped decode
    with pytest.raises(CodecError, match="too large"):
        decode(_payload(kind, bits, entropy, shape, section))


def test_ans_header_cannot_declare_more_models_than_its_bytes_hold():
    # issue 13, item 5: 638,976 per-channel models in a 4.5 MB payload cost seconds; each
    # model takes at least 7 bytes, so the count is refused before any model is built
    channels = 100_000
    section = b"\x01" + b"\0" * 64  # mode 1 (one model per channel), then far too few bytes
    with pytest.raises(CodecError, match=f"declares {channels} models"):
        decode(_payload(3, 4, 2, (1, channels, 1), section))


def test_decode_checks_the_expected_shapes_from_the_header():
    x = np.ones((1, 4, 3, 2), dtype=np.float32)
    payload = get_codec("q4", entropy="ans", ans_model="channel").encode([x])
    assert decode(payload, shapes=[(1, 4, 3, 2)])[0].shape == (1, 4, 3, 2)
    with pytest.raises(CodecError, match="expected"):
        decode(payload, shapes=[(1, 4, 6)])
    with pytest.raises(CodecError, match="expected 2"):
        decode(payload, shapes=[(1, 4, 3, 2), (1,)])
    assert LEARNED.decode(LEARNED_SEEDS[0], shapes=[(1, 3, 6, 5)])[0].shape == (1, 3, 6, 5)
    with pytest.raises(CodecError, match="expected"):
        LEARNED.decode(LEARNED_SEEDS[0], shapes=[(1, 3, 5, 6)])
