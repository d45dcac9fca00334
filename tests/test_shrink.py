"""Smaller networks before export (issue 14): prune:R, lowrank:R, distill:W."""

from __future__ import annotations

import pytest
import torch
from test_optimize import _Net
from torch import nn

from splitnet._errors import ConfigError
from splitnet._registry import UnknownNameError
from splitnet.bundle import read_manifest
from splitnet.export._optimize import optimize, resolve_variant
from splitnet.export._shrink import (
    FineTune,
    _factorize,
    factorize_low_rank,
    fine_tune,
    head_modules,
    parse_shrink,
    prune_filters,
)
from splitnet.models import create_model

UNET = dict(num_classes=4, width=0.125)
SHAPE = (3, 32, 64)
SPLIT = "encoder.block2.pool"


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return create_model("unet-vgg16", **UNET).eval()


def _layers(model):
    return {p: m for p, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def test_the_head_holds_the_layers_before_the_cut_and_the_output_layers_are_found(unet):
    head, outputs = head_modules(unet, SHAPE, SPLIT)
    convs = {p for p in _layers(unet) if p in head}
    assert convs == {f"encoder.block{b}.conv{c}" for b in (1, 2) for c in (1, 2)}
    whole, outputs = head_modules(unet, SHAPE, None)
    assert set(_layers(unet)) <= whole
    assert outputs == {"classifier"}, outputs
    fcn = create_model("fcn8s-vgg16", num_classes=4, width=0.125)
    # FCN-8s sums three score layers into its output
    assert head_modules(fcn, (3, 64, 64), None)[1] == {"score_fr", "score_pool3", "score_pool4"}


def test_pruning_removes_head_filters_and_adapts_the_tail(unet):
    pruned, record = prune_filters(unet, 0.5, SHAPE, SPLIT)
    before, after = _layers(unet), _layers(pruned)
    for p, m in before.items():
        if p.startswith(("encoder.block1.", "encoder.block2.")):
            assert after[p].out_channels == m.out_channels // 2, p
        else:
            assert after[p].weight.shape[0] == m.weight.shape[0], p  # the tail keeps its filters
    # the tail's first consumers of the cut (and of the waiting skip) lost input channels
    assert any(
        after[p].weight.shape[1] < m.weight.shape[1] for p, m in before.items() if "decoder" in p
    )
    assert record["filters_after"] == record["filters_before"] // 2
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert pruned(x).shape == unet(x).shape
    assert unet.encoder.block1.conv1.out_channels == 8  # the original is not touched


def test_pruning_leaves_channels_a_residual_ties_to_the_tail():
    m = create_model("mobilenet-v2", num_classes=6).eval()
    pruned, _ = prune_filters(m, 0.5, (3, 32, 32), "features.5.add")
    before, after = _layers(m), _layers(pruned)
    assert after["features.1.conv.1"].out_channels < before["features.1.conv.1"].out_channels
    # features.4..6 add into one residual stream that runs on into the tail: it stays whole
    assert after["features.4.conv.2"].out_channels == before["features.4.conv.2"].out_channels
    assert pruned(torch.randn(1, 3, 32, 32)).shape == (1, 6)


def test_a_low_rank_weight_is_factorised_exactly():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, padding=1, stride=2)
    with torch.no_grad():  # a weight of rank 3
        conv.weight.copy_((torch.randn(24, 3) @ torch.randn(3, 16 * 9)).reshape(24, 16, 3, 3))
    two = _factorize(conv, "energy", 0.999999)
    assert two[0].out_channels == 3 and two[1].kernel_size == (1, 1)
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(two(x), conv(x), atol=1e-4, rtol=1e-4)
    lin = nn.Linear(40, 30)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(30, 2) @ torch.randn(2, 40))
    two = _factorize(lin, "ratio", 2 / 30)
    y = torch.randn(5, 40)
    with torch.no_grad():
        torch.testing.assert_close(two(y), lin(y), atol=1e-4, rtol=1e-4)
    assert _factorize(nn.Linear(40, 30), "ratio", 0.95) is None  # it would be bigger


def test_low_rank_replaces_head_layers_only_and_keeps_the_cut(unet):
    small, record = factorize_low_rank(unet, ("ratio", 0.25), SHAPE, "encoder.block2.conv2")
    assert isinstance(small.encoder.block1.conv2, nn.Sequential)
    assert isinstance(small.encoder.block2.conv2, nn.Conv2d)  # the cut's own layer keeps its name
    assert isinstance(small.decoder.block5.conv2, nn.Conv2d)  # the tail is not touched
    assert record["parameters_after"] < record["parameters_before"]


def test_fine_tuning_trains_the_pruned_model():
    from splitnet.data import open_dataset
    from splitnet.models import ModelInfo
    from splitnet.models._preprocess import Normalize

    torch.manual_seed(0)
    net = _Net().eval()
    net.splitnet_info = ModelInfo("classification", 6)
    data = "parts:n=64,size=32,seed=3"
    ds = open_dataset(data, subset="train", size=(32, 32), channels=3)
    x = Normalize(net.splitnet_info, 3)(torch.stack([ds[i][0] for i in range(len(ds))]))
    y = torch.tensor([int(ds[i][1]) for i in range(len(ds))])
    pruned, _ = prune_filters(net, 0.5, (3, 32, 32), "block.2")

    def loss():
        with torch.no_grad():
            return nn.functional.cross_entropy(pruned(x), y).item()

    start = loss()
    config = FineTune(data, steps=40, batch=8, kd_weight=0.0, progress=False)
    rec = fine_tune(pruned, net, config, (3, 32, 32))
    assert rec["steps"] == 40 and rec["loss"] > 0
    assert loss() < 0.97 * start
    assert not pruned.training


def test_optimize_writes_shrunk_bundles_with_their_record(tmp_path):
    results = optimize(
        "unet-vgg16",
        input_shape=SHAPE,
        split=SPLIT,
        out_dir=tmp_path,
        variants=["fp16", "prune:0.5", "lowrank:0.5", "distill:0.5"],
        data="synthetic:n=24,size=32x64",
        finetune={"steps": 2, "batch": 8},
        distill_steps=2,
        progress=False,
        model_args={"width": 0.125},
        num_classes=4,
    )
    by = {r.manifest.head["variant"]["name"]: r for r in results}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "distill-0.5",
        "fp16",
        "lowrank-0.5",
        "prune-0.5",
    ]
    params = {v: r.manifest.head["variant"]["parameters"] for v, r in by.items()}
    assert (
        params["prune:0.5"] < 0.4 * params["fp16"] and params["distill:0.5"] < 0.4 * params["fp16"]
    )
    assert params["lowrank:0.5"] < params["fp16"]
    for v, r in by.items():
        m = read_manifest(r.bundle_dir)  # checksums still verify after the rewrite
        assert r.parity.ok and ":" not in m.name
        if v != "fp16":
            assert m.head["variant"]["transform"]["kind"] == v.split(":")[0]
            assert m.head["variant"]["retrain"]["steps"] == 2
            assert m.head["precision"] == "FP16" and r.parity.tolerance == 0.05
    assert by["distill:0.5"].manifest.model_args == {"width": 0.0625}
    pruned = by["prune:0.5"].manifest
    assert pruned.crossing[0].shape[1] == by["fp16"].manifest.crossing[0].shape[1] // 2


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ("prune:1.5", ConfigError, "ratio must be in \\(0, 1\\), got 1.5"),
        ("prune:0", ConfigError, "ratio must be in \\(0, 1\\)"),
        ("prune", ConfigError, "needs a value: prune:R"),
        ("lowrank:half", ConfigError, "'half' is not a number"),
        ("lowrank:energy=1", ConfigError, "energy must be in \\(0, 1\\)"),
        ("distill:2", ConfigError, "width multiplier must be in \\(0, 1\\)"),
        ("prun:0.5", UnknownNameError, "Valid: fp16, .*prune:R, lowrank:R, distill:W"),
    ],
)
def test_bad_variant_values_are_refused(spec, error, message):
    with pytest.raises(error, match=message):
        resolve_variant(spec)


def test_parse_reads_ratios_and_energies():
    assert parse_shrink("fp16") is None
    assert parse_shrink("prune:0.25")[1] == ("ratio", 0.25)
    assert parse_shrink("lowrank:energy=0.9")[1] == ("energy", 0.9)
    assert parse_shrink("distill:0.5")[1] == 0.5
