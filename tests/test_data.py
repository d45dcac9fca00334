"""Datasets: synthetic steel, Severstal RLE + CSV layouts, image folders, --data specs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from splitnet.data import (
    PART_CLASSES,
    DataError,
    ImageFolderDataset,
    SeverstalDataset,
    SyntheticParts,
    SyntheticSteel,
    open_dataset,
    parse_spec,
    rle_decode,
    rle_encode,
)

# ---- synthetic ------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_shaped():
    a = SyntheticSteel(4, size=(32, 160), seed=3)
    b = SyntheticSteel(4, size=(32, 160), seed=3)
    c = SyntheticSteel(4, size=(32, 160), seed=4)
    for i in range(4):
        (xa, ya), (xb, yb) = a[i], b[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][0], c[0][0])
    x, y = a[0]
    assert x.shape == (3, 32, 160) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.shape == (4, 32, 160) and set(y.unique().tolist()) <= {0.0, 1.0}
    gray = SyntheticSteel(1, size=(32, 160), channels=1)[0][0]
    assert gray.shape == (1, 32, 160)


def test_synthetic_draws_every_class_with_distinct_shapes():
    ds = SyntheticSteel(40, size=(64, 384), seed=0)
    areas = [[] for _ in range(4)]
    for i in range(len(ds)):
        image, masks = ds.raw(i)
        assert image.dtype == np.uint8 and masks.dtype == np.uint8
        for c in range(4):
            if masks[c].any():
                areas[c].append(masks[c].mean())
                # a defect changes the pixels it covers: they differ from the rest
                inside = image[masks[c] > 0].astype(float).mean()
                outside = image[masks.max(0) == 0].astype(float).mean()
                assert abs(inside - outside) > 5
    assert all(len(a) >= 5 for a in areas), [len(a) for a in areas]
    # patches are large, scratches/pits/cracks are thin or small
    assert np.median(areas[2]) > 3 * max(np.median(areas[0]), np.median(areas[1]))
    # some frames have no defect at all
    assert any(not ds.raw(i)[1].any() for i in range(len(ds)))


def test_synthetic_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n >= 1"):
        SyntheticSteel(0)
    with pytest.raises(ValueError, match="at least 8x8"):
        SyntheticSteel(2, size=(4, 100))


# ---- synthetic parts (component classification) ------------------------------------------


def test_parts_are_deterministic_balanced_and_shaped():
    a, b = SyntheticParts(12, size=48, seed=3), SyntheticParts(12, size=48, seed=3)
    c = SyntheticParts(12, size=48, seed=4)
    for i in range(12):
        (xa, ya), (xb, yb) = a[i], b[i]
        assert torch.equal(xa, xb) and int(ya) == int(yb)
    assert not torch.equal(a[0][0], c[0][0])
    x, y = a[0]
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    labels = [int(a[i][1]) for i in range(12)]
    assert sorted(labels) == sorted(list(range(len(PART_CLASSES))) * 2)
    assert SyntheticParts(1, size=48, channels=1)[0][0].shape == (1, 48, 48)
    assert a.task == "classification" and a.num_classes == 6 and a.class_names == PART_CLASSES


def test_parts_differ_by_class_and_pose():
    ds = SyntheticParts(60, size=64, seed=0)
    images = np.stack([ds.raw(i)[0] for i in range(60)]).astype(float)
    # two samples of one class are different pictures (pose, colour, background)
    assert np.abs(images[0] - images[6]).mean() > 10
    # the part stands out of its background: the centre differs from the border
    centre = images[:, 24:40, 24:40].mean(axis=(1, 2, 3))
    border = np.concatenate([images[:, :4], images[:, -4:]], axis=1).mean(axis=(1, 2, 3))
    assert np.median(np.abs(centre - border)) > 5


def test_parts_spec_subsets_are_disjoint_and_stable():
    train = open_dataset("parts:n=30,size=32,val=0.4", subset="train")
    val = open_dataset("parts:n=30,size=32,val=0.4", subset="val")
    assert len(train) == 18 and len(val) == 12
    assert not set(train.indices) & set(val.indices)
    assert val.indices == open_dataset("parts:n=30,size=32,val=0.4", subset="val").indices
    assert val[0][0].shape == (3, 32, 32)
    # without size=, the size asked for
    assert open_dataset("parts:n=6", size=(40, 40))[0][0].shape == (3, 40, 40)


@pytest.mark.parametrize(
    ("spec", "size", "message"),
    [
        ("parts:n=0", None, "n >= 1"),
        ("parts:n=4,size=8", None, "at least 16x16"),
        ("parts:n=4,size=big", None, "size='big' is not a int"),
        ("parts:n=4", (32, 64), "square"),
    ],
)
def test_parts_rejects_bad_specs(spec, size, message):
    with pytest.raises(DataError, match=message):
        open_dataset(spec, size=size)


# ---- run-length encoding --------------------------------------------------------------------


def test_rle_known_cases():
    # column-major, 1-indexed: pixel k (1-based) is row (k-1) % H, column (k-1) // H
    assert rle_decode("1 2 6 1", (3, 2)).tolist() == [[1, 0], [1, 0], [0, 1]]
    assert rle_decode("", (2, 2)).sum() == 0
    m = np.zeros((4, 3), np.uint8)
    m[1:3, 0] = 1
    m[:, 2] = 1
    assert rle_encode(m) == "2 2 9 4"
    assert rle_encode(np.ones((2, 2))) == "1 4"
    assert rle_encode(np.zeros((2, 2))) == ""


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, 1))
)
def test_rle_round_trip(mask):
    text = rle_encode(mask)
    assert np.array_equal(rle_decode(text, mask.shape), mask)


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 2 x 3", "positive integers"),
        ("1 2 5", "pairs"),
        ("0 2", "1-indexed"),
        ("1 0", "length 0"),
        ("5 3 6 1", "overlaps"),
        ("7 4", "past the image"),
        ("-1 2", "positive integers"),
    ],
)
def test_rle_rejects_malformed(text, message):
    with pytest.raises(ValueError, match=message):
        rle_decode(text, (3, 3))


# ---- Severstal layout -----------------------------------------------------------------------


def _severstal(tmp_path, *, old: bool = False, sub: bool = True):
    """Three 16x40 JPEG frames; frame a has classes 1 and 3, b class 4, c nothing."""
    rng = np.random.default_rng(0)
    root = tmp_path / "severstal"
    images = root / "train_images" if sub else root
    images.mkdir(parents=True)
    masks = {}
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.fromarray(rng.integers(0, 255, (16, 40, 3), dtype=np.uint8)).save(images / name)
        masks[name] = np.zeros((4, 16, 40), np.uint8)
    masks["a.jpg"][0, 2:5, 3:20] = 1
    masks["a.jpg"][2, 8:16, 30:40] = 1
    masks["b.jpg"][3, :, 0:2] = 1
    if old:
        lines = ["ImageId_ClassId,EncodedPixels"]
        for name, m in masks.items():
            lines += [f"{name}_{c + 1},{rle_encode(m[c])}" for c in range(4)]
    else:
        lines = ["ImageId,ClassId,EncodedPixels"]
        for name, m in masks.items():
            lines += [f"{name},{c + 1},{rle_encode(m[c])}" for c in range(4) if m[c].any()]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root, masks


@pytest.mark.parametrize("old", [False, True], ids=["ImageId,ClassId", "ImageId_ClassId"])
def test_severstal_reads_both_csv_forms(tmp_path, old):
    root, masks = _severstal(tmp_path, old=old)
    ds = SeverstalDataset(root)
    assert ds.ids == ["a.jpg", "b.jpg", "c.jpg"] and ds.num_classes == 4
    for i, name in enumerate(ds.ids):
        x, y = ds[i]
        assert x.shape == (3, 16, 40)
        assert torch.equal(y, torch.from_numpy(masks[name]).float())


def test_severstal_images_in_root_and_spec(tmp_path):
    root, _ = _severstal(tmp_path, sub=False)
    ds = open_dataset(f"severstal:{root},val=0.34", subset="val", size=(32, 64))
    assert len(ds) == 1 and ds.task == "segmentation"
    x, y = ds[0]
    assert x.shape == (3, 32, 64) and y.shape == (4, 32, 64)
    assert set(y.unique().tolist()) <= {0.0, 1.0}  # nearest-neighbour masks stay binary


def _rewrite_row(root, lineno: int, text: str) -> None:
    lines = (root / "train.csv").read_text().splitlines()
    lines[lineno - 1] = text
    (root / "train.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "row, message",
    [
        ("a.jpg,1,3 4 x 2", r"train\.csv row 3 .*positive integers"),
        ("a.jpg,1,3 4 9", r"train\.csv row 3 .*pairs"),
        ("a.jpg,7,1 2", r"train\.csv row 3: class must be 1..4"),
        ("a.jpg,1,600 50", r"train\.csv row 3 \(a\.jpg.*16x40\).*does not match the image"),
        ("zzz.jpg,1,1 2", r"train\.csv row 3: image .*zzz\.jpg not found"),
        ("a.jpg,1", r"train\.csv row 3: expected 3 columns"),
    ],
)
def test_severstal_errors_name_file_and_row(tmp_path, row, message):
    root, _ = _severstal(tmp_path)
    _rewrite_row(root, 3, row)
    with pytest.raises(DataError, match=message):
        SeverstalDataset(root)


def test_severstal_missing_files(tmp_path):
    with pytest.raises(DataError, match="directory not found"):
        SeverstalDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"train\.csv"):
        SeverstalDataset(tmp_path / "empty")
    root, _ = _severstal(tmp_path)
    (root / "train.csv").write_text("Image,Class\n")
    with pytest.raises(DataError, match="header"):
        SeverstalDataset(root)


# ---- image folders --------------------------------------------------------------------------


def _folder(root, labels=("cat", "dog", "eel"), per_label=10):
    rng = np.random.default_rng(1)
    for label in labels:
        (root / label).mkdir(parents=True)
        for i in range(per_label):
            a = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / label / f"{i}.png")
    return root


def test_folder_seeded_split(tmp_path):
    root = _folder(tmp_path / "imgs")
    full = ImageFolderDataset(root)
    train = ImageFolderDataset(root, subset="train", seed=5)
    val = ImageFolderDataset(root, subset="val", seed=5)
    assert full.class_names == ("cat", "dog", "eel") and len(full) == 30
    assert (len(train), len(val)) == (21, 9)
    paths = lambda ds: {p for p, _ in ds.samples}  # noqa: E731
    assert paths(train).isdisjoint(paths(val)) and paths(train) | paths(val) == paths(full)
    assert paths(ImageFolderDataset(root, subset="val", seed=5)) == paths(val)
    assert paths(ImageFolderDataset(root, subset="val", seed=6)) != paths(val)
    x, label = train[0]
    assert x.shape == (3, 12, 12) and label in (0, 1, 2)
    ds = open_dataset(f"folder:{root},val=0.5", subset="train", size=(16, 16))
    assert len(ds) == 15 and ds[0][0].shape == (3, 16, 16) and ds.task == "classification"


def test_folder_given_split(tmp_path):
    _folder(tmp_path / "d" / "train", per_label=4)
    _folder(tmp_path / "d" / "val", per_label=2)
    assert len(ImageFolderDataset(tmp_path / "d", subset="train")) == 12
    assert len(ImageFolderDataset(tmp_path / "d", subset="val")) == 6
    _folder(tmp_path / "e" / "train", per_label=1)
    _folder(tmp_path / "e" / "val", labels=("cat", "dog"), per_label=1)
    with pytest.raises(DataError, match="different labels"):
        ImageFolderDataset(tmp_path / "e")


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="image folder"):
        ImageFolderDataset(tmp_path / "x")


# ---- specs ----------------------------------------------------------------------------------


def test_parse_spec():
    s = parse_spec("synthetic:n=20,size=32x96,seed=2")
    assert s.source == "synthetic" and s.options == {"n": "20", "size": "32x96", "seed": "2"}
    assert str(s) == "synthetic:n=20,size=32x96,seed=2"
    s = parse_spec("severstal:/data/steel,val=0.1")
    assert s.path == "/data/steel" and s.options == {"val": "0.1"}
    assert parse_spec("synthetic").options == {}


@pytest.mark.parametrize(
    "spec, message",
    [
        ("imagenet:/x", "unknown data source"),
        ("synthetic:q=1", "no option 'q'"),
        ("severstal", "needs a path"),
        ("synthetic:/x", "key=value"),
        ("synthetic:size=3", "size must look like"),
        ("synthetic:n=abc", "not a int"),
        ("synthetic:n=5,val=1.5", r"val must be in \[0, 1\)"),
        ("synthetic:n=5,subset=test", "subset must be"),
    ],
)
def test_open_dataset_rejects_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        open_dataset(spec)


def test_open_dataset_splits_are_disjoint():
    train = open_dataset("synthetic:n=10,size=32x64", subset="train")
    val = open_dataset("synthetic:n=10,size=32x64", subset="val")
    assert (len(train), len(val)) == (8, 2)
    assert set(train.indices).isdisjoint(val.indices)
    assert len(open_dataset("synthetic:n=10,size=32x64,limit=3")) == 3
