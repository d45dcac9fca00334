"""Datasets for training and evaluating split models, opened from a ``--data SPEC``.

Every source gives a torch ``Dataset`` of ``(image, target)`` with ``image`` a
``C x H x W`` float32 tensor in [0, 1]. The sources are registered (see
:func:`register_data_source`; a new one is one decorated function):

* ``synthetic[:n=200,size=128x800,seed=0,p=0.4]``: procedural steel surfaces
  with four defect classes (:class:`SyntheticSteel`); targets ``4 x H x W`` masks.
* ``parts[:n=5000,size=96]``: generated components in six classes
  (:class:`SyntheticParts`); targets are label indices.
* ``severstal:DIR``: the Severstal steel-defect layout (:class:`SeverstalDataset`).
* ``folder:DIR``: classification from ``DIR/<label>/*`` (:class:`ImageFolderDataset`);
  targets are label indices.

Options shared by every source (after the path, comma-separated):
``subset=all|train|val`` (default ``all``), ``val=F`` (held-out fraction: 0.2,
or 0.3 for folders, whose ``train/`` + ``val/`` sub-folders are used when given),
``seed=S`` (seed of the subsets; of the frames too for ``synthetic``) and
``limit=N`` (the first N samples of the subset).

Example:
    >>> ds = open_dataset("synthetic:n=10,size=64x400", subset="val")
    >>> len(ds), ds.task, ds.num_classes
    (2, 'segmentation', 4)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

# importing a source module registers it
from splitnet.data import folder as _folder  # noqa: F401
from splitnet.data import parts as _parts  # noqa: F401
from splitnet.data import severstal as _severstal  # noqa: F401
from splitnet.data import synthetic as _synthetic  # noqa: F401
from splitnet.data._source import (
    DATA_SOURCES,
    SUBSETS,
    DataError,
    DataRequest,
    DataSpec,
    list_data_sources,
    parse_spec,
    register_data_source,
)
from splitnet.data.folder import ImageFolderDataset
from splitnet.data.parts import PART_CLASSES, SyntheticParts
from splitnet.data.severstal import SeverstalDataset, rle_decode, rle_encode
from splitnet.data.synthetic import DEFECT_CLASSES, SyntheticSteel

__all__ = [
    "DEFECT_CLASSES",
    "PART_CLASSES",
    "DataError",
    "DataRequest",
    "DataSpec",
    "DataSubset",
    "ImageFolderDataset",
    "SeverstalDataset",
    "SyntheticParts",
    "SyntheticSteel",
    "list_data_sources",
    "open_dataset",
    "parse_spec",
    "register_data_source",
    "rle_decode",
    "rle_encode",
    "sample_frame",
]


def sample_frame(x) -> np.ndarray:
    """A sample's image (``C x H x W`` float in [0, 1]) as the frame a device feeds its
    head: ``H x W x C`` uint8."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


class DataSubset(Dataset):
    """The train, validation or whole subset of a source dataset, optionally
    resized to a fixed ``H x W``.

    Attributes:
        base: the source dataset; ``indices``: the samples of ``base`` it holds;
        task, num_classes, class_names: from ``base``; spec: the ``--data`` string;
        subset: ``"all"``, ``"train"`` or ``"val"``.
    """

    def __init__(
        self,
        base: Dataset,
        indices: Sequence[int],
        *,
        size: tuple[int, int] | None = None,
        spec: str = "",
        subset: str = "all",
    ) -> None:
        self.base, self.indices, self.size, self.spec, self.subset = (
            base,
            list(indices),
            size,
            spec,
            subset,
        )
        self.task: str = base.task
        self.num_classes: int = base.num_classes
        self.class_names: tuple[str, ...] = tuple(base.class_names)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        x, y = self.base[self.indices[index]]
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(
                x[None], self.size, mode="bilinear", antialias=True, align_corners=False
            )
            x = x[0].clamp_(0, 1)
            if self.task == "segmentation":
                y = F.interpolate(y[None], self.size, mode="nearest")[0]
        return x, y

    def __repr__(self) -> str:
        size = f", size={self.size[0]}x{self.size[1]}" if self.size else ""
        return f"DataSubset({self.spec!r}, subset={self.subset!r}, n={len(self)}{size})"


def open_dataset(
    spec: str | DataSpec,
    *,
    subset: str | None = None,
    size: tuple[int, int] | None = None,
    channels: int = 3,
) -> DataSubset:
    """Opens the dataset a ``--data`` string names.

    Args:
        spec: ``"synthetic:n=200,size=128x800,seed=0"``, ``"severstal:DIR"``,
            ``"folder:DIR"`` with the options of this module's docstring.
        subset: ``"all"``, ``"train"`` or ``"val"``; overrides the spec's ``subset=``.
        size: resize every sample to ``(H, W)`` (bilinear images, nearest masks);
            synthetic frames are generated at this size unless the spec sets ``size=``.
        channels: image channels, 3 (RGB) or 1 (grayscale).

    Raises:
        DataError: a bad spec, or files that are missing or malformed.
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    source = DATA_SOURCES.get(spec.source)
    subset = subset or spec.options.get("subset", "all")
    if subset not in SUBSETS:
        raise DataError(f"subset must be all, train or val, got {subset!r}")
    if channels not in (1, 3):
        raise DataError(f"images have 1 or 3 channels, got {channels}")
    val = spec.number("val", float, source.default_val)
    if not 0 <= val < 1:
        raise DataError(f"--data option val must be in [0, 1), got {val}")
    request = DataRequest(spec, subset, val, spec.number("seed", int, 0), size, channels)
    base = source.open(request)
    indices = list(range(len(base))) if source.subsets else _draw(len(base), request)
    limit = spec.number("limit", int, None)
    if limit is not None:
        indices = indices[:limit]
    if not indices:
        raise DataError(f"--data {spec}: the {subset} subset is empty")
    return DataSubset(base, indices, size=size, spec=str(spec), subset=subset)


def _draw(n: int, request: DataRequest) -> list[int]:
    """The indices of ``request.subset`` of ``n`` samples: a seeded permutation's
    first ``1 - val`` share is ``train``, the rest ``val``."""
    order = np.random.default_rng(request.seed).permutation(n)
    n_train = n - int(round(request.val * n))
    picked = {"all": order, "train": order[:n_train], "val": order[n_train:]}[request.subset]
    return sorted(int(i) for i in picked)
