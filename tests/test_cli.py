"""The command line: tables, JSON, one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from splitnet.cli import main


def test_models_lists_the_zoo(capsys):
    assert main(["models", "fcn*"]) == 0
    out = capsys.readouterr().out.split("\n")
    assert [line.split()[0] for line in out if line] == [
        "fcn16s-vgg16",
        "fcn32s-vgg16",
        "fcn8s-vgg16",
    ]


def test_points_table(capsys):
    assert main(["points", "unet-vgg16", "--input", "3x64x64", "--kind", "pool"]) == 0
    out = capsys.readouterr().out
    assert "encoder.block3.pool" in out and "64x64x64" in out
    assert len([line for line in out.splitlines() if "encoder.block" in line]) == 5


def test_points_json(capsys):
    assert main(["points", "unet-vgg16", "--input", "3x64x64", "--kind", "pool", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == "unet-vgg16" and doc["input"] == [3, 64, 64]
    p3 = doc["points"][2]
    assert p3["name"] == "encoder.block3.pool" and len(p3["tensors"]) == 4
    assert p3["elements"] == sum(
        t["shape"][0] * t["shape"][1] * t["shape"][2] * t["shape"][3] for t in p3["tensors"]
    )
    assert p3["bytes_float32"] == 4 * p3["elements"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["points", "no-such-model", "--input", "3x64x64"], "unknown model 'no-such-model'"),
        (["points", "unet-vgg16", "--input", "3x60x64"], "multiples of 32"),
        (["points", "unet-vgg16", "--input", "64x64"], "--input must look like 3x256x1600"),
        (["points", "unet-vgg16", "--input", "3x0x64"], "--input must look like"),
        (["points", "unet-vgg16", "--input", "3x64x64", "--kind", "poo"], "unknown kind 'poo'"),
        (["models", "zzz*"], "no model matches"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
