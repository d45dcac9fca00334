"""PSPNet (Zhao et al., 2017): dilated ResNet-50 and a pyramid pooling module."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from splitnet.models._registry import STEEL_SEGMENTATION, register_model

__all__ = ["PSPNet"]


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, *, pool: int | None = None
) -> nn.Sequential:
    layers = OrderedDict() if pool is None else OrderedDict(pool=nn.AdaptiveAvgPool2d(pool))
    return nn.Sequential(
        OrderedDict(
            **layers,
            conv=nn.Conv2d(
                in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
            ),
            bn=nn.BatchNorm2d(out_channels),
            relu=nn.ReLU(inplace=True),
        )
    )


class PyramidPooling(nn.Module):
    """Average-pools to ``bins`` x ``bins`` grids, reduces, upsamples and concatenates."""

    def __init__(self, in_channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        reduced = in_channels // len(bins)
        for i, b in enumerate(bins, 1):
            self.add_module(f"stage{i}", _conv_bn_relu(in_channels, reduced, 1, pool=b))
        self.out_channels = in_channels + reduced * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False)
            for stage in self.children()
        ]
        return torch.cat([x, *pooled], dim=1)


class PSPNet(nn.Module):
    """Dilated ResNet-50 (output stride 8) + pyramid pooling (bins 1, 2, 3, 6).

    The strides of ``layer3`` and ``layer4`` are replaced by dilation 2 and 4;
    the logits are upsampled bilinearly to the input size.
    """

    def __init__(self, num_classes: int = 4, *, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        resnet = torchvision.models.resnet50(
            weights=None, replace_stride_with_dilation=[False, True, True]
        )
        self.backbone = nn.Sequential(
            OrderedDict(
                (n, getattr(resnet, n))
                for n in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
            )
        )
        self.ppm = PyramidPooling(2048, bins)
        self.bottleneck = _conv_bn_relu(self.ppm.out_channels, 512, 3)
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(512, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        h = self.classifier(self.dropout(self.bottleneck(self.ppm(self.backbone(x)))))
        return F.interpolate(h, size=size, mode="bilinear", align_corners=False)


@register_model("pspnet-resnet50", **{**STEEL_SEGMENTATION, "input_multiple": 8, "min_size": 48})
def pspnet_resnet50(*, num_classes: int = 4, **kwargs) -> PSPNet:
    return PSPNet(num_classes, **kwargs)
