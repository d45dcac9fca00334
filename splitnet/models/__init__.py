"""The model zoo: ``create_model(name)`` and ``list_models(pattern)``.

Every model is randomly initialised unless ``weights`` names a local file;
nothing is ever downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splitnet.models import classifiers, fcn, pspnet, smp, unet  # noqa: F401  (fill the registry)
from splitnet.models._registry import MODELS, ModelError, ModelInfo, register_model

__all__ = ["ModelInfo", "create_model", "get_model_info", "list_models", "register_model"]


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by a shell-style pattern.

    Example:
        >>> list_models("fcn*")
        ['fcn16s-vgg16', 'fcn32s-vgg16', 'fcn8s-vgg16']
    """
    return MODELS.names(pattern)


def get_model_info(name: str) -> ModelInfo:
    """Task, classes and preprocessing of a registered model."""
    return MODELS.get(name).info


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    weights: str | os.PathLike | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Builds a registered model, randomly initialised, in eval mode.

    Args:
        name: a registered name (``splitnet.list_models()``); unknown names
            raise ``UnknownNameError`` (a ``ValueError``) listing the valid ones.
        num_classes: output classes; the model's default when ``None``.
        weights: a local file with a ``state_dict`` (or a checkpoint dict
            holding one under ``"state_dict"`` or ``"model"``). Never a URL.
        **kwargs: passed to the model's builder (e.g. ``width=0.25``).

    Returns:
        The model, with ``model.splitnet_name`` and ``model.splitnet_info``
        (a :class:`ModelInfo` with the actual number of classes) attached.
    """
    entry = MODELS.get(name)
    n = entry.info.num_classes if num_classes is None else int(num_classes)
    if n < 1:
        raise ModelError(f"num_classes must be >= 1, got {n}")
    model = entry.builder(num_classes=n, **kwargs)
    if weights is not None:
        load_weights(model, weights)
    model.splitnet_name = name
    info = entry.info
    if n != info.num_classes:
        info = ModelInfo(**{**info.__dict__, "num_classes": n, "class_names": ()})
    model.splitnet_info = info
    return model.eval()


def read_torch_file(path: str | os.PathLike, what: str = "weights file"):
    """``torch.load`` of a local file, tensors only (``weights_only``), onto the CPU.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a file ``torch.load`` can read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a bad file
        raise ModelError(f"cannot read {what} {path}: {str(e).splitlines()[0]}") from None


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Loads a local state dict into ``model``; a clear error when it does not fit."""
    state = read_torch_file(path, "weights file")
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(
            f"weights in {path} do not fit the model: {str(e).splitlines()[0]}"
        ) from None
