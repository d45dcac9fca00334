"""The two committed experiments of issue 15: calibration of a parts classifier
(experiments/calibrate_parts.py) and the SVM tail study (experiments/svm_tail.py).

Each script runs end to end on a tiny config, and the committed results agree with
themselves (the table, the JSON and the target's verdict)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_config(tmp_path: Path, name: str, **changes) -> Path:
    cfg = yaml.safe_load((EXPERIMENTS / "configs" / f"{name}.yaml").read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            cfg[section][field] = value
        else:
            cfg[section] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---- calibrate_parts ------------------------------------------------------------------------


@pytest.mark.export
def test_calibrate_parts_runs_end_to_end(tmp_path):
    config = _tiny_config(
        tmp_path,
        "calibrate_parts",
        input=[3, 32, 32],
        train__data="parts:n=48,size=32,seed=0,val=0.25",
        train__epochs=1,
        heldout="parts:n=40,size=32,seed=1,val=0.5",
    )
    out = tmp_path / "out"
    assert _script("calibrate_parts").main([str(config), "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["train_images"] == 36 and res["calibration"]["images"] == 20
    assert res["test"]["images"] == 20 and res["temperature"] > 0
    # a temperature never changes the predicted class
    assert res["test"]["before"]["top1"] == res["test"]["after"]["top1"]
    # it is fitted on the calibration split: there the NLL cannot get worse
    assert res["calibration"]["after"]["nll"] <= res["calibration"]["before"]["nll"] + 1e-9
    assert (out / "reliability.png").stat().st_size > 0
    assert "Target" in (out / "table.md").read_text()


def test_committed_calibration_results_agree():
    out = EXPERIMENTS / "results" / "calibrate_parts"
    res = json.loads((out / "results.json").read_text())
    before, after = res["test"]["before"]["ece"], res["test"]["after"]["ece"]
    target = res["target"]
    assert target["ratio"] == pytest.approx(after / before)
    assert target["met"] == (after <= target["max_ece_ratio"] * before)
    assert res["test"]["before"]["top1"] == res["test"]["after"]["top1"]
    table = (out / "table.md").read_text()
    assert f"{before:.4f}" in table and f"{after:.4f}" in table
    assert ("**met**" if target["met"] else "**not met**") in table
    # the calibration and test splits are the two halves of one held-out set
    assert res["calibration"]["images"] + res["test"]["images"] == 2000


# ---- svm_tail -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.export
def test_svm_tail_runs_end_to_end(tmp_path):
    config = _tiny_config(
        tmp_path,
        "svm_tail",
        input=[3, 32, 32],
        data="parts:n=36,size=32,seed=0",
        splits=2,
        svm__cv=2,
        tail__epochs=1,
        pretrain__data="parts:n=24,size=32,seed=1,val=0.25",
        pretrain__epochs=1,
    )
    cfg = yaml.safe_load(config.read_text())
    cfg["backbones"] = cfg["backbones"][1:]  # the two mobilenet-v2 backbones: no vgg16 export
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert _script("svm_tail").main([str(config), "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    # per backbone: 2 kernels x 2 pools of SVM, and the tail
    assert len(res["rows"]) == 2 * (2 * 2 + 1)
    for row in res["rows"]:
        assert len(row["accuracy"]) == 2 and all(0 <= a <= 1 for a in row["accuracy"])
    pooled = {r["features"] for r in res["rows"] if r["method"] != "fine-tuned tail"}
    assert pooled == {32}  # avg/max pooling of features.0.2's 32 channels
    assert (out / "svm_tail.png").stat().st_size > 0


def test_committed_svm_tail_results_agree():
    import numpy as np

    out = EXPERIMENTS / "results" / "svm_tail"
    res = json.loads((out / "results.json").read_text())
    table = (out / "table.md").read_text()
    assert res["splits"] == 10 and res["test_fraction"] == 0.3  # seed 001's protocol
    methods = {r["method"] for r in res["rows"]}
    assert {"linear SVM", "rbf SVM", "fine-tuned tail"} <= methods
    for r in res["rows"]:
        acc = np.asarray(r["accuracy"])
        assert len(acc) == res["splits"]
        assert r["mean"] == pytest.approx(acc.mean()) and r["std"] == pytest.approx(acc.std(ddof=1))
        assert f"{100 * r['mean']:.1f} +- {100 * r['std']:.1f}" in table


def test_the_tail_trains_on_batch_statistics():
    """svm_tail's training graph: the exported tail's eval-mode batch norms run on the
    batch (normalised output, running statistics updated), sharing the tail's buffers."""
    import torch
    from torch import nn

    from splitnet.split import trace

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, affine=False))
    net.eval()
    _, tail = trace(net, torch.zeros(1, 3, 8, 8)).split(0)
    train_gm = _script("svm_tail").training_graph(tail)
    (mean,) = [b for n, b in tail.named_buffers() if n.endswith("running_mean")]
    assert torch.equal(mean, torch.zeros(4))
    x = torch.randn(6, 4, 6, 6) * 5 + 3
    out = train_gm(x)
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-4  # normalised by the batch's statistics
    assert out.var(dim=(0, 2, 3)).sub(1).abs().max() < 0.05
    assert mean.abs().max() > 0  # the running mean moved, in the tail's own buffer
    (var,) = [b for n, b in tail.named_buffers() if n.endswith("running_var")]
    with torch.no_grad():  # the eval-mode tail now scores with the updated statistics
        expected = (net[1](x) - mean[:, None, None]) / (var[:, None, None] + 1e-5).sqrt()
        assert torch.allclose(tail(x), expected, atol=1e-5)
