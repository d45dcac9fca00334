"""Shared fixtures: seeded RNGs, restored after each test; GPU tests skip without CUDA."""

from __future__ import annotations

import importlib.util
import os
import random

import numpy as np
import pytest

HAS_TORCH = importlib.util.find_spec("torch") is not None

try:  # CI runs the same hypothesis examples every time; local runs keep exploring
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, deadline=None)
    if os.environ.get("CI"):
        settings.load_profile("ci")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(autouse=True)
def _seed_everything():
    """Seeds python, numpy and torch, and restores their RNG state afterwards."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    random.seed(0)
    np.random.seed(0)
    torch_state = None
    if HAS_TORCH:
        import torch

        torch_state = torch.random.get_rng_state()
        torch.manual_seed(0)
    yield
    random.setstate(py_state)
    np.random.set_state(np_state)
    if torch_state is not None:
        import torch

        torch.random.set_rng_state(torch_state)


def pytest_collection_modifyitems(config, items):
    cuda = False
    if HAS_TORCH:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


# ---- the server and daemon tests' bundles (tests/test_server_*.py, tests/test_daemon.py) ----


@pytest.fixture(scope="session")
def repository(tmp_path_factory):
    """A repository with a small U-Net bundle (q4) and a classifier bundle (f16)."""
    from _processes import export_small_unet

    from splitnet.export import export_bundle

    root = export_small_unet(tmp_path_factory.mktemp("repo"))
    export_bundle(
        "resnet18",
        input_shape=(3, 32, 32),
        split="layer2.0.add",
        out_dir=root / "resnet",
        codec="f16",
        num_classes=10,
        parity_frames=1,
    )
    return root


@pytest.fixture(scope="session")
def models(repository):
    """The repository's tails, loaded once (``load_repository``)."""
    from splitnet.server import load_repository

    return load_repository(repository, device="cpu")


@pytest.fixture
def versioned(repository, tmp_path):
    """REPO/UNET/3/ (Triton's layout), REPO/resnet/ (a flat bundle: version 1) and a
    broken bundle REPO/broken/1/."""
    import shutil

    from _serve_helpers import UNET

    root = tmp_path / "repo"
    shutil.copytree(repository / "unet", root / UNET / "3")
    shutil.copytree(repository / "resnet", root / "resnet")
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "manifest.json").write_text("{not json")
    return root
