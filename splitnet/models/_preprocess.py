"""The model's input preprocessing in torch: ``(x / scale - mean) / std`` per channel.

One implementation for training, evaluation, rate–accuracy and the export's
parity reference (what the IR's embedded preprocessing computes), so that all
of them feed the model the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

__all__ = ["Normalize"]


class _Stats(Protocol):
    mean: Sequence[float]
    std: Sequence[float]


class Normalize:
    """``(x / scale - mean) / std`` on ``N x C x H x W`` tensors.

    Args:
        info: anything with per-channel ``mean`` and ``std`` (a model's
            :class:`~splitnet.models.ModelInfo`, a bundle's ``InputSpec``).
        channels: channels of the input (default: as many as ``mean``). A count
            other than ``len(mean)`` (a 1-channel camera on an RGB model) uses the
            mean of the statistics for every channel.
        scale: the input's full scale (``255.0`` for 8-bit samples, ``1.0`` for [0, 1]).

    Example:
        >>> normalize = Normalize(model.splitnet_info, channels=1)
        >>> y = model(normalize(x))
    """

    def __init__(self, info: _Stats, channels: int | None = None, *, scale: float = 1.0) -> None:
        mean = torch.tensor(tuple(info.mean), dtype=torch.float32)
        std = torch.tensor(tuple(info.std), dtype=torch.float32)
        if channels is not None and channels != len(mean):
            mean, std = mean.mean().repeat(channels), std.mean().repeat(channels)
        self.mean, self.std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
        self.scale = scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            x = x / self.scale
        return (x - self.mean) / self.std
