"""The factorized prior and the torch-free ``learned`` codec that codes with its tables.

A prior is trained for a few hundred steps on synthetic Laplacian latents (one
scale and mean per channel); the acceptance test is that the real payload size
matches the prior's estimate ``bits(y) / 8`` within 2% plus the header bytes.
"""

from __future__ import annotations

import copy
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from _no_torch import run_without_torch

from splitnet._errors import SplitnetError
from splitnet.bottleneck import FactorizedPrior
from splitnet.codec import CodecError, LearnedCodec, decode, get_codec
from splitnet.codec._learned import tables_fingerprint

C = 16
SCALES = np.linspace(0.3, 4.0, C).astype(np.float32)
MEANS = np.linspace(-2.0, 3.0, C).astype(np.float32)
HEADER_BYTES = 12 + 4 + 4 * 4 + 8 + 4  # preamble, record, rank-4 shape, section head, crc


def latents(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Laplacian latents ``N x C x ...`` with per-channel scales and means."""
    b = (1, C) + (1,) * (len(shape) - 2)
    return (MEANS.reshape(b) + SCALES.reshape(b) * rng.laplace(size=shape)).astype(np.float32)


@pytest.fixture(scope="module")
def prior() -> FactorizedPrior:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only add overhead on a shared machine
    try:
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        model = FactorizedPrior(C)
        main = [p for n, p in model.named_parameters() if n != "quantiles"]
        opt = torch.optim.Adam(main, lr=1e-2)
        aux = torch.optim.Adam([model.quantiles], lr=0.5)  # quantiles travel ~80 units
        for step in range(400):
            if step == 300:  # settle the quantiles
                aux.param_groups[0]["lr"] = 0.05
            y = torch.from_numpy(latents(rng, (8, C, 8, 8)))
            _, lik = model(y)
            loss = -torch.log2(lik).sum() / y.numel()
            opt.zero_grad()
            loss.backward()
            opt.step()
            aux_loss = model.aux_loss()
            aux.zero_grad()
            aux_loss.backward()
            aux.step()
        return model.eval()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tables(prior) -> dict:
    return prior.cdf_tables()


@pytest.fixture(scope="module")
def codec(tables) -> LearnedCodec:
    return get_codec("learned", tables=tables)


@pytest.fixture(scope="module")
def y() -> np.ndarray:
    return latents(np.random.default_rng(1), (1, C, 32, 200))


# ---- the prior ------------------------------------------------------------------


def test_prior_forward_modes(prior):
    y = torch.from_numpy(latents(np.random.default_rng(2), (2, C, 4, 4)))
    y_hat, lik = prior(y)  # eval mode: rounding around the medians
    m = prior.medians.reshape(1, -1, 1, 1)
    assert torch.equal(y_hat, torch.round(y - m) + m)
    assert lik.shape == y.shape and (lik >= 1e-9).all() and (lik <= 1).all()
    prior.train()
    try:
        noisy, _ = prior(y)
        assert (noisy - y).abs().max() <= 0.5 and not torch.equal(noisy, y_hat)
    finally:
        prior.eval()
    assert torch.isclose(prior.bits(y), -torch.log2(lik).sum())
    with pytest.raises(SplitnetError, match="N x 16"):
        prior(torch.zeros(1, 3, 2, 2))


def test_quantiles_learn_the_tails(prior):
    q = prior.quantiles.detach()[:, 0].numpy()
    assert (np.abs(q[:, 1] - MEANS) <= 0.05 + 0.1 * SCALES).all()  # a Laplacian's median: its mean
    # the model's CDF reaches the 1e-9 / 2 tail masses at the outer quantiles ...
    logits = prior._logits_cumulative(prior.quantiles, stop_gradient=True).detach()[:, 0]
    assert (logits - prior.target).abs().max() < 2.0  # within a factor e**2 of the tail mass
    # ... which lie beyond the data: a Laplacian puts 1.5e-7 of its mass past 15 scales
    assert (q[:, 2] - q[:, 1] >= 15 * SCALES).all() and (q[:, 1] - q[:, 0] >= 15 * SCALES).all()


def test_cdf_tables_are_integer_and_normalised(tables):
    assert json.loads(json.dumps(tables)) == tables
    assert tables["precision"] == 16 and len(tables["medians"]) == C
    for pmf, off in zip(tables["pmf"], tables["offset"], strict=True):
        assert all(isinstance(f, int) and f >= 1 for f in pmf) and sum(pmf) == 1 << 16
        assert off <= 0 <= off + len(pmf) - 1  # the median's own symbol is in range
    with pytest.raises(SplitnetError, match="precision"):
        FactorizedPrior(2).cdf_tables(precision=17)
    with pytest.raises(SplitnetError, match="more than 2\\*\\*4"):
        FactorizedPrior(2).cdf_tables(precision=4)  # the initial range (21 symbols) is too wide


# ---- the codec ------------------------------------------------------------------


def test_real_size_matches_the_estimate(prior, codec, y):
    """The acceptance test: payload bytes == bits(y) / 8 within 2%, plus the header."""
    payload = codec.encode([y])
    estimate = float(prior.bits(torch.from_numpy(y))) / 8
    stats = codec.stats([y])
    assert stats.payload_bytes == len(payload)
    assert stats.payload_bytes - stats.stream_bytes == HEADER_BYTES
    assert abs(len(payload) - HEADER_BYTES - estimate) <= 0.02 * estimate, (len(payload), estimate)


def test_round_trip_matches_the_prior_exactly(prior, codec, y):
    out = codec.decode(codec.encode([y]))
    assert len(out) == 1 and out[0].dtype == np.float32 and out[0].shape == y.shape
    expected = prior.quantize(torch.from_numpy(y)).numpy()
    _, clamped = codec.symbols(y)
    differs = out[0] != expected
    assert int(differs.sum()) == clamped == codec.count_clamped(y)
    assert clamped <= 1e-4 * y.size  # tails of 1e-9 mass: clamping is rare


def test_clamped_values_land_on_the_range_edge(codec, tables):
    y = (
        np.zeros((1, C, 1, 3), np.float32)
        + np.asarray(tables["medians"], np.float32)[None, :, None, None]
    )
    y[0, :, 0, 0] -= 1e4
    y[0, :, 0, 2] = np.inf
    assert codec.count_clamped(y) == 2 * C
    out = codec.decode(codec.encode([y]))[0]
    med = np.asarray(tables["medians"], np.float32)
    lo = np.asarray(tables["offset"]) + med
    hi = np.asarray(tables["offset"]) + np.asarray([len(p) - 1 for p in tables["pmf"]]) + med
    np.testing.assert_array_equal(out[0, :, 0, 0], lo.astype(np.float32))
    np.testing.assert_array_equal(out[0, :, 0, 1], med)
    np.testing.assert_array_equal(out[0, :, 0, 2], hi.astype(np.float32))
    with pytest.raises(CodecError, match="NaN"):
        codec.encode([np.full((1, C, 1, 1), np.nan, np.float32)])


def test_shapes_and_batches(codec):
    rng = np.random.default_rng(3)
    for shape in [(2, C, 3, 5), (1, C), (3, C, 0, 4), (0, C, 2, 2), (1, C, 2, 2, 2)]:
        y = latents(rng, shape)
        out = codec.decode(codec.encode([y]))[0]
        assert out.shape == shape
        assert codec.count_clamped(y) or np.array_equal(out, _rounded(codec, y))
    y16 = latents(rng, (1, C, 2, 2)).astype(np.float16)
    assert codec.decode(codec.encode([y16]))[0].dtype == np.float32
    for bad in [[], [latents(rng, (1, C, 2, 2))] * 2, [np.zeros((1, 3, 2, 2), np.float32)]]:
        with pytest.raises(CodecError, match="one latent|16 channels"):
            codec.encode(bad)
    with pytest.raises(CodecError, match="16 channels"):
        codec.encode([np.zeros(C, np.float32)])


def _rounded(codec: LearnedCodec, y: np.ndarray) -> np.ndarray:
    m = np.asarray(codec.tables["medians"], np.float32).reshape((1, -1) + (1,) * (y.ndim - 2))
    return np.rint(y - m) + m


def test_wrong_tables_and_module_level_decode(codec, tables, y):
    payload = codec.encode([y[:, :, :4, :4]])
    other = copy.deepcopy(tables)
    other["medians"][0] += 0.25
    with pytest.raises(CodecError, match=f"{codec.fingerprint:#010x}"):
        get_codec("learned", tables=other).decode(payload)
    hint = r"bundle's codec.*get_codec\(\"learned\", tables=\.\.\.\)\.decode\(payload\)"
    with pytest.raises(CodecError, match=hint + ".*Manifest.make_codec"):
        decode(payload)
    with pytest.raises(CodecError, match="bundle's codec"):
        get_codec("q4").decode(payload)  # a stateless codec instance has no tables either
    q4 = get_codec("q4").encode([y])  # and a learned codec instance still decodes other kinds
    np.testing.assert_array_equal(codec.decode(q4)[0], decode(q4)[0])


def test_config_round_trip(codec, tables):
    config = codec.config()
    assert config == {"name": "learned", "tables": tables}
    rebuilt = get_codec(**json.loads(json.dumps(config)))
    assert rebuilt == codec and rebuilt.fingerprint == codec.fingerprint
    assert codec.fingerprint == tables_fingerprint(tables)
    assert not codec.quantizes and codec.channels == C
    assert hash(rebuilt) == hash(codec)


def _tables(**changes) -> dict:
    t = {"precision": 4, "medians": [0.5, -1.0], "offset": [-1, 0], "pmf": [[4, 8, 4], [16]]}
    return {**t, **changes}


@pytest.mark.parametrize(
    "tables, match",
    [
        ([1, 2], "exactly the keys"),
        ({**_tables(), "extra": 1}, "exactly the keys"),
        (_tables(precision=0), "precision"),
        (_tables(precision=True), "precision"),
        (_tables(precision=17), "precision"),
        (_tables(medians=[0.5]), "one entry per channel"),
        (_tables(medians=[]), "one entry per channel"),
        (_tables(medians=[0.5, float("nan")]), "medians"),
        (_tables(medians=[0.5, 1e39]), "finite float32"),
        (_tables(medians="ab"), "medians must be a list"),
        (_tables(offset=[-1, 0.5]), "offset must hold ints"),
        (_tables(offset=[-1, 2**31]), "past 32 bits"),
        (_tables(pmf=[[4, 8, 4]]), "one entry per channel"),
        (_tables(pmf=[[4, 8, 4], [15]]), "summing to 2\\*\\*precision"),
        (_tables(pmf=[[4, 12, 0], [16]]), "positive integers"),
        (_tables(pmf=[[4, 8, 4], []]), "positive integers"),
        (_tables(pmf=[[4, 8, 4], [16.0]]), "ints"),
        (_tables(pmf=[[4, 8, 4], 16]), "must be a list"),
    ],
)
def test_malformed_tables(tables, match):
    with pytest.raises(CodecError, match=match):
        get_codec("learned", tables=tables)


def test_options_are_refused():
    with pytest.raises(CodecError, match="needs tables"):
        get_codec("learned")
    with pytest.raises(CodecError, match="no option 'entropy'"):
        get_codec("learned", tables=_tables(), entropy="zstd")
    with pytest.raises(CodecError, match="calibration"):
        get_codec("learned", tables=_tables(), calibration=[])
    codec = get_codec("learned", tables=_tables())
    with pytest.raises(CodecError, match="nothing to calibrate"):
        codec.calibrate([])


def test_torch_free_encode_decode(prior, codec, tables, tmp_path):
    y = latents(np.random.default_rng(4), (1, C, 8, 20))
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "expected.npy", prior.quantize(torch.from_numpy(y)).numpy())
    (tmp_path / "tables.json").write_text(json.dumps(codec.config()))
    (tmp_path / "payload.bin").write_bytes(codec.encode([y]))
    code = """
import json, sys
from pathlib import Path
import numpy as np
from splitnet.codec import get_codec
d = Path(sys.argv[1])
codec = get_codec(**json.loads((d / "tables.json").read_text()))
y = np.load(d / "y.npy")
payload = codec.encode([y])
assert payload == (d / "payload.bin").read_bytes()  # the same bytes as the torch side's codec
out = codec.decode(payload)[0]
assert codec.count_clamped(y) == 0
assert np.array_equal(out, np.load(d / "expected.npy"))  # == the prior's eval-mode output
print("ok")
"""
    res = run_without_torch(code, args=(str(tmp_path),))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_hostile_shape_and_stream(codec, y):
    payload = codec.encode([y[:, :, :2, :2]])
    # the tensor record's shape (after the 12-byte preamble and 4-byte record head)
    huge = payload[:16] + struct.pack("<4I", 1, C, 1 << 20, 1 << 20) + payload[32:-4]
    with pytest.raises(CodecError, match="limit"):
        codec.decode(huge + struct.pack("<I", zlib.crc32(huge)))
    words = bytearray(payload[:-4])
    words[HEADER_BYTES - 4 :] = bytes(len(words) - HEADER_BYTES + 4)  # zero the rANS words
    with pytest.raises(CodecError, match="corrupt ans stream"):
        codec.decode(bytes(words) + struct.pack("<I", zlib.crc32(words)))
