"""The data-source and frame-source registries: a new source is one decorated function."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from splitnet.data import DataError, list_data_sources, open_dataset, register_data_source
from splitnet.data._source import DATA_SOURCES
from splitnet.device import (
    DeviceError,
    FrameSource,
    list_frame_sources,
    open_source,
    register_frame_source,
)
from splitnet.device._sources import FRAME_SOURCES


@pytest.fixture
def unregister():
    """Removes the test's registrations again, so that other tests see the stock registries."""
    added: list[tuple[object, str]] = []
    yield lambda registry, name: added.append((registry, name))
    for registry, name in added:
        del registry._entries[name]


class _Ramp(Dataset):
    task, num_classes, class_names = "classification", 2, ("even", "odd")

    def __init__(self, n: int, channels: int) -> None:
        self.n, self.channels = n, channels

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.full((self.channels, 4, 4), i / self.n), i % 2


def test_stock_sources_are_registered():
    assert list_data_sources() == ["folder", "parts", "severstal", "synthetic"]
    assert list_frame_sources() == ["camera", "folder", "parts", "synthetic", "video"]


def test_a_new_data_source_is_one_decorated_function(unregister):
    @register_data_source("ramp", options={"n"}, path=False)
    def _ramp(request):
        return _Ramp(request.spec.number("n", int, 10), request.channels)

    unregister(DATA_SOURCES, "ramp")
    train = open_dataset("ramp:n=10,val=0.3,seed=1", subset="train", channels=1)
    val = open_dataset("ramp:n=10,val=0.3,seed=1", subset="val", channels=1)
    assert (len(train), len(val)) == (7, 3)
    assert sorted(train.indices + val.indices) == list(range(10))
    x, y = val[0]
    assert x.shape == (1, 4, 4) and y == val.indices[0] % 2
    with pytest.raises(DataError, match="ramp data has no option 'size'"):
        open_dataset("ramp:size=4x4")
    with pytest.raises(ValueError, match="data source 'ramp' is already registered"):
        register_data_source("ramp")(_ramp)


def test_a_source_that_draws_its_own_subsets_is_not_redrawn(unregister):
    seen = []

    @register_data_source("given", path=False, subsets=True)
    def _given(request):
        seen.append(request.subset)
        return _Ramp(4 if request.subset == "val" else 6, request.channels)

    unregister(DATA_SOURCES, "given")
    assert len(open_dataset("given", subset="val")) == 4
    assert len(open_dataset("given", subset="train")) == 6
    assert seen == ["val", "train"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("synthetic:n=5,split=val", r"no option 'split' \(the train/val choice is subset=\)"),
        ("imagenet:/x", "unknown data source 'imagenet'"),
        ("folder", "needs a path, e.g. folder:/path/to/dir"),
    ],
)
def test_data_spec_errors_name_the_fix(spec, message):
    with pytest.raises(DataError, match=message):
        open_dataset(spec)


def test_a_new_frame_source_is_one_decorated_function(unregister):
    @register_frame_source("ramp")
    def _ramp(target, request):
        frames = (
            np.full((request.height, request.width, 3), i, np.uint8) for i in range(int(target))
        )
        return FrameSource(frames, False, f"{target} ramp frames")

    unregister(FRAME_SOURCES, "ramp")
    source = open_source("ramp:5", height=4, width=6, frames=3)
    frames = list(source)
    assert source.description == "5 ramp frames" and not source.live
    assert [int(f[0, 0, 0]) for f in frames] == [0, 1, 2] and frames[0].shape == (4, 6, 3)
    # a source without ``claims`` is reached only through its prefix
    with pytest.raises(
        DeviceError, match="or NAME:TARGET with NAME one of camera, folder, parts, ramp"
    ):
        open_source("5ramp", height=4, width=6)


def test_prefixed_stock_sources(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    assert len(list(open_source(f"folder:{tmp_path}", height=4, width=4))) == 1
    assert open_source("synthetic:", height=8, width=8, fps=5).live
    with pytest.raises(DeviceError, match="camera is named by its index"):
        open_source("camera:front", height=8, width=8)
    with pytest.raises(DeviceError, match="video file not found"):
        open_source(f"video:{tmp_path / 'none.mp4'}", height=8, width=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeviceError, match="no images"):
        open_source(f"folder:{tmp_path / 'empty'}", height=8, width=8)


def test_parts_frame_source_is_torch_free_and_matches_the_dataset():
    from splitnet.data import SyntheticParts

    frames = list(open_source("parts", height=40, width=40, frames=3, seed=2))
    assert [f.shape for f in frames] == [(40, 40, 3)] * 3 and frames[0].dtype == np.uint8
    ds = SyntheticParts(3, size=40, seed=2)
    assert all(np.array_equal(f, ds.raw(i)[0]) for i, f in enumerate(frames))
    wide = next(iter(open_source("parts:", height=40, width=60, fps=5, seed=2)))
    assert wide.shape == (40, 60, 3) and np.array_equal(wide[:, 10:50], frames[0])
    code = """
from splitnet.device import open_source
frames = list(open_source("parts", height=32, width=32, frames=2))
assert len(frames) == 2 and frames[0].shape == (32, 32, 3)
print("ok")
"""
    from _no_torch import run_without_torch

    res = run_without_torch(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
