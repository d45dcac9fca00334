"""Calibrated answers (issue 15): temperature scaling, ECE, the ``uncertain`` flag."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest
import torch
from _serve_helpers import RESNET, make_payload

from splitnet.bundle import BundleError, Confidence, expected_calibration_error, read_manifest
from splitnet.train._calibrate import calibrate_bundle, fit_temperature


def _overconfident(n=4000, c=5, scale=4.0, seed=0):
    """Labels drawn from softmax(z): ``z`` is calibrated, ``scale * z`` over-confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, c))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    labels = np.array([rng.choice(c, p=row) for row in p])
    return scale * z, labels


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_temperature_undoes_a_known_overconfidence_and_halves_ece():
    logits, labels = _overconfident(scale=4.0)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(4.0, rel=0.15)
    before = expected_calibration_error(_softmax(logits), labels)
    after = expected_calibration_error(_softmax(logits / t), labels)
    assert after <= before / 2


def test_ece_of_a_perfectly_calibrated_and_a_sure_wrong_model():
    labels = np.array([0, 1, 0, 1])
    sure_wrong = np.array([[0, 1], [1, 0], [0, 1], [1, 0]], dtype=float)
    assert expected_calibration_error(sure_wrong, labels) == pytest.approx(1.0)
    half = np.full((4, 2), 0.5)  # confidence 0.5, accuracy 0.5 (argmax picks class 0)
    assert expected_calibration_error(half, labels) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        expected_calibration_error(np.zeros((3,)), labels)


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"temperature": 0}, "temperature"),
        ({"temperature": "x"}, "malformed"),
        ({"cap": 1.5}, "cap"),
        ({"margin": -0.1}, "margin"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_bad_confidence_sections_are_refused(doc, message):
    with pytest.raises(BundleError, match=message):
        Confidence.from_dict(doc)


class _Frames:
    """A held-out set the bundle's model cannot know: random frames, random labels."""

    task, num_classes, spec = "classification", 10, "random"

    def __init__(self, n=48, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 3, 32, 32, generator=g)
        self.y = torch.randint(0, 10, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@pytest.fixture
def calibrated(repository, tmp_path):
    bundle = tmp_path / "resnet"
    shutil.copytree(repository / "resnet", bundle)
    result = calibrate_bundle(bundle, _Frames(), cap=0.5, margin=0.05, top_k=3, progress=False)
    return bundle, result


def test_calibrate_bundle_writes_the_manifest_and_keeps_the_checksums(calibrated):
    bundle, result = calibrated
    m = read_manifest(bundle)  # checksums still verify
    conf = Confidence.from_dict(m.confidence)
    assert conf.temperature == pytest.approx(result.confidence.temperature)
    assert (conf.cap, conf.margin, conf.top_k) == (0.5, 0.05, 3)
    r = conf.report
    assert r["frames"] == 48 and r["nll_after"] <= r["nll_before"] + 1e-9
    assert json.loads((bundle / "manifest.json").read_text())["confidence"]["report"]["bins"] == 15


def _answer(model, parameters=None):
    from splitnet.server._core import InferenceCore
    from splitnet.wire import make_infer_request, output_arrays

    async def main():
        core = InferenceCore({model.name: model})
        try:
            request = make_infer_request(
                model.name, make_payload({model.name: model}, model.name), parameters=parameters
            )
            return output_arrays(await core.infer(request))
        finally:
            await core.close()

    return asyncio.run(main())


def test_the_server_answers_calibrated_top_k_and_the_uncertain_flag(calibrated, models):
    from splitnet.server import TailModel

    bundle, result = calibrated
    model = TailModel(bundle)
    t = result.confidence.temperature
    plain = _answer(models[RESNET], {"top_k": 10})
    out = _answer(model)
    assert out["classes"].shape == (3,)  # the bundle's top_k
    assert (out["classes"] == plain["classes"][:3]).all()  # temperature keeps the order
    logits = np.log(plain["probabilities"].astype(np.float64))  # softmax is shift-free
    expect = _softmax(logits[None] / t)[0][:3]
    np.testing.assert_allclose(out["probabilities"], expect, rtol=1e-3, atol=1e-5)
    top = out["probabilities"]
    flag = top[0] < 0.5 or top[0] - top[1] < 0.05
    assert out["uncertain"].tolist() == [flag]
    # per-request overrides, numbers or decimal strings (KServe's proto has no double)
    assert _answer(model, {"min_confidence": 1.0})["uncertain"].tolist() == [True]
    assert _answer(model, {"min_confidence": "0", "min_margin": 0.0})["uncertain"].tolist() == [
        False
    ]


@pytest.mark.parametrize("value", [1.5, -0.1, "abc", True])
def test_bad_confidence_parameters_are_invalid_argument(models, value):
    import grpc

    from splitnet.server._core import InferError

    with pytest.raises(InferError) as e:
        _answer(models[RESNET], {"min_confidence": value})
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "min_confidence" in e.value.message


def test_calibrate_cli_refuses_a_segmentation_bundle_in_one_line(repository, capsys):
    from splitnet.cli.main import main

    code = main(["calibrate", str(repository / "unet"), "--data", "synthetic:n=4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "only classifiers calibrate" in err[0]


def test_the_daemon_writes_the_uncertain_flag_of_a_calibrated_bundle(calibrated, tmp_path):
    from _serve_helpers import run_with_server

    from splitnet.device import DaemonConfig, DeviceDaemon
    from splitnet.server import load_repository

    bundle, _ = calibrated  # cap 0.5 on a model that cannot know random labels
    repo = bundle.parent
    out = tmp_path / "out"

    async def body(server, port):
        cfg = DaemonConfig(bundle=bundle, servers=(f"127.0.0.1:{port}",), frames=3, out=out)
        return await DeviceDaemon(cfg).run()

    summary = run_with_server(repo, load_repository(repo), body)
    assert summary.ok == 3
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("0*.json"))]
    assert len(docs) == 3 and all(d["uncertain"] is True for d in docs)
    assert all(len(d["classes"]) == 3 for d in docs)
