"""Fully convolutional networks (Long et al., 2015) on a VGG16 backbone: 32s, 16s, 8s."""

from __future__ import annotations

import torch
from torch import nn

from splitnet.models._registry import STEEL_SEGMENTATION, ModelError, register_model
from splitnet.models._vgg import VGG16Encoder, check_input

__all__ = ["FCNVGG16"]


def _bilinear_upsampling(channels: int, kernel_size: int) -> nn.ConvTranspose2d:
    """A transposed convolution initialised to bilinear interpolation, as in the paper."""
    stride = kernel_size // 2
    layer = nn.ConvTranspose2d(
        channels, channels, kernel_size, stride=stride, padding=stride // 2, bias=False
    )
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    kernel = filt[:, None] * filt[None, :]
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[range(channels), range(channels)] = kernel
    return layer


class FCNVGG16(nn.Module):
    """FCN-32s, -16s or -8s. Input height and width must be multiples of 32.

    The fully connected layers of VGG16 become ``fc6`` (7x7 convolution) and
    ``fc7`` (1x1); ``score_fr`` scores the classes at stride 32. FCN-16s adds
    ``score_pool4`` to the x2 upsampled scores, FCN-8s then ``score_pool3``.
    Padding is chosen so that every upsampling lands exactly on the input size
    (no crop layers).

    Args:
        num_classes: output channels.
        stride: 32, 16 or 8.
        fc_channels: channels of fc6/fc7 (4096 in the paper).
        width: multiplier of the backbone's channel counts.
    """

    def __init__(
        self,
        num_classes: int = 4,
        *,
        stride: int = 32,
        in_channels: int = 3,
        fc_channels: int = 4096,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if stride not in (32, 16, 8):
            raise ModelError(f"FCN stride must be 32, 16 or 8, got {stride}")
        self.stride = stride
        self.encoder = VGG16Encoder(in_channels, width)
        c3, c4, c5 = self.encoder.out_channels[2:]
        self.fc6 = nn.Conv2d(c5, fc_channels, 7, padding=3)
        self.relu6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout2d()
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.relu7 = nn.ReLU(inplace=True)
        self.drop7 = nn.Dropout2d()
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        if stride <= 16:
            self.upscore2 = _bilinear_upsampling(num_classes, 4)
            self.score_pool4 = nn.Conv2d(c4, num_classes, 1)
        if stride == 8:
            self.upscore_pool4 = _bilinear_upsampling(num_classes, 4)
            self.score_pool3 = nn.Conv2d(c3, num_classes, 1)
        self.upscore = _bilinear_upsampling(num_classes, 2 * stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, 32, f"fcn{self.stride}s-vgg16")
        _, pools = self.encoder(x)
        h = self.drop6(self.relu6(self.fc6(pools[4])))
        h = self.drop7(self.relu7(self.fc7(h)))
        h = self.score_fr(h)
        if self.stride <= 16:
            h = self.upscore2(h) + self.score_pool4(pools[3])
        if self.stride == 8:
            h = self.upscore_pool4(h) + self.score_pool3(pools[2])
        return self.upscore(h)


def _register(stride: int) -> None:
    @register_model(f"fcn{stride}s-vgg16", **STEEL_SEGMENTATION)
    def build(*, num_classes: int = 4, **kwargs) -> FCNVGG16:
        return FCNVGG16(num_classes, stride=stride, **kwargs)


for _stride in (32, 16, 8):
    _register(_stride)
