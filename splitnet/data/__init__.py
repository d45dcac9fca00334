"""Datasets for training and evaluating split models, opened from a ``--data SPEC``.

Three sources, all torch ``Dataset`` s of ``(image, target)`` with ``image`` a
``C x H x W`` float32 tensor in [0, 1]:

* ``synthetic[:n=200,size=128x800,seed=0,p=0.4]``: procedural steel surfaces
  with four defect classes (:class:`SyntheticSteel`); targets ``4 x H x W`` masks.
* ``severstal:DIR``: the Severstal steel-defect layout (:class:`SeverstalDataset`).
* ``folder:DIR``: classification from ``DIR/<label>/*`` (:class:`ImageFolderDataset`);
  targets are label indices.

Options shared by every source (after the path, comma-separated):
``split=all|train|val`` (default ``all``), ``val=F`` (held-out fraction: 0.2,
or 0.3 for folders, whose ``train/`` + ``val/`` split is used when given),
``seed=S`` (seed of the split; of the frames too for ``synthetic``) and
``limit=N`` (the first N samples of the split).

Example:
    >>> ds = open_dataset("synthetic:n=10,size=64x400", split="val")
    >>> len(ds), ds.task, ds.num_classes
    (2, 'segmentation', 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch.nn.functional as F
from torch.utils.data import Dataset

from splitnet.data.folder import ImageFolderDataset
from splitnet.data.severstal import DataError, SeverstalDataset, rle_decode, rle_encode
from splitnet.data.synthetic import DEFECT_CLASSES, SyntheticSteel

__all__ = [
    "DEFECT_CLASSES",
    "DataError",
    "DataSpec",
    "ImageFolderDataset",
    "SeverstalDataset",
    "SplitDataset",
    "SyntheticSteel",
    "open_dataset",
    "parse_spec",
    "rle_decode",
    "rle_encode",
]

SOURCES = ("synthetic", "severstal", "folder")
_COMMON = {"split", "val", "seed", "limit"}
_OPTIONS = {
    "synthetic": _COMMON | {"n", "size", "p"},
    "severstal": _COMMON | {"csv"},
    "folder": _COMMON,
}


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` string: ``source[:path][,key=value...]``."""

    source: str
    path: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [self.path] if self.path else []
        parts += [f"{k}={v}" for k, v in self.options.items()]
        return self.source + (":" + ",".join(parts) if parts else "")


def parse_spec(spec: str) -> DataSpec:
    """Parses ``"synthetic:n=200,size=128x800"``, ``"severstal:/data/steel"``, ...

    Raises:
        ValueError: unknown source or option, or a missing path.
    """
    source, _, rest = spec.strip().partition(":")
    if source not in SOURCES:
        raise DataError(
            f"unknown data source {source!r} in {spec!r}; sources: {', '.join(SOURCES)}"
        )
    path, options = None, {}
    for i, token in enumerate(t for t in rest.split(",") if t.strip()) if rest else ():
        key, eq, value = token.partition("=")
        if not eq:
            if i != 0 or source == "synthetic":
                raise DataError(f"expected key=value in --data {spec!r}, got {token!r}")
            path = token.strip()
            continue
        key = key.strip()
        if key not in _OPTIONS[source]:
            raise DataError(
                f"{source} data has no option {key!r}; options: {', '.join(sorted(_OPTIONS[source]))}"
            )
        options[key] = value.strip()
    if source != "synthetic" and not path:
        raise DataError(f"--data {source}: needs a directory, e.g. {source}:/path/to/dir")
    return DataSpec(source, path, options)


def _number(options: dict[str, str], key: str, kind: type, default):
    if key not in options:
        return default
    try:
        return kind(options[key])
    except ValueError:
        raise DataError(f"--data option {key}={options[key]!r} is not a {kind.__name__}") from None


def _size(text: str) -> tuple[int, int]:
    from splitnet._shapes import ShapeError, parse_shape

    try:
        return parse_shape(text, dims=2, minimum=8, example="128x800", labels="H x W")  # type: ignore[return-value]
    except ShapeError as e:
        raise DataError(f"--data option size {e}") from None


class SplitDataset(Dataset):
    """A subset of a source dataset, optionally resized to a fixed ``H x W``.

    Attributes:
        base: the source dataset; ``indices``: the samples of ``base`` it holds;
        task, num_classes, class_names: from ``base``; spec: the ``--data`` string.
    """

    def __init__(
        self,
        base: Dataset,
        indices: Sequence[int],
        *,
        size: tuple[int, int] | None = None,
        spec: str = "",
        split: str = "all",
    ) -> None:
        self.base, self.indices, self.size, self.spec, self.split = (
            base,
            list(indices),
            size,
            spec,
            split,
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
        return f"SplitDataset({self.spec!r}, split={self.split!r}, n={len(self)}{size})"


def open_dataset(
    spec: str | DataSpec,
    *,
    split: str | None = None,
    size: tuple[int, int] | None = None,
    channels: int = 3,
) -> SplitDataset:
    """Opens the dataset a ``--data`` string names.

    Args:
        spec: ``"synthetic:n=200,size=128x800,seed=0"``, ``"severstal:DIR"``,
            ``"folder:DIR"`` with the options of this module's docstring.
        split: ``"all"``, ``"train"`` or ``"val"``; overrides the spec's ``split=``.
        size: resize every sample to ``(H, W)`` (bilinear images, nearest masks);
            synthetic frames are generated at this size unless the spec sets ``size=``.
        channels: image channels, 3 (RGB) or 1 (grayscale).

    Raises:
        ValueError: a bad spec (``DataError`` for files that are missing or malformed).
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    o = spec.options
    split = split or o.get("split", "all")
    if split not in ("all", "train", "val"):
        raise DataError(f"split must be all, train or val, got {split!r}")
    if channels not in (1, 3):
        raise DataError(f"images have 1 or 3 channels, got {channels}")
    seed = _number(o, "seed", int, 0)
    default_val = 0.3 if spec.source == "folder" else 0.2
    val = _number(o, "val", float, default_val)
    if not 0 <= val < 1:
        raise DataError(f"--data option val must be in [0, 1), got {val}")

    if spec.source == "folder":
        base = ImageFolderDataset(
            spec.path, split=split, train_fraction=1 - val, seed=seed, channels=channels
        )
        indices = list(range(len(base)))
    else:
        if spec.source == "synthetic":
            gen_size = _size(o["size"]) if "size" in o else (size or (128, 800))
            n = _number(o, "n", int, 200)
            p = _number(o, "p", float, 0.4)
            base = SyntheticSteel(n, size=gen_size, seed=seed, channels=channels, p_defect=p)
        else:
            base = SeverstalDataset(
                spec.path, channels=channels, csv_name=o.get("csv", "train.csv")
            )
        order = np.random.default_rng(seed).permutation(len(base))
        n_val = int(round(val * len(base)))
        n_train = len(base) - n_val
        picked = {"all": order, "train": order[:n_train], "val": order[n_train:]}[split]
        indices = sorted(int(i) for i in picked)
    limit = _number(o, "limit", int, None)
    if limit is not None:
        indices = indices[:limit]
    if not indices:
        raise DataError(f"--data {spec}: the {split} split is empty")
    return SplitDataset(base, indices, size=size, spec=str(spec), split=split)
