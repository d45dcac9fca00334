"""Representative search (splitnet.index, ``splitnet index build|query``)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitnet.cli import main
from splitnet.index import (
    METHODS,
    IndexError_,
    RepresentativeIndex,
    build_index,
    hamming,
    image_hash,
    list_files,
    read_frames,
)
from splitnet.synthetic import PART_CLASSES, make_part_sample


def _write_parts(root, per_class=3, size=64, seed=0):
    """``root/<class>/<i>.png`` from the synthetic parts; returns {path: (rgb, label)}."""
    out, i = {}, 0
    counts = dict.fromkeys(PART_CLASSES, 0)
    while min(counts.values()) < per_class:
        rgb, label = make_part_sample(seed, i, size)
        name = PART_CLASSES[label]
        if counts[name] < per_class:
            d = root / name
            d.mkdir(parents=True, exist_ok=True)
            p = d / f"{i:04d}.png"
            cv2.imwrite(str(p), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            out[p] = (rgb, name)
            counts[name] += 1
        i += 1
    return out


def _write_clip(path, colours, frames_each=6, size=(48, 32)):
    """A tiny MJPG clip: ``frames_each`` frames of each solid colour (RGB), with noise."""
    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    assert vw.isOpened()
    rng = np.random.default_rng(0)
    for c in colours:
        for _ in range(frames_each):
            img = np.clip(np.array(c)[None, None] + rng.integers(-5, 6, (h, w, 3)), 0, 255)
            vw.write(cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2BGR))
    vw.release()


@pytest.fixture(scope="module")
def parts_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    return root, _write_parts(root)


@pytest.fixture(scope="module")
def built(parts_dir, tmp_path_factory):
    root, _ = parts_dir
    out = tmp_path_factory.mktemp("idx") / "index"
    assert main(["index", "build", "--data", f"folder:{root}", "--out", str(out)]) == 0
    return out


@given(
    st.integers(1, 40).flatmap(
        lambda b: st.tuples(
            st.lists(st.binary(min_size=b, max_size=b), min_size=1, max_size=20),
            st.binary(min_size=b, max_size=b),
        )
    )
)
@settings(max_examples=60, deadline=None)
def test_packed_popcount_equals_naive_hamming(data):
    refs_bytes, q_bytes = data
    refs = np.frombuffer(b"".join(refs_bytes), np.uint8).reshape(len(refs_bytes), -1)
    q = np.frombuffer(q_bytes, np.uint8)
    naive = [
        sum(a != b for a, b in zip(np.unpackbits(r), np.unpackbits(q), strict=True)) for r in refs
    ]
    assert hamming(refs, q).tolist() == naive


def test_round_trip_every_method_finds_the_image_itself(parts_dir, built):
    _, files = parts_dir
    idx = RepresentativeIndex.load(built)
    assert len(idx) == 3 * len(PART_CLASSES)
    doc = json.loads((built / "index.json").read_text())
    assert doc["size"] == {"height": 64, "width": 64} and doc["colour_space"] == "rgb"
    assert idx.hashes["phash"].dtype == np.uint8 and idx.hashes["phash"].shape == (18, 8)
    path, (rgb, label) = next(iter(files.items()))
    for method in METHODS:
        best = idx.query(rgb, method=method, k=3)["all"]
        assert len(best) == 3
        assert best[0].id == f"{label}/{path.name}", method
        assert best[0].label == label
    per = idx.query(rgb, method="dhash", k=2, per_class=True)
    assert list(per) == sorted(PART_CLASSES) and all(len(v) == 2 for v in per.values())
    assert all(m.label == c for c, v in per.items() for m in v)


def test_query_cli_json_and_table(parts_dir, built, capsys):
    _, files = parts_dir
    path = next(iter(files))
    # another size and colour space: the query image is resized (and grey -> RGB)
    big = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (100, 90))
    other = path.parent.parent / "query.png"
    cv2.imwrite(str(other), big)
    assert (
        main(
            [
                "index",
                "query",
                str(path),
                "--index",
                str(built),
                "-k",
                "2",
                "--json",
                "--method",
                "ssim",
                "--per-class",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["method"] == "ssim" and doc["higher_is_better"]
    assert set(doc["matches"]) == set(PART_CLASSES)
    assert doc["matches"][path.parent.name][0]["score"] == pytest.approx(1.0)
    assert main(["index", "query", str(other), "--index", str(built), "--method", "mse"]) == 0
    out = capsys.readouterr().out
    assert "rank" in out and "lower is nearer" in out


def test_video_frames_every_n_and_scene_change(tmp_path):
    (tmp_path / "red").mkdir()
    (tmp_path / "green").mkdir()
    _write_clip(tmp_path / "red" / "a.avi", [(220, 20, 20), (20, 20, 220), (20, 220, 20)])
    _write_clip(tmp_path / "green" / "b.avi", [(20, 200, 20)])
    labels, files = list_files(tmp_path)
    assert labels == ["green", "red"]
    red = [f for f, lab in files if lab == "red"][0]
    every = list(read_frames(red, "red", root=tmp_path, every=4))
    assert [f.id for f in every] == [f"red/a.avi#frame={n}" for n in (0, 4, 8, 12, 16)]
    assert every[0].rgb.shape == (32, 48, 3)
    scenes = list(read_frames(red, "red", root=tmp_path, scene_change=0.5))
    assert [f.id.split("=")[1] for f in scenes] == ["0", "6", "12"]  # one per colour
    out = tmp_path.parent / f"{tmp_path.name}-idx"
    assert (
        main(
            [
                "index",
                "build",
                "--data",
                f"folder:{tmp_path}",
                "--out",
                str(out),
                "--every",
                "3",
                "--size",
                "32x32",
            ]
        )
        == 0
    )
    idx = RepresentativeIndex.load(out)
    assert len(idx) == 6 + 2 and idx.size == (32, 32)


def test_unknown_method_lists_valid(built, parts_dir, capsys):
    path = next(iter(parts_dir[1]))
    assert main(["index", "query", str(path), "--index", str(built), "--method", "sift"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "hist-bhattacharyya" in err and "colorhash" in err
    with pytest.raises(IndexError_, match="valid methods"):
        RepresentativeIndex.load(built).query(np.zeros((8, 8, 3), np.uint8), method="x")


def test_mismatched_index_size_or_colour_space(built, parts_dir, capsys):
    path = next(iter(parts_dir[1]))
    base = ["index", "query", str(path), "--index", str(built)]
    assert main([*base, "--size", "32x32"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "64x64" in err and "32x32" in err
    assert main([*base, "--colour-space", "hsv"]) == 2
    assert "colour space rgb" in capsys.readouterr().err
    assert main([*base, "--size", "64x64", "--colour-space", "rgb"]) == 0


def test_non_image_file_is_a_one_line_error_or_skipped(tmp_path, capsys):
    _write_parts(tmp_path, per_class=1)
    bad = tmp_path / "nut" / "notes.txt"
    bad.write_text("not an image")
    out = tmp_path.parent / f"{tmp_path.name}-idx"
    args = ["index", "build", "--data", f"folder:{tmp_path}", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.txt" in err[0]
    # a file with an image's name that does not decode: one error line after the bar
    bad.unlink()
    (tmp_path / "nut" / "broken.png").write_bytes(b"garbage")
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "broken.png" in err[0]
    assert not (out / "index.json").exists()
    assert main([*args, "--skip-unreadable"]) == 0
    assert "1 unreadable files skipped" in capsys.readouterr().out
    assert len(RepresentativeIndex.load(out)) == len(PART_CLASSES)


def test_bad_index_dir_and_hash_length(tmp_path, built):
    assert main(["index", "query", str(tmp_path), "--index", str(tmp_path)]) == 2
    idx = RepresentativeIndex.load(built)
    with pytest.raises(IndexError_, match="bytes"):
        idx.hash_scores("phash", np.zeros(3, np.uint8))
    assert image_hash(np.zeros((20, 20, 3), np.uint8), "phash").shape == (8,)


def test_build_index_api_labels():
    refs = [(str(i), "ab"[i % 2], np.full((16, 16, 3), 40 * i, np.uint8)) for i in range(4)]
    idx = build_index(refs, size=(16, 16), colour_space="grey", hash_methods=["ahash"])
    assert idx.labels == ["a", "b"] and list(idx.hashes) == ["ahash"]
    with pytest.raises(IndexError_, match="colour space"):
        build_index(refs, colour_space="lab")


def test_index_package_and_hash_are_torch_free(built):
    from tests._no_torch import run_without_torch

    code = (
        "import sys, numpy as np\n"
        "from splitnet.index import RepresentativeIndex, image_hash\n"
        "idx = RepresentativeIndex.load(sys.argv[1])\n"
        "h = image_hash(np.zeros((30, 30, 3), np.uint8), 'dhash')\n"
        "assert idx.hash_scores('dhash', h).shape == (len(idx),)\n"
    )
    r = run_without_torch(code, args=(str(built),))
    assert r.returncode == 0, r.stderr


def test_mse_scores_match_the_pixel_differences():
    from splitnet.index._features import thumb_scores

    rng = np.random.default_rng(0)
    refs = rng.integers(0, 256, (50, 64, 64), dtype=np.uint8)
    q = refs[7]
    naive = ((refs.astype(np.float64) - q) ** 2).mean(axis=(1, 2))
    got = thumb_scores(refs, q, "mse")
    np.testing.assert_allclose(got, naive, atol=1.0)
    assert int(np.argmin(got)) == 7


def test_bench_index_runs_small(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_index.py"
    spec = importlib.util.spec_from_file_location("bench_index", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = [
        "--refs",
        "24",
        "--queries",
        "6",
        "--ssim-queries",
        "2",
        "--timing-refs",
        "50",
        "--repeats",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert mod.main(args) == 0
    doc = json.loads((tmp_path / "bench_index.json").read_text())
    assert [r["method"] for r in doc["rows"]] == list(METHODS)
    assert all(0 <= r["precision_at_1"] <= 1 and r["timing_refs"] == 50 for r in doc["rows"])
    assert (tmp_path / "bench_index.png").stat().st_size > 0
