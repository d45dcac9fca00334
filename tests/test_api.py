"""The top-level API (lazy, typed, complete) and the error root."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

import splitnet
from splitnet._errors import ConfigError, SplitnetError
from tests._no_torch import run_without_torch

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_import_loads_no_torch_and_resolves_every_name():
    r = run_without_torch(
        "import json, splitnet\n"
        "lazy = [n for n in splitnet.__all__ if n not in vars(splitnet)]\n"
        "print(json.dumps(lazy))\n"
    )
    assert r.returncode == 0, r.stderr
    lazy = json.loads(r.stdout)
    # everything but the version is loaded on first use, not by ``import splitnet``
    assert set(lazy) == set(splitnet.__all__) - {"__version__"}


@pytest.mark.parametrize("name", sorted(set(splitnet.__all__) - {"__version__"}))
def test_every_public_name_resolves_and_is_annotated(name):
    obj = getattr(splitnet, name)
    assert obj is getattr(splitnet, name)  # cached after the first access
    if inspect.isfunction(obj):
        sig = inspect.signature(obj)
        assert sig.return_annotation is not inspect.Signature.empty, f"{name} has no return type"
        untyped = [p.name for p in sig.parameters.values() if p.annotation is p.empty]
        assert untyped == [], f"{name}: parameters without annotations: {untyped}"


def test_package_is_typed_and_dir_lists_the_api():
    assert (Path(splitnet.__file__).parent / "py.typed").is_file()
    assert dir(splitnet) == sorted(splitnet.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        splitnet.nope  # noqa: B018


def test_every_splitnet_error_is_under_the_root():
    from splitnet.bundle import BundleError
    from splitnet.codec import CodecError
    from splitnet.data import DataError
    from splitnet.device import DeviceError, FrameError
    from splitnet.export import ExportError
    from splitnet.export._parity import ParityError
    from splitnet.models._registry import ModelError
    from splitnet.plan import PlanError
    from splitnet.profile._report import ProfileError
    from splitnet.split import SplitError
    from splitnet.train._metrics import TrainError
    from splitnet.wire._tensors import WireError

    errors = [
        BundleError,
        CodecError,
        ConfigError,
        DataError,
        DeviceError,
        ExportError,
        FrameError,
        ModelError,
        ParityError,
        PlanError,
        ProfileError,
        SplitError,
        TrainError,
        WireError,
        splitnet.UnknownNameError,
    ]
    assert splitnet.SplitnetError is SplitnetError and issubclass(SplitnetError, ValueError)
    assert all(issubclass(e, SplitnetError) for e in errors)


def test_cli_prints_splitnet_errors_as_one_line_and_bugs_as_tracebacks(monkeypatch, capsys):
    from splitnet.cli import main, models

    def fail(exc):
        def run(_args):
            raise exc

        return run

    monkeypatch.setattr(models, "run", fail(ConfigError("--thing must be > 0\nmore detail")))
    assert main(["models"]) == 2
    assert capsys.readouterr().err == "splitnet models: error: --thing must be > 0\n"

    monkeypatch.setattr(models, "run", fail(FileNotFoundError(2, "No such file", "x.yaml")))
    assert main(["models"]) == 2
    assert "No such file" in capsys.readouterr().err

    # a ValueError that splitnet did not raise on purpose is a bug: it is not swallowed
    monkeypatch.setattr(models, "run", fail(ValueError("math domain error")))
    with pytest.raises(ValueError, match="math domain error"):
        main(["models"])


def test_examples_in_device_config_are_options_of_the_daemon():
    """device/device.yaml uses the daemon's option names (a renamed option breaks it)."""
    import argparse

    import yaml

    from splitnet.cli import device

    sub = argparse.ArgumentParser().add_subparsers()
    device.add_parser(sub)
    parser = sub.choices["device"]
    dests = {a.dest for a in parser._actions}
    keys = yaml.safe_load((ROOT / "device" / "device.yaml").read_text())
    assert {k.replace("-", "_") for k in keys} <= dests
    assert json.dumps(keys)  # plain data
