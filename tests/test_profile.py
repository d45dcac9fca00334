"""Per-split-point profiler: MAC totals, cumulative sums, memory, arithmetic, JSON, CLI errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from splitnet.cli.main import main
from splitnet.models import create_model
from splitnet.profile import (
    image_baseline,
    mbps,
    plot_report,
    point_macs,
    profile_graph,
    select_points,
)
from splitnet.split import SplitError, trace

# torchvision's published GFLOPS (which are GMACs) at 224x224
PUBLISHED_GMACS = {"vgg16": 15.47, "mobilenet-v2": 0.30, "resnet50": 4.09}


@pytest.fixture(scope="module")
def small_unet():
    model = create_model("unet-vgg16", width=0.25)
    return trace(model, torch.randn(1, 3, 64, 64), name="unet-vgg16")


@pytest.fixture(scope="module")
def small_report(small_unet):
    return profile_graph(small_unet, bits=(32, 16, 8, 4), fps=(10, 12.5))


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_whole_model_macs_match_torchvision(name):
    g = trace(create_model(name), torch.zeros(1, 3, 224, 224), name=name)
    total = sum(point_macs(g)) / 1e9
    assert total == pytest.approx(PUBLISHED_GMACS[name], rel=0.01)


def test_device_plus_server_is_constant_and_cumulative(small_unet, small_report):
    macs = point_macs(small_unet)
    total = sum(macs)
    assert total > 0
    running = 0
    for r, m in zip(small_report.points, macs, strict=True):
        running += m
        assert r.device_macs == running
        assert r.device_macs + r.server_macs == total == small_report.total_macs


@pytest.mark.parametrize("which", ["encoder.block1.conv1", "encoder.block3.pool", -1])
def test_device_figures_match_the_real_head(small_unet, small_report, which):
    """Cross-check against the head module the split engine cuts, run on real tensors."""
    p = small_unet.point(which)
    head, _ = small_unet.split(p)
    with FlopCounterMode(display=False) as counter:
        head(torch.randn(1, 3, 64, 64))
    record = next(r for r in small_report.points if r.index == p.index)
    assert record.device_macs == counter.get_total_flops() // 2
    attrs = [n for n in head.graph.nodes if n.op == "get_attr"]
    params = sum(getattr_path(head, str(n.target)).numel() for n in attrs)
    assert record.device_params == params
    assert record.device_param_bytes == {"float32": 4 * params, "float16": 2 * params}


def getattr_path(obj, path):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def test_bytes_and_mbps_arithmetic(small_report):
    assert mbps(500, 12) == pytest.approx(0.048)  # 500 B x 8 bit x 12 /s = 48,000 bit/s
    for r in small_report.points:
        assert r.elements == sum(t.elements for t in r.tensors)
        for b in (32, 16, 8, 4):
            assert r.bytes[b] == r.elements * b / 8
            for f in (10, 12.5):
                assert r.mbps[b][f] == pytest.approx(r.elements * b * f / 1e6)
    base = small_report.baseline
    assert base.raw_bytes == 3 * 64 * 64
    assert base.mbps["raw"][10] == pytest.approx(3 * 64 * 64 * 8 * 10 / 1e6)
    assert 0 < base.png_bytes < 3 * 64 * 64 * 2


class _Chain(nn.Module):
    """x -> cat(x, x) -> *2 -> sum over channels -> +x -> view; sizes known by hand."""

    def forward(self, x):
        a = torch.cat([x, x], dim=1)  # 2x4x4 floats: 128 B
        b = a * 2  # 128 B
        c = b.sum(dim=1, keepdim=True)  # 64 B
        d = c + x  # 64 B, the last read of x
        return (d.view(1, 16) * 3,)  # the view shares d's storage; the product: 64 B


def test_peak_activation_on_a_hand_built_chain():
    g = trace(_Chain(), torch.randn(1, 1, 4, 4), name="chain")
    assert [p.op for p in g.points] == ["cat", "mul", "sum", "add", "view", "mul"]
    report = profile_graph(g, bits=(8,), fps=(1,))
    # live bytes while each op runs (x = 64 B is alive until the add reads it):
    # cat: x+a = 192; mul: x+a+b = 320; sum: x+b+c = 256; add: x+c+d = 192;
    # view: d = 64 (no copy); mul: d+out = 128
    assert [r.peak_activation_bytes for r in report.points] == [192, 320, 320, 320, 320, 320]
    assert [r.device_params for r in report.points] == [0] * 6
    view = trace(_ViewChain(), torch.randn(1, 1, 4, 4), name="view-chain")
    assert [r.peak_activation_bytes for r in profile_graph(view).points] == [64, 128]


class _ViewChain(nn.Module):
    def forward(self, x):
        return x.view(1, 16) * 2


def test_select_points(small_unet):
    pools = select_points(small_unet, kind="pool")
    assert pools and all(p.kind == "pool" for p in pools)
    chosen = select_points(small_unet, points="3,10-12,encoder.block3.pool,3")
    expected = sorted({3, 10, 11, 12, small_unet.point("encoder.block3.pool").index})
    assert [p.index for p in chosen] == expected
    with pytest.raises(SplitError):
        select_points(small_unet, points="encoder.block9.pool")
    with pytest.raises(SplitError):
        select_points(small_unet, points="12-10")


def test_baseline_with_a_real_image(tmp_path):
    from PIL import Image

    path = tmp_path / "flat.png"
    Image.new("RGB", (40, 30), (120, 120, 120)).save(path)
    flat = image_baseline((3, 64, 96), fps=(12,), image=path)
    synthetic = image_baseline((3, 64, 96), fps=(12,))
    assert flat.raw_bytes == synthetic.raw_bytes == 3 * 64 * 96
    assert flat.png_bytes < synthetic.png_bytes  # a flat image compresses far better
    assert flat.image == "flat.png"
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(OSError, match="cannot read"):
        image_baseline((3, 64, 96), image=tmp_path / "bad.png")


def test_json_shape_and_files(capsys, tmp_path):
    csv_path, plot_path = tmp_path / "p.csv", tmp_path / "p.png"
    argv = ["profile", "mobilenet-v2", "--input", "3x64x64", "--kind", "conv"]
    argv += ["--bits", "16,4", "--fps", "10,12.5", "--json", "-"]
    argv += ["--csv", str(csv_path), "--plot", str(plot_path)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""  # no progress bar under --json -
    doc = json.loads(out)
    assert doc["model"] == "mobilenet-v2" and doc["input"] == [3, 64, 64]
    assert doc["points"] and all(p["kind"] == "conv" for p in doc["points"])
    keys = {"index", "name", "kind", "tensors", "elements", "device_macs", "server_macs"}
    keys |= {"device_params", "device_param_bytes", "peak_activation_bytes", "bytes", "mbps"}
    keys |= {"device_fps"}
    for p in doc["points"]:
        assert keys <= set(p)
        assert set(p["bytes"]) == {"16", "4"}
        assert {b: set(v) for b, v in p["mbps"].items()} == {
            "16": {"10", "12.5"},
            "4": {"10", "12.5"},
        }
        assert p["mbps"]["4"]["10"] == pytest.approx(p["elements"] * 4 * 10 / 1e6)
        assert p["device_fps"] is None
        assert all(set(t) >= {"shape", "dtype"} for t in p["tensors"])
    assert set(doc["baseline"]) >= {"raw_bytes", "png_bytes", "mbps", "image"}
    assert set(doc["baseline"]["mbps"]["raw"]) == {"10", "12.5"}
    rows = csv_path.read_text().splitlines()
    assert len(rows) == 1 + len(doc["points"])
    assert "mbps_16_12.5" in rows[0].split(",")
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_is_the_default_output(capsys):
    assert main(["profile", "mobilenet-v2", "--input", "3x64x64", "--points", "0-2"]) == 0
    out = capsys.readouterr().out
    assert "dev GMAC" in out and "baseline raw 8-bit image" in out
    assert len([ln for ln in out.splitlines() if ln.strip().startswith(("0 ", "1 ", "2 "))]) == 3


def test_plot_rejects_an_fps_not_in_the_report(small_report, tmp_path):
    with pytest.raises(ValueError, match="not in the report"):
        plot_report(small_report, tmp_path / "x.png", fps=7)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["profile", "no-such-model", "--input", "3x64x64"], "unknown model"),
        (["profile", "mobilenet-v2", "--input", "3x64x64", "--bits", "0"], "1..32"),
        (["profile", "mobilenet-v2", "--input", "3x64x64", "--bits", "16,33"], "1..32"),
        (["profile", "mobilenet-v2", "--input", "3x64x64", "--fps", "0"], "> 0"),
        (["profile", "mobilenet-v2", "--input", "3x64x64", "--fps", "10,-12"], "> 0"),
        (["profile", "mobilenet-v2", "--input", "3x64x64", "--points", "nope"], "no split point"),
        (["profile", "mobilenet-v2", "--input", "3x64x64", "--points", "99999"], "out of range"),
        (
            [
                "profile",
                "mobilenet-v2",
                "--input",
                "3x64x64",
                "--measure-fps",
                "--measure-seconds",
                "0",
            ],
            "--measure-seconds must be > 0",
        ),
        (["profile", "mobilenet-v2", "--input", "3x64x64", "--plot", "a.pdf"], ".png"),
        (
            ["profile", "mobilenet-v2", "--input", "3x64x64", "--measure-tail", "tpu"],
            "invalid choice",
        ),
        (
            ["profile", "mobilenet-v2", "--input", "3x64x64", "--kind", "pool", "--all"],
            "not allowed",
        ),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(capsys, argv, message):
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    assert rc == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert message in err and "Traceback" not in err


@pytest.mark.export
def test_measure_fps_times_the_exported_head_and_the_tail(capsys):
    """--measure-fps exports each point and runs the bench-head code on it."""
    import json

    argv = ["profile", "resnet18", "--input", "3x32x32", "--points", "maxpool,layer1.0.add"]
    assert main([*argv, "--measure-fps", "--measure-seconds", "0.2", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for p in doc["points"]:
        assert p["device_fps"] > 0 and p["tail_latency_ms"] > 0
        assert p["exported_head_bytes"] > 0
    # the deeper head holds more weights
    assert doc["points"][1]["exported_head_bytes"] > doc["points"][0]["exported_head_bytes"]
    # the whole model as one head (the device-only baseline of splitnet plan) and in torch
    whole = doc["whole_model"]
    assert whole["server_macs"] == 0 and whole["device_fps"] > 0
    assert whole["device_macs"] == doc["total_macs"]
    assert doc["model_latency_ms"] > 0 and doc["tail_device"] == "cpu"


def test_measure_tail_times_the_torch_side_only(capsys):
    """--measure-tail: the server profile, without OpenVINO (no export, no head timing)."""
    import json

    argv = ["profile", "resnet18", "--input", "3x32x32", "--points", "maxpool,layer1.0.add"]
    assert main([*argv, "--measure-tail", "cpu", "--measure-seconds", "0.1", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["device_fps"] for p in doc["points"]] == [None, None]
    assert all(p["tail_latency_ms"] > 0 for p in doc["points"])
    assert doc["tail_device"] == "cpu" and doc["model_latency_ms"] > 0
    assert "whole_model" not in doc


@pytest.mark.gpu
def test_measure_tail_on_cuda(capsys):
    import json

    argv = ["profile", "resnet18", "--input", "3x32x32", "--points", "layer1.0.add"]
    assert main([*argv, "--measure-tail", "cuda", "--measure-seconds", "0.1", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tail_device"] == "cuda" and doc["points"][0]["tail_latency_ms"] > 0


def test_measure_tail_on_cuda_without_cuda_is_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = ["profile", "resnet18", "--input", "3x32x32", "--points", "layer1.0.add"]
    assert main([*argv, "--measure-tail", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_profile_takes_model_arguments(capsys):
    import json

    argv = ["profile", "unet-vgg16", "--input", "3x32x64", "--kind", "pool", "--json", "-"]
    assert main([*argv, "--model-arg", "width=0.25"]) == 0
    narrow = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    full = json.loads(capsys.readouterr().out)
    assert narrow["points"][0]["elements"] * 4 == full["points"][0]["elements"]
    assert "tail_device" not in full  # nothing measured: the document is as before
