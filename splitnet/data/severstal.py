"""The Severstal steel-defect layout: JPEG frames and run-length masks in ``train.csv``.

A Severstal directory holds the images (in ``train_images/`` or in the
directory itself) and ``train.csv`` in either form:

* ``ImageId,ClassId,EncodedPixels`` (one row per image and defect class present);
* ``ImageId_ClassId,EncodedPixels`` (the older form: four rows per image, e.g.
  ``0002cc93b.jpg_1``, with an empty ``EncodedPixels`` where the class is absent).

``EncodedPixels`` is ``start length start length ...``: 1-indexed pixel
positions counted down the columns (column-major), as in the competition.
Every image of the folder is a sample; images without rows have empty masks.
Everything is checked when the dataset is opened: a missing image, a class
outside 1..4, malformed run-lengths, or runs that do not fit their image raise
:class:`DataError` naming the file and row.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from splitnet.data._source import DataError, DataRequest, register_data_source

__all__ = ["SEVERSTAL_CLASSES", "SeverstalDataset", "rle_decode", "rle_encode"]

SEVERSTAL_CLASSES = ("defect_1", "defect_2", "defect_3", "defect_4")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def rle_runs(text: str, num_pixels: int) -> np.ndarray:
    """Parses ``"start length ..."`` into an ``N x 2`` int64 array of 0-indexed runs.

    Raises:
        ValueError: not integers, an odd count, a start < 1, a length < 1,
            runs out of order or overlapping, or a run past ``num_pixels``.
    """
    tokens = text.split()
    if not tokens:
        return np.zeros((0, 2), np.int64)
    if not all(t.isdigit() for t in tokens):
        bad = next(t for t in tokens if not t.isdigit())
        raise DataError(f"run-lengths must be positive integers, found {bad!r}")
    if len(tokens) % 2:
        raise DataError(f"run-lengths come in start/length pairs, found {len(tokens)} numbers")
    runs = np.array(tokens, dtype=np.int64).reshape(-1, 2)
    starts, lengths = runs[:, 0], runs[:, 1]
    if (starts < 1).any():
        raise DataError("run starts are 1-indexed, found a start of 0")
    if (lengths < 1).any():
        raise DataError("found a run of length 0")
    ends = starts + lengths - 1  # last pixel of each run, 1-indexed
    if (starts[1:] <= ends[:-1]).any():
        k = int(np.flatnonzero(starts[1:] <= ends[:-1])[0]) + 1
        raise DataError(f"run {k + 1} (start {starts[k]}) overlaps or precedes the run before it")
    if ends[-1] > num_pixels:
        raise DataError(
            f"run ends at pixel {ends[-1]}, past the image's {num_pixels} pixels "
            "(the mask does not match the image size)"
        )
    runs[:, 0] -= 1
    return runs


def rle_decode(text: str, shape: tuple[int, int]) -> np.ndarray:
    """Decodes Severstal run-lengths into an ``H x W`` uint8 {0, 1} mask.

    Example:
        >>> rle_decode("1 2 6 1", (3, 2)).tolist()  # column-major, 1-indexed
        [[1, 0], [1, 0], [0, 1]]
    """
    h, w = shape
    flat = np.zeros(h * w, np.uint8)
    for start, length in rle_runs(text, h * w):
        flat[start : start + length] = 1
    return flat.reshape(w, h).T.copy()


def rle_encode(mask: np.ndarray) -> str:
    """Encodes an ``H x W`` mask (nonzero = set) as Severstal run-lengths."""
    if mask.ndim != 2:
        raise DataError(f"rle_encode takes an H x W mask, got shape {mask.shape}")
    flat = np.concatenate([[0], (np.asarray(mask).T.reshape(-1) != 0).view(np.uint8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, stops = edges[0::2], edges[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, stops, strict=True))


def _image_dir(root: Path) -> Path:
    sub = root / "train_images"
    return sub if sub.is_dir() else root


def _read_rows(csv_path: Path) -> list[tuple[int, str, int, str]]:
    """``(row number, image id, class id, encoded pixels)`` for each non-empty mask row."""
    try:
        f = open(csv_path, newline="")
    except OSError as e:
        raise DataError(f"cannot read {csv_path}: {e.strerror}") from None
    rows = []
    with f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if header == ["ImageId", "ClassId", "EncodedPixels"]:
            old = False
        elif header == ["ImageId_ClassId", "EncodedPixels"]:
            old = True
        else:
            raise DataError(
                f"{csv_path}: header must be 'ImageId,ClassId,EncodedPixels' or "
                f"'ImageId_ClassId,EncodedPixels', got {','.join(header)!r}"
            )
        for lineno, row in enumerate(reader, start=2):
            if not row or not any(c.strip() for c in row):
                continue
            where = f"{csv_path} row {lineno}"
            if len(row) != len(header):
                raise DataError(f"{where}: expected {len(header)} columns, got {len(row)}")
            if old:
                key, pixels = row
                image_id, sep, cls = key.strip().rpartition("_")
                if not sep:
                    raise DataError(f"{where}: ImageId_ClassId {key!r} has no '_<class>' suffix")
            else:
                image_id, cls, pixels = row
            image_id = image_id.strip()
            if not re.fullmatch(r"\s*[1-4]\s*", cls):
                raise DataError(f"{where}: class must be 1..4, got {cls!r}")
            if pixels.strip():
                rows.append((lineno, image_id, int(cls), pixels))
    return rows


class SeverstalDataset(Dataset):
    """Severstal steel-defect segmentation from a local directory.

    Items are ``(image, masks)``: ``channels x H x W`` float32 in [0, 1] and
    ``4 x H x W`` float32 {0, 1}, at the images' own size.

    Args:
        root: directory with ``train.csv`` and the images (directly or in
            ``train_images/``).
        channels: 3 (RGB) or 1 (grayscale).
        csv_name: the mask file's name inside ``root``.

    Raises:
        DataError: a missing directory, file or image, or a malformed row.
    """

    task = "segmentation"
    class_names = SEVERSTAL_CLASSES

    def __init__(
        self, root: str | os.PathLike, *, channels: int = 3, csv_name: str = "train.csv"
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"Severstal directory not found: {self.root}")
        csv_path = self.root / csv_name
        if not csv_path.is_file():
            raise DataError(f"Severstal mask file not found: {csv_path}")
        self.image_dir = _image_dir(self.root)
        self.channels = channels
        rows = _read_rows(csv_path)
        found = {p.name for p in self.image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        self.ids = sorted(found)
        sizes: dict[str, tuple[int, int]] = {}
        self.rles: dict[str, list[tuple[int, str]]] = {}
        for lineno, image_id, cls, pixels in rows:
            where = f"{csv_path} row {lineno}"
            if image_id not in found:
                raise DataError(f"{where}: image {self.image_dir / image_id} not found")
            if image_id not in sizes:
                sizes[image_id] = self._size(image_id)
            h, w = sizes[image_id]
            try:
                rle_runs(pixels, h * w)
            except ValueError as e:
                raise DataError(f"{where} ({image_id}, class {cls}, {h}x{w}): {e}") from None
            self.rles.setdefault(image_id, []).append((cls, pixels))
        if not self.ids:
            raise DataError(f"no images in {self.image_dir}")

    def _size(self, image_id: str) -> tuple[int, int]:
        path = self.image_dir / image_id
        try:
            with Image.open(path) as im:
                w, h = im.size
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e}") from None
        return h, w

    @property
    def num_classes(self) -> int:
        return len(SEVERSTAL_CLASSES)

    def __len__(self) -> int:
        return len(self.ids)

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(H x W x C or H x W uint8 image, 4 x H x W uint8 masks)`` of sample ``index``."""
        image_id = self.ids[index]
        path = self.image_dir / image_id
        try:
            with Image.open(path) as im:
                image = np.array(im.convert("RGB" if self.channels == 3 else "L"))
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e}") from None
        h, w = image.shape[:2]
        masks = np.zeros((len(SEVERSTAL_CLASSES), h, w), np.uint8)
        for cls, pixels in self.rles.get(image_id, []):
            masks[cls - 1] |= rle_decode(pixels, (h, w))
        return image, masks

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, masks = self.raw(index)
        x = torch.from_numpy(image).float().div_(255)
        x = x.permute(2, 0, 1) if x.dim() == 3 else x[None]
        return x.contiguous(), torch.from_numpy(masks).float()


@register_data_source("severstal", options={"csv"})
def _open(request: DataRequest) -> SeverstalDataset:
    """``severstal:DIR[,csv=train.csv]``."""
    return SeverstalDataset(
        request.spec.path,
        channels=request.channels,
        csv_name=request.spec.options.get("csv", "train.csv"),
    )
