"""Image classification from a folder whose sub-folder names are the labels.

The torchvision ``ImageFolder`` convention: ``root/<label>/<image>``. If
``root`` holds ``train/`` and ``val/`` (each in that layout), those subsets are
used as given; otherwise the subsets are drawn with a seeded permutation
(70/30 by default) stratified by nothing but the seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from splitnet.data._source import SUBSETS, DataError, DataRequest, register_data_source

__all__ = ["ImageFolderDataset", "has_given_subsets"]


def has_given_subsets(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds ``train/`` and ``val/`` sub-folders (given subsets)."""
    root = Path(root)
    return (root / "train").is_dir() and (root / "val").is_dir()


def _scan(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    try:
        classes, index = find_classes(str(root))
        samples = make_dataset(str(root), index, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:
        raise DataError(f"image folder {root}: {e}") from None
    return classes, samples


class ImageFolderDataset(Dataset):
    """Labelled images in ``root/<label>/*``; items are ``(image, label)``.

    ``image`` is ``channels x H x W`` float32 in [0, 1] at the file's own size.

    Args:
        root: the folder.
        subset: ``"all"``, ``"train"`` or ``"val"``.
        train_fraction: share of the images in ``"train"`` when ``root`` has no
            ``train/`` and ``val/`` sub-folders.
        seed: seed of the permutation that draws the subsets.
        channels: 3 (RGB) or 1 (grayscale).
    """

    task = "classification"

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        subset: str = "all",
        train_fraction: float = 0.7,
        seed: int = 0,
        channels: int = 3,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image folder not found: {self.root}")
        if subset not in SUBSETS:
            raise DataError(f"subset must be all, train or val, got {subset!r}")
        self.channels = channels
        if has_given_subsets(self.root):
            classes, train = _scan(self.root / "train")
            val_classes, val = _scan(self.root / "val")
            if val_classes != classes:
                raise DataError(
                    f"{self.root}: train/ and val/ have different labels "
                    f"({', '.join(classes)} vs {', '.join(val_classes)})"
                )
            samples = {"train": train, "val": val, "all": train + val}[subset]
        else:
            classes, everything = _scan(self.root)
            order = np.random.default_rng(seed).permutation(len(everything))
            n_train = int(round(train_fraction * len(everything)))
            picked = {"all": order, "train": order[:n_train], "val": order[n_train:]}[subset]
            samples = [everything[i] for i in sorted(picked)]
        self.classes = classes
        self.class_names = tuple(classes)
        self.samples = samples

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def raw(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as im:
                image = np.array(im.convert("RGB" if self.channels == 3 else "L"))
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e}") from None
        return image, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.raw(index)
        x = torch.from_numpy(image).float().div_(255)
        x = x.permute(2, 0, 1) if x.dim() == 3 else x[None]
        return x.contiguous(), label


@register_data_source("folder", subsets=True, default_val=0.3)
def _open(request: DataRequest) -> ImageFolderDataset:
    """``folder:DIR``: its ``train/`` and ``val/`` sub-folders, or a seeded 70/30 draw."""
    return ImageFolderDataset(
        request.spec.path,
        subset=request.subset,
        train_fraction=1 - request.val,
        seed=request.seed,
        channels=request.channels,
    )
