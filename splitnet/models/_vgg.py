"""VGG16's convolutional body, named so that its five max-pools are split points."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from splitnet.models._registry import ModelError

# (convolutions, output channels) of VGG16's five blocks
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class VGGBlock(nn.Sequential):
    """``conv1, relu1, ..., convN, reluN, pool``; the skip is the last ReLU's output."""

    def __init__(self, in_channels: int, out_channels: int, num_convs: int) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(1, num_convs + 1):
            layers[f"conv{i}"] = nn.Conv2d(in_channels, out_channels, 3, padding=1)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
            in_channels = out_channels
        layers["pool"] = nn.MaxPool2d(2, 2)
        super().__init__(layers)

    def forward_with_skip(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(pooled, features before the pool)``."""
        for name, layer in self.named_children():
            if name == "pool":
                return layer(x), x
            x = layer(x)
        raise AssertionError("unreachable")


class VGG16Encoder(nn.Module):
    """The 13 convolutions of VGG16 in blocks ``block1`` ... ``block5``.

    ``forward`` returns the five block outputs before pooling (the U-Net skips)
    and the five pooled outputs.
    """

    def __init__(self, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.out_channels = []
        for i, (num_convs, channels) in enumerate(VGG16_BLOCKS, start=1):
            channels = scaled(channels, width)
            self.add_module(f"block{i}", VGGBlock(in_channels, channels, num_convs))
            self.out_channels.append(channels)
            in_channels = channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        skips, pools = [], []
        for block in self.children():
            x, skip = block.forward_with_skip(x)
            skips.append(skip)
            pools.append(x)
        return skips, pools


def check_input(x: torch.Tensor, multiple: int, name: str) -> None:
    h, w = x.shape[-2:]
    if x.dim() != 4 or h % multiple or w % multiple or h < multiple or w < multiple:
        raise ModelError(
            f"{name} takes N x C x H x W input with H and W multiples of {multiple}, "
            f"got {tuple(x.shape)}"
        )
