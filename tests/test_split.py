"""The split engine: exact crossing sets, bit-exact head/tail, point selection."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from splitnet.models import create_model
from splitnet.split import KINDS, SplitError, trace

# every first-party model, the required classifiers, and one smp model per architecture
EQUALITY_MODELS = [
    ("unet-vgg16", {}, 64),
    ("fcn32s-vgg16", {"fc_channels": 256}, 64),
    ("fcn16s-vgg16", {"fc_channels": 256}, 64),
    ("fcn8s-vgg16", {"fc_channels": 256}, 64),
    ("pspnet-resnet50", {}, 64),
    ("vgg16", {}, 64),
    ("mobilenet-v2", {}, 64),
    ("mobilenet-v3-small", {}, 64),
    ("resnet18", {}, 64),
    ("resnet50", {}, 64),
    ("efficientnet-b0", {}, 64),
    ("smp-unet-resnet18", {}, 64),
    ("smp-unetplusplus-resnet18", {}, 64),
    ("smp-manet-resnet18", {}, 64),
    ("smp-linknet-resnet18", {}, 64),
    ("smp-fpn-efficientnet-b0", {}, 64),
    ("smp-pspnet-resnet18", {}, 64),
    ("smp-deeplabv3-resnet18", {}, 64),
    ("smp-deeplabv3plus-resnet18", {}, 64),
    ("smp-pan-resnet18", {}, 128),
    ("smp-upernet-resnet18", {}, 64),
    ("smp-segformer-mit_b0", {}, 64),
]


def _spread(g, seed: int = 0) -> list[int]:
    """First, last, every pool and a few seeded random points."""
    n = len(g.points)
    pools = [p.index for p in g.select(kind="pool")]
    return sorted({0, n - 1, *pools, *random.Random(seed).sample(range(n), min(4, n))})


@pytest.mark.parametrize(
    ("name", "kwargs", "size"), EQUALITY_MODELS, ids=[m[0] for m in EQUALITY_MODELS]
)
def test_tail_of_head_equals_model(name, kwargs, size):
    model = create_model(name, **kwargs)
    x = torch.randn(1, 3, size, size)
    g = trace(model, x)
    with torch.no_grad():
        ref = model(x)
        for i in _spread(g):
            head, tail = g.split(i)
            crossing = head(x)
            assert isinstance(crossing, tuple)
            assert [tuple(t.shape) for t in crossing] == [t.shape for t in g.points[i].tensors]
            out = tail(*crossing)
            assert torch.equal(out, ref), f"{name} differs when split at {g.points[i].name}"


def test_every_point_of_a_small_unet():
    model = create_model("unet-vgg16", width=0.125)
    x = torch.randn(1, 3, 64, 64)
    g = trace(model, x)
    assert len(g.points) > 60
    with torch.no_grad():
        ref = model(x)
        for p in g.points:
            head, tail = g.split(p)
            assert torch.equal(tail(*head(x)), ref), p.name


def test_unet_pool_crossing_sets():
    g = trace(create_model("unet-vgg16"), torch.randn(1, 3, 64, 128))
    pools = g.select(kind="pool")
    assert [p.name for p in pools] == [f"encoder.block{k}.pool" for k in range(1, 6)]
    last_relu = {1: "relu2", 2: "relu2", 3: "relu3", 4: "relu3", 5: "relu3"}
    for k, p in enumerate(pools, start=1):
        skips = [f"encoder.block{j}.{last_relu[j]}" for j in range(1, k + 1)]
        assert [t.name for t in p.tensors] == [*skips, f"encoder.block{k}.pool"]
        channels = [64, 128, 256, 512, 512][k - 1]
        assert p.tensors[-1].shape == (1, channels, 64 >> k, 128 >> k)
        assert p.tensors[0].shape == (1, 64, 64, 128)  # the full-resolution skip of block 1
        assert p.elements == sum(t.elements for t in p.tensors)
        assert p.nbytes(4) == p.elements / 2


def test_plain_chain_carries_one_tensor():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.Flatten()
    )
    g = trace(model, torch.randn(1, 3, 8, 8))
    assert [p.name for p in g.points] == ["0", "1", "2", "3"]
    assert [p.kind for p in g.points] == ["conv", "relu", "conv", "reshape"]
    for p in g.points:
        assert len(p.tensors) == 1 and p.tensors[0].name == p.name


def test_residual_interior_carries_branch_and_identity():
    g = trace(create_model("resnet18"), torch.randn(1, 3, 64, 64))
    p = g.point("layer1.0.conv2")
    assert [t.name for t in p.tensors] == ["maxpool", "layer1.0.conv2"]
    after_add = g.point("layer1.0.add")
    assert [t.name for t in after_add.tensors] == ["layer1.0.add"]
    # the block's ReLU module runs twice: the second call is named with a suffix
    assert g.point("layer1.0.relu_1").index == after_add.index + 1


def test_input_crosses_only_while_it_is_consumed():
    class Late(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.conv(x)) + x

    g = trace(Late(), torch.randn(1, 3, 8, 8))
    assert [t.name for t in g.point("conv").tensors] == ["input", "conv"]
    assert [t.name for t in g.point("add").tensors] == ["add"]


def test_dead_tensors_do_not_cross():
    class Dead(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 3, 1)
            self.b = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            unused = self.b(x)  # noqa: F841  (never consumed)
            return self.a(x).relu()

    g = trace(Dead(), torch.randn(1, 3, 4, 4))
    assert [p.name for p in g.points] == ["a", "relu"]
    assert [t.name for t in g.points[0].tensors] == ["a"]


def test_select_by_names_indices_pattern_kind():
    g = trace(create_model("unet-vgg16", width=0.125), torch.randn(1, 3, 64, 64))
    assert [p.index for p in g.select(indices=range(3, 6))] == [3, 4, 5]
    assert [p.index for p in g.select(indices=slice(-2, None))] == [len(g) - 2, len(g) - 1]
    assert [p.name for p in g.select(names=["encoder.block2.pool", "classifier"])] == [
        "encoder.block2.pool",
        "classifier",
    ]
    assert len(g.select(pattern="encoder.*.pool")) == 5
    assert [p.name for p in g.select(kind="pool", pattern="*block[12]*")] == [
        "encoder.block1.pool",
        "encoder.block2.pool",
    ]
    convs = g.select(kind=("conv", "concat"))
    assert {p.kind for p in convs} == {"conv", "concat"}
    assert all(p.kind in KINDS for p in g.points)
    assert len({p.name for p in g.points}) == len(g.points)


def test_parse_points_names_indices_ranges_kinds_all():
    g = trace(create_model("unet-vgg16", width=0.125), torch.randn(1, 3, 64, 64))
    block3 = g.point("encoder.block3.pool").index
    chosen = g.parse_points("3,10-12,encoder.block3.pool,3")
    assert [p.index for p in chosen] == sorted({3, 10, 11, 12, block3})
    assert g.parse_points(["pool"]) == g.select(kind="pool")
    assert g.parse_points("all") == list(g.points)
    assert g.parse_points([-1, "2"]) == [g.points[2], g.points[-1]]
    assert g.parse_points(" ,") == []


@pytest.mark.parametrize(
    "spec, message",
    [
        ("encoder.block3.pol", r"did you mean encoder\.block3\.pool.*a kind: .*pool"),
        ("nonsense", r"no split point named 'nonsense'.*'all' or a kind: conv"),
        ("12-10", "empty point range"),
        ("0-100000", "out of range"),
        ("100000", "out of range"),
    ],
)
def test_parse_points_rejects_unknown_names_with_the_valid_ones(spec, message):
    g = trace(create_model("unet-vgg16", width=0.125), torch.randn(1, 3, 64, 64))
    with pytest.raises(SplitError, match=message):
        g.parse_points(spec)


def test_liveness_is_the_graphs():
    from splitnet.profile._graphinfo import graph_info

    g = trace(create_model("unet-vgg16", width=0.125), torch.randn(1, 3, 64, 64))
    info = graph_info(g)
    assert info.pos is g.positions and info.last_use is g.last_uses
    for p in g.select(kind="pool"):
        crossing = [v for v, last in g.last_uses.items() if g.positions[v] <= p.index < last]
        assert len(crossing) == len(p.tensors)


def test_split_accepts_index_name_point_and_rejects_others():
    g = trace(create_model("unet-vgg16", width=0.125), torch.randn(1, 3, 32, 32))
    p = g.point("encoder.block3.pool")
    assert g.point(p.index) is p and g.point(p) is p and g.point(-1) is g.points[-1]
    with pytest.raises(SplitError, match="no split point named 'encoder.block9.pool'"):
        g.split("encoder.block9.pool")
    with pytest.raises(SplitError, match="out of range"):
        g.split(len(g))
    with pytest.raises(SplitError, match="unknown kind"):
        g.select(kind="poo")
    other = trace(create_model("resnet18"), torch.randn(1, 3, 32, 32))
    with pytest.raises(SplitError, match="does not belong"):
        g.split(other.points[50])


def test_trace_restores_training_mode():
    model = create_model("unet-vgg16", width=0.125).train()
    trace(model, torch.randn(1, 3, 32, 32))
    assert model.training


def test_input_the_model_cannot_take():
    with pytest.raises(SplitError, match="multiples of 32"):
        trace(create_model("unet-vgg16", width=0.125), torch.randn(1, 3, 40, 64))
    with pytest.raises(SplitError, match="cannot trace"):
        trace(nn.Linear(4, 2), torch.randn(1, 5))


def test_output_structure_is_kept():
    class DictOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            y = self.conv(x)
            return {"out": y.sigmoid(), "aux": y}

    model = DictOut()
    x = torch.randn(1, 3, 4, 4)
    g = trace(model, x)
    head, tail = g.split("conv")
    out = tail(*head(x))
    ref = model(x)
    assert set(out) == {"out", "aux"} and all(torch.equal(out[k], ref[k]) for k in ref)


def _torchvision_classifiers() -> list[str]:
    import torchvision

    return [n.replace("_", "-") for n in torchvision.models.list_models(module=torchvision.models)]


@pytest.mark.slow
@pytest.mark.parametrize("name", _torchvision_classifiers())
def test_every_torchvision_classifier_splits_exactly(name):
    model = create_model(name, num_classes=10)
    x = torch.randn(1, 3, 224, 224)
    g = trace(model, x)
    with torch.no_grad():
        ref = model(x)
        for i in _spread(g):
            head, tail = g.split(i)
            assert torch.equal(tail(*head(x)), ref), f"{name} differs at {g.points[i].name}"


SMP_ENCODERS = [
    "resnet34",
    "efficientnet-b0",
    "mobilenet_v2",
    "timm-efficientnet-b0",
    "mit_b0",
    "vgg11",
    "densenet121",
]


# pairs segmentation-models-pytorch itself cannot build: DeepLabV3+ needs a dilated encoder,
# and VGG and DenseNet downsample by pooling; mit encoders are tested with FPN
SMP_GRID = [
    (arch, enc)
    for arch in ("unet", "fpn", "deeplabv3plus")
    for enc in SMP_ENCODERS
    if not (arch == "deeplabv3plus" and enc in ("vgg11", "densenet121"))
    and not (enc == "mit_b0" and arch != "fpn")
]


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "encoder"), SMP_GRID)
def test_smp_grid_splits_exactly(arch, encoder):
    model = create_model(f"smp-{arch}-{encoder}")
    x = torch.randn(1, 3, 64, 64)
    g = trace(model, x)
    with torch.no_grad():
        ref = model(x)
        for i in _spread(g):
            head, tail = g.split(i)
            assert torch.equal(tail(*head(x)), ref)


def test_tail_arguments_are_identifiers_whatever_the_module_names():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module("block-0", nn.Conv2d(3, 3, 1))
            self.add_module("1", nn.Conv2d(3, 3, 1))

        def forward(self, x):
            a = getattr(self, "block-0")(x)
            return getattr(self, "1")(a) + a

    model = Odd()
    x = torch.randn(1, 3, 4, 4)
    g = trace(model, x)
    assert [t.name for t in g.point("1").tensors] == ["block-0", "1"]
    head, tail = g.split("1")
    assert torch.equal(tail(*head(x)), model(x))
