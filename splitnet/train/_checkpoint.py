"""Training checkpoints: what is needed to rebuild, evaluate and resume a model."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from splitnet.train._metrics import TrainError

__all__ = ["CHECKPOINT_FORMAT", "last_path", "load_checkpoint", "model_from_checkpoint"]

CHECKPOINT_FORMAT = "splitnet-checkpoint-1"


def last_path(out: str | os.PathLike) -> Path:
    """Where the resumable last-epoch state of ``out`` lives: ``model.pt`` -> ``model.last.pt``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.last{out.suffix or '.pt'}")


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Reads a checkpoint written by :func:`splitnet.train.train`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a splitnet checkpoint.
    """
    from splitnet.models import read_torch_file

    ckpt = read_torch_file(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path} is not a splitnet training checkpoint (splitnet train --out)")
    return ckpt


def model_from_checkpoint(
    name: str | None, path: str | os.PathLike, **overrides
) -> tuple[nn.Module, dict]:
    """Builds the checkpoint's model with its weights; returns ``(model, checkpoint)``.

    Args:
        name: the model name the user expects (``None``: the checkpoint's); a
            different name raises ``ValueError``.
        path: the checkpoint file.
        **overrides: builder keyword arguments that replace the checkpoint's.
    """
    from splitnet.models import create_model, load_weights

    ckpt = load_checkpoint(path)
    if name is not None and name != ckpt["model"]:
        raise TrainError(f"{path} holds a {ckpt['model']} model, not {name}")
    kwargs = {**ckpt.get("model_kwargs", {}), **overrides}
    model = create_model(ckpt["model"], num_classes=ckpt["num_classes"], **kwargs)
    load_weights(model, path)
    return model.eval(), ckpt
