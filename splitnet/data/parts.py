"""The synthetic component-classification set: :func:`splitnet.synthetic.make_part` as a
torch ``Dataset`` (``--data parts:n=5000,size=96``).

Six classes (:data:`~splitnet.synthetic.PART_CLASSES`: resistor, capacitor, ic, screw,
nut, washer), one part per image at a random pose, scale, colour and lighting, on a
textured background with clutter. Sample ``i`` is a function of ``(seed, i)``; the
classes are balanced. The held-out split is :func:`splitnet.data.open_dataset`'s seeded
permutation (``subset=train|val``, ``val=0.2``), so it is the same on every machine.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from splitnet.data._source import DataError, DataRequest, register_data_source
from splitnet.synthetic import PART_CLASSES, make_part_sample

__all__ = ["PART_CLASSES", "SyntheticParts"]


class SyntheticParts(Dataset):
    """A seeded synthetic component-classification dataset of ``n`` images.

    Items are ``(image, label)``: ``channels x size x size`` float32 in [0, 1] and
    an int64 class index. Images are drawn on first use and kept (uint8), since
    a training run reads each one every epoch.

    Args:
        n: number of images.
        size: side of the square images in pixels.
        seed: dataset seed.
        channels: 3 (RGB) or 1 (the luminance).

    Example:
        >>> ds = SyntheticParts(12, size=64)
        >>> image, label = ds[0]
        >>> tuple(image.shape), ds.class_names[int(label)]
        ((3, 64, 64), 'resistor')
    """

    task = "classification"
    class_names = PART_CLASSES

    def __init__(self, n: int = 5000, *, size: int = 96, seed: int = 0, channels: int = 3):
        if n < 1:
            raise DataError(f"parts dataset needs n >= 1, got {n}")
        if size < 16:
            raise DataError(f"parts images must be at least 16x16, got {size}x{size}")
        if channels not in (1, 3):
            raise DataError(f"parts images have 1 or 3 channels, got {channels}")
        self.n, self.size, self.seed, self.channels = n, size, seed, channels
        self._cache: dict[int, tuple[np.ndarray, int]] = {}

    def __len__(self) -> int:
        return self.n

    @property
    def num_classes(self) -> int:
        return len(PART_CLASSES)

    def raw(self, index: int) -> tuple[np.ndarray, int]:
        """``(size x size x 3 uint8 RGB image, class index)`` of sample ``index``."""
        if not 0 <= index < self.n:
            raise IndexError(f"sample {index} out of range for {self.n} samples")
        if index not in self._cache:
            self._cache[index] = make_part_sample(self.seed, index, self.size)
        return self._cache[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.raw(index)
        x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255)
        if self.channels == 1:
            x = (x * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0, keepdim=True)
        return x, torch.tensor(label, dtype=torch.int64)


@register_data_source("parts", options={"n", "size"}, path=False, example="parts:n=5000,size=96")
def _open(request: DataRequest) -> SyntheticParts:
    """``parts[:n=5000,size=96]``: square images at the spec's ``size``, else at the
    (square) size asked for, else 96."""
    o = request.spec.options
    if "size" in o:
        size = request.spec.number("size", int, 96)
    elif request.size is not None:
        if request.size[0] != request.size[1]:
            raise DataError(
                f"parts images are square: asked for {request.size[0]}x{request.size[1]}"
            )
        size = request.size[0]
    else:
        size = 96
    return SyntheticParts(
        request.spec.number("n", int, 5000),
        size=size,
        seed=request.seed,
        channels=request.channels,
    )
