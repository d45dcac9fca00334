"""U-Net with a VGG16 encoder: the model of the reference steel-inspection study."""

from __future__ import annotations

import torch
from torch import nn

from splitnet.models._registry import STEEL_SEGMENTATION, register_model
from splitnet.models._vgg import VGG16Encoder, check_input, scaled

__all__ = ["UNetVGG16", "unet_vgg16"]

DECODER_CHANNELS = (256, 128, 64, 32, 16)


class DecoderBlock(nn.Module):
    """``up`` (x2), concatenation with the skip, then two conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv1 = nn.Conv2d(in_channels + skip_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.up(x), skip], dim=1)
        x = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(x)))


class UNetDecoder(nn.Module):
    def __init__(self, skip_channels: list[int], channels: tuple[int, ...]) -> None:
        super().__init__()
        in_channels = skip_channels[-1]
        for i, (skip, out) in enumerate(zip(reversed(skip_channels), channels, strict=True), 1):
            self.add_module(f"block{i}", DecoderBlock(in_channels, skip, out))
            in_channels = out

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for block, skip in zip(self.children(), reversed(skips), strict=True):
            x = block(x, skip)
        return x


class UNetVGG16(nn.Module):
    """U-Net whose encoder is VGG16's 13 convolutions in five blocks.

    The decoder starts from the fifth max-pool's output and upsamples x2 five
    times; each step concatenates the skip of the matching encoder block (the
    output of that block's last convolution, after its ReLU, the
    full-resolution first block included), then a 1x1 convolution gives the
    class logits. Split points ``encoder.block1.pool`` ... ``encoder.block5.pool``.

    Args:
        num_classes: output channels (4: the Severstal steel-defect classes).
        in_channels: input channels.
        width: multiplier of every channel count (``width=0.25`` for a small
            model that trains on a CPU).
        decoder_channels: output channels of the five decoder blocks.
    """

    def __init__(
        self,
        num_classes: int = 4,
        *,
        in_channels: int = 3,
        width: float = 1.0,
        decoder_channels: tuple[int, ...] = DECODER_CHANNELS,
    ) -> None:
        super().__init__()
        self.encoder = VGG16Encoder(in_channels, width)
        decoder_channels = tuple(scaled(c, width) for c in decoder_channels)
        self.decoder = UNetDecoder(self.encoder.out_channels, decoder_channels)
        self.classifier = nn.Conv2d(decoder_channels[-1], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, 32, "unet-vgg16")
        skips, pools = self.encoder(x)
        return self.classifier(self.decoder(pools[-1], skips))


@register_model("unet-vgg16", **STEEL_SEGMENTATION)
def unet_vgg16(*, num_classes: int = 4, **kwargs) -> UNetVGG16:
    return UNetVGG16(num_classes, **kwargs)
