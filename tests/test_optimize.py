"""Head variants (issue 14): fp32 / fp16 / int8-weights / int8 bundles from one model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from splitnet.bundle import read_manifest
from splitnet.device import HeadRunner
from splitnet.export import compare_outputs, export_bundle, list_variants
from splitnet.export._optimize import optimize


class _Net(nn.Module):
    """Small, but with enough weights that their storage decides the file size."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 6))

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("variants")
    results = optimize(
        _Net().eval(),
        input_shape=(3, 32, 32),
        split="block.2",
        out_dir=out,
        variants=["fp32", "fp16", "int8-weights", "int8"],
        data="parts:n=40,size=32",
        frames=16,
        progress=False,
        num_classes=6,
    )
    return {r.manifest.head["variant"]["name"]: r for r in results}


def test_every_variant_is_a_parity_checked_bundle_of_its_own_name(variants):
    assert list(variants) == ["fp32", "fp16", "int8-weights", "int8"]
    assert sorted(variants) == [v for v in list_variants() if v != "int8-acc"]
    names = {r.manifest.name for r in variants.values()}
    assert names == {f"_Net.block.2-{v}" for v in variants}, names
    for v, r in variants.items():
        m = read_manifest(r.bundle_dir)  # the checksums verify after the rename
        assert m.head["variant"]["name"] == v and r.parity.ok
        tensors = HeadRunner(r.bundle_dir)(np.zeros((32, 32, 3), np.uint8))
        assert [t.shape for t in tensors] == [tuple(t.shape) for t in m.crossing]
    precision = {v: r.manifest.head["precision"] for v, r in variants.items()}
    assert precision == {
        "fp32": "FP32",
        "fp16": "FP16",
        "int8-weights": "INT8-weights",
        "int8": "INT8",
    }
    calib = variants["int8"].manifest.head["variant"]["calibration"]
    assert calib == {"data": "parts:n=40,size=32", "frames": 16}
    assert variants["int8"].parity.metric == "rel_rmse" and variants["int8"].parity.frames == 8
    assert variants["fp16"].parity.metric == "max_rel"


def test_weights_shrink_with_the_variant(variants):
    size = {v: (r.bundle_dir / "head.bin").stat().st_size for v, r in variants.items()}
    assert size["fp32"] > 1.8 * size["fp16"] > 1.8 * 0.5 * size["fp32"]
    assert size["int8-weights"] < 0.65 * size["fp16"] and size["int8"] < 0.65 * size["fp16"]


def test_int8_runs_int8_convolutions(variants):
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(variants["int8"].bundle_dir / "head.xml"), "CPU")
    precisions = {
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ordered_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"
    }
    assert precisions and precisions <= {"u8", "i8"}, precisions


def test_relative_rms_error_is_noise_over_signal():
    ref = [[np.array([3.0, -4.0])]]  # rms 3.5355
    got = [[np.array([3.0, -3.0])]]  # error rms 0.7071
    r = compare_outputs(["t"], got, ref, tolerance=0.25, metric="rel_rmse")
    assert r.rel_rmse == pytest.approx(0.2) and r.max_rel == pytest.approx(0.25) and r.ok
    assert not compare_outputs(["t"], got, ref, tolerance=0.19, metric="rel_rmse").ok


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--variants", "int4"],
            "unknown head variant 'int4'.*Valid: fp16, fp32, int8, int8-acc, int8-weights",
        ),
        (
            ["--variants", "int8-acc", "--data", "parts:n=8,size=32,subset=train"],
            "names a subset: give int8-acc's held-out frames",
        ),
        (
            ["--variants", "int8-acc", "--data", "parts:n=8,size=32", "--max-drop", "0"],
            "--max-drop must be in",
        ),
        (["--variants", "int8", "--target", "myriad"], "MYRIAD plugin runs FP16 only"),
        (["--variants", "int8"], "needs calibration frames: give --data"),
        (["--variants", "fp16,fp16"], "repeats a variant"),
        (
            ["--variants", "int8", "--data", "parts:n=8,size=32", "--frames", "0"],
            "--frames must be >= 1",
        ),
        # the smaller networks (tests/test_shrink.py)
        (["--variants", "prune:0.5"], "retrain on --data SPEC"),
        (["--variants", "prune:-1", "--data", "parts:n=8,size=32"], "ratio must be in"),
        (["--variants", "distill:0.5", "--data", "parts:n=8,size=32"], "resnet18 has no width"),
        (["--variants", "prune:0.5", "--finetune-steps", "-1"], "fine-tune steps must be >= 0"),
    ],
)
def test_bad_optimize_input_is_one_line_exit_2(tmp_path, capsys, extra, message):
    import re

    from splitnet.cli.main import main

    args = ["optimize", "resnet18", "--input", "3x32x32", "--split", "layer2.0.add"]
    assert main([*args, "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("splitnet optimize: error:"), err
    assert re.search(message, err), err
    assert not (tmp_path / "o").exists()  # refused before any export


def test_export_refuses_int8_for_the_myriad_target(tmp_path):
    from splitnet._errors import ConfigError

    with pytest.raises(ConfigError, match="MYRIAD plugin runs FP16 only"):
        export_bundle(
            _Net().eval(),
            input_shape=(3, 32, 32),
            split="block.2",
            out_dir=tmp_path / "b",
            target="myriad",
            variant="int8-weights",
        )


def test_variants_report_scores_times_and_marks_absent_devices(variants, tmp_path):
    from splitnet.profile._variants import plot_variants, report_variants

    dirs = [variants[v].bundle_dir for v in ("fp32", "int8")]
    report = report_variants(
        dirs,
        data="parts:n=40,size=32",
        frames=6,
        devices=["CPU", "NOSUCHDEVICE"],
        threads=[1],
        seconds=0.2,
        progress=False,
    )
    assert report.devices == {"CPU": True, "NOSUCHDEVICE": False} and report.frames == 6
    fp32, int8 = report.rows
    assert (fp32.variant, int8.variant) == ("fp32", "int8") and fp32.size_mib > int8.size_mib
    assert (
        fp32.parameters
        == int8.parameters
        == sum(p.numel() for p in _Net().stem.parameters())
        + sum(p.numel() for p in _Net().block.parameters())
    )
    assert 0 <= fp32.accuracy["top1"] <= fp32.accuracy["top5"] <= 1
    assert fp32.speed["CPU/1"]["fps"] > 0 and fp32.speed["NOSUCHDEVICE/1"] == {"absent": True}
    table = report.table()
    assert "| fp32 | FP32 |" in table and table.count("absent") == 2
    plot_variants(report, tmp_path / "v.png")
    assert (tmp_path / "v.png").stat().st_size > 5000


def test_variants_report_refuses_bundles_of_different_models(variants, repository, capsys):
    from splitnet.cli.main import main

    code = main(["variants", str(variants["fp16"].bundle_dir), str(repository / "unet")])
    assert code == 2 and "compare variants of one model" in capsys.readouterr().err


@pytest.mark.slow
def test_the_variants_experiment_runs_on_a_tiny_config(tmp_path):
    """experiments/optimize_variants.py end to end: one small study, every output written."""
    import importlib.util

    import yaml

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "ov", root / "experiments" / "optimize_variants.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    cfg = {
        "name": "tiny",
        "devices": ["CPU", "MYRIAD"],
        "threads": [1],
        "seconds": 0.2,
        "variants": ["fp32", "int8"],
        "studies": [
            {
                "name": "r18",
                "model": "resnet18",
                "input": [3, 32, 32],
                "split": "layer2.0.add",
                "calibration": "parts:n=20,size=32,subset=train",
                "heldout": "parts:n=20,size=32,subset=val",
                "calibration_frames": 8,
                "heldout_frames": 4,
            }
        ],
    }
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert script.main([str(config), "--out", str(tmp_path / "out")]) == 0
    study = tmp_path / "out" / "r18"
    doc = json.loads((study / "results.json").read_text())
    assert set(doc["summary"]) == {"fp32", "int8"} and doc["summary"]["fp32"]["drop_points"] == 0
    assert doc["report"]["devices"] == {"CPU": True, "MYRIAD": False}
    assert (study / "variants.png").is_file() and "| int8 | INT8 |" in (
        study / "table.md"
    ).read_text()
    assert "| r18 | int8 |" in (tmp_path / "out" / "table.md").read_text()


def test_int8_with_accuracy_control_records_its_bound(tmp_path):
    torch.manual_seed(0)
    (r,) = optimize(
        _Net().eval(),
        input_shape=(3, 32, 32),
        split="block.2",
        out_dir=tmp_path,
        variants=["int8-acc"],
        data="parts:n=40,size=32",
        frames=8,
        validation_frames=8,
        max_drop=1.0,
        progress=False,
        num_classes=6,
    )
    section = r.manifest.head["variant"]
    assert section["name"] == "int8-acc" and r.manifest.head["precision"] == "INT8"
    assert section["accuracy_control"]["max_drop"] == 0.01
    assert section["accuracy_control"]["frames"] == 8
    assert section["accuracy_control"]["float_layers"] >= 0 and r.parity.ok
    assert HeadRunner(r.bundle_dir)(np.zeros((32, 32, 3), np.uint8))[0].shape == (1, 64, 16, 16)


def test_a_failed_variant_leaves_no_bundle_and_the_earlier_ones_intact(tmp_path, monkeypatch):
    from splitnet.export import _variants

    def broken(model, frames, validation):
        raise RuntimeError("quantizer failed")

    bad = _variants.HeadVariant("int8", "i8", "i8", 0.2, True, broken, False)
    monkeypatch.setitem(_variants.HEAD_VARIANTS._entries, "int8", bad)
    with pytest.raises(RuntimeError, match="quantizer failed"):
        optimize(
            _Net().eval(),
            input_shape=(3, 32, 32),
            split="block.2",
            out_dir=tmp_path,
            variants=["fp16", "int8"],
            data="parts:n=20,size=32",
            frames=4,
            progress=False,
        )
    assert read_manifest(tmp_path / "fp16").head["variant"]["name"] == "fp16"
    assert not (tmp_path / "int8").exists()
