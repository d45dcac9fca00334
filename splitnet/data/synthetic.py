"""The synthetic steel-defect dataset: :mod:`splitnet.synthetic` frames as a torch ``Dataset``.

The frames themselves (four defect classes of distinct shapes, Severstal-style
``classes x H x W`` masks, frame ``i`` a function of ``(seed, i)``) are drawn by
:func:`splitnet.synthetic.make_frame`, which needs numpy only, so the device
daemon's ``synthetic`` source draws the same frames without torch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from splitnet._shapes import ShapeError, parse_shape
from splitnet.data._source import DataError, DataRequest, register_data_source
from splitnet.synthetic import DEFECT_CLASSES, make_frame

__all__ = ["DEFECT_CLASSES", "SyntheticSteel", "make_frame"]


class SyntheticSteel(Dataset):
    """A seeded synthetic steel-defect segmentation dataset of ``n`` frames.

    Items are ``(image, masks)``: ``channels x H x W`` float32 in [0, 1] (the
    grayscale frame repeated over channels) and ``4 x H x W`` float32 {0, 1}.

    Args:
        n: number of frames.
        size: ``(height, width)`` of the generated frames.
        seed: dataset seed.
        channels: image channels (3 for RGB models, 1 for grayscale ones).
        p_defect: probability that each class appears in a frame.

    Example:
        >>> ds = SyntheticSteel(10, size=(64, 400), seed=0)
        >>> image, masks = ds[0]
        >>> tuple(image.shape), tuple(masks.shape)
        ((3, 64, 400), (4, 64, 400))
    """

    task = "segmentation"
    class_names = DEFECT_CLASSES

    def __init__(
        self,
        n: int = 200,
        *,
        size: tuple[int, int] = (128, 800),
        seed: int = 0,
        channels: int = 3,
        p_defect: float = 0.4,
    ) -> None:
        if n < 1:
            raise DataError(f"synthetic dataset needs n >= 1, got {n}")
        if min(size) < 8:
            raise DataError(f"synthetic frames must be at least 8x8, got {size[0]}x{size[1]}")
        if not 0 <= p_defect <= 1:
            raise DataError(f"p_defect must be in [0, 1], got {p_defect}")
        self.n, self.size, self.seed, self.channels, self.p_defect = (
            n,
            size,
            seed,
            channels,
            p_defect,
        )

    def __len__(self) -> int:
        return self.n

    @property
    def num_classes(self) -> int:
        return len(DEFECT_CLASSES)

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(H x W uint8 image, 4 x H x W uint8 masks)`` of frame ``index``."""
        if not 0 <= index < self.n:
            raise IndexError(f"frame {index} out of range for {self.n} frames")
        return make_frame(self.seed, index, *self.size, p_defect=self.p_defect)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, masks = self.raw(index)
        x = torch.from_numpy(image).float().div_(255).expand(self.channels, -1, -1).contiguous()
        return x, torch.from_numpy(masks).float()


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_shape(text, dims=2, minimum=8, example="128x800", labels="H x W")  # type: ignore[return-value]
    except ShapeError as e:
        raise DataError(f"--data option size {e}") from None


@register_data_source("synthetic", options={"n", "size", "p"}, path=False)
def _open(request: DataRequest) -> SyntheticSteel:
    """``synthetic[:n=200,size=128x800,p=0.4]``: frames at the spec's ``size``, else
    at the size asked for, else 128x800."""
    o = request.spec.options
    size = _size(o["size"]) if "size" in o else (request.size or (128, 800))
    return SyntheticSteel(
        request.spec.number("n", int, 200),
        size=size,
        seed=request.seed,
        channels=request.channels,
        p_defect=request.spec.number("p", float, 0.4),
    )
