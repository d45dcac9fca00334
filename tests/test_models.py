"""The model zoo: registry behaviour, shapes, weights loading."""

from __future__ import annotations

import fnmatch
import re

import pytest
import torch
from torch import nn

import splitnet
from splitnet._registry import Registry, UnknownNameError
from splitnet.models import create_model, get_model_info, list_models

REQUIRED = [
    "unet-vgg16",
    "fcn32s-vgg16",
    "fcn16s-vgg16",
    "fcn8s-vgg16",
    "pspnet-resnet50",
    "smp-unet-resnet34",
    "smp-fpn-efficientnet-b0",
    "vgg16",
    "mobilenet-v2",
    "mobilenet-v3-small",
    "resnet18",
    "resnet50",
    "efficientnet-b0",
]


def test_required_models_are_registered():
    names = set(list_models())
    for name in REQUIRED:
        assert name in names


def test_list_models_pattern():
    assert list_models("fcn*") == ["fcn16s-vgg16", "fcn32s-vgg16", "fcn8s-vgg16"]
    smp_unets = list_models("smp-unet-*")
    assert "smp-unet-resnet34" in smp_unets and all(n.startswith("smp-unet-") for n in smp_unets)
    assert list_models("no-such-*") == []


@pytest.mark.parametrize("bad", ["unet-vgg", "smp-nosuch-resnet18", "smp-unet-nosuch", ""])
def test_unknown_model_lists_valid_names(bad):
    with pytest.raises(UnknownNameError) as e:
        create_model(bad)
    assert isinstance(e.value, ValueError)
    assert "valid" in str(e.value).lower()


def test_unknown_model_suggests_close_name():
    with pytest.raises(UnknownNameError, match="unet-vgg16"):
        create_model("unet-vgg")


def test_registry_rejects_duplicates_and_lists_names():
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)
    with pytest.raises(UnknownNameError, match="Valid: a"):
        reg.get("b")


# The smp family has ~900 names (every architecture x encoder); tests/test_split.py builds a
# grid of them, and one per architecture here.
SMP_SAMPLE = [f"smp-{arch}-resnet18" for arch in ("unet", "fpn", "deeplabv3plus", "pan")]
SMP_SAMPLE += ["smp-fpn-efficientnet-b0", "smp-segformer-mit_b0"]
# The fast tier builds every model on the meta device, where shapes propagate without
# arithmetic: the whole zoo in seconds, checking each model's declared input sizes and its
# output shape. These compute on real data while they initialise, so they build on the CPU...
REAL_INIT = ["regnet-*", "smp-segformer-*"]
# ... and of those, these take seconds each on two cores: explicit exclusions, as timm keeps them.
SLOW_MODELS = ["regnet-[xy]-*gf"]


def _zoo(*, slow: bool | None = None) -> list[str]:
    names = [n for n in list_models() if not n.startswith("smp-")] + SMP_SAMPLE
    if slow is None:
        return names
    return [n for n in names if _matches(n, SLOW_MODELS) == slow]


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def _smallest_input(name: str) -> int:
    info = get_model_info(name)
    size = max(info.min_size, 32)
    return -(-size // info.input_multiple) * info.input_multiple


def _check_builds_and_runs(name: str, device: str) -> torch.Tensor:
    with torch.device(device):
        model = create_model(name, num_classes=3)
        info = model.splitnet_info
        size = _smallest_input(name)
        assert info.max_size is None or size <= info.max_size
        with torch.no_grad():
            y = model(torch.randn(1, 3, size, size))
    expected = (1, 3, size, size) if info.task == "segmentation" else (1, 3)
    assert tuple(y.shape) == expected
    assert info.num_classes == 3 and info.task == get_model_info(name).task
    assert not model.training and model.splitnet_name == name
    return y


@pytest.mark.parametrize("name", _zoo(slow=False))
def test_model_builds_and_runs_at_its_smallest_input(name):
    _check_builds_and_runs(name, "cpu" if _matches(name, REAL_INIT) else "meta")


@pytest.mark.slow
@pytest.mark.parametrize("name", _zoo())
def test_model_computes_at_its_smallest_input(name):
    assert torch.isfinite(_check_builds_and_runs(name, "cpu")).all()


def test_tiers_cover_the_zoo():
    fast, slow = set(_zoo(slow=False)), set(_zoo(slow=True))
    assert not fast & slow and fast | slow == set(_zoo())
    assert {n for n in list_models() if not n.startswith("smp-")} <= fast | slow
    assert set(REQUIRED) - {"smp-unet-resnet34"} <= fast
    # every family (convnext, regnet, swin, vit, ...) keeps a member in the fast tier
    family = lambda n: re.match(r"[a-z]+", n)[0]  # noqa: E731
    assert {family(n) for n in slow} <= {family(n) for n in fast}


def test_unet_vgg16_structure():
    model = create_model("unet-vgg16")
    convs = [n for n, m in model.encoder.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    pools = [n for n, m in model.named_modules() if isinstance(m, nn.MaxPool2d)]
    assert pools == [f"encoder.block{i}.pool" for i in range(1, 6)]
    widths = [getattr(model.encoder, f"block{i}").conv1.out_channels for i in range(1, 6)]
    assert widths == [64, 128, 256, 512, 512]
    assert model.classifier.kernel_size == (1, 1) and model.classifier.out_channels == 4


def test_unet_rejects_bad_input_size():
    with pytest.raises(ValueError, match="multiples of 32"):
        create_model("unet-vgg16", width=0.125)(torch.randn(1, 3, 48, 64))


def test_weights_round_trip(tmp_path):
    a = create_model("unet-vgg16", width=0.125)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": a.state_dict(), "epoch": 3}, path)
    b = create_model("unet-vgg16", width=0.125, weights=path)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        create_model("resnet18", weights=tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights"):
        create_model("resnet18", weights=bad)
    other = tmp_path / "other.pt"
    torch.save(create_model("resnet18", num_classes=3).state_dict(), other)
    with pytest.raises(ValueError, match="do not fit"):
        create_model("resnet18", weights=other)


def test_top_level_api_is_lazy_and_typed():
    assert set(splitnet.__all__) >= {
        "create_model",
        "list_models",
        "trace",
        "get_codec",
        "list_codecs",
    }
    assert splitnet.create_model is create_model
