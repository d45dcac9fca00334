"""Rate-accuracy (splitnet.profile.rate_accuracy) and its typed report, on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from splitnet.codec import decode, get_codec
from splitnet.data import open_dataset
from splitnet.profile import (
    PNG_OPTIONS,
    RateAccuracyConfig,
    RateAccuracyReport,
    code_image,
    image_roundtrip,
    rate_accuracy,
)
from splitnet.split import trace
from splitnet.train import Normalize, evaluate, model_from_checkpoint
from tests import test_train
from tests.test_train import TINY, TINY_INPUT

tiny_checkpoint = test_train.tiny_checkpoint  # the trained tiny model, shared
RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results" / "steel_synthetic"


def test_image_roundtrip_png_is_lossless():
    x = torch.rand(3, 8, 16).mul(255).round().div(255)
    y, size = image_roundtrip(x, "png")
    assert torch.equal(x, y) and size > 0
    gray = x[:1].expand(3, -1, -1)
    y, _ = image_roundtrip(gray, "jpeg", 90)
    assert y.shape == gray.shape and torch.equal(y[0], y[2])


def test_rate_accuracy_through_the_real_codec(tiny_checkpoint):
    model, _ = model_from_checkpoint(None, tiny_checkpoint)
    val = open_dataset(TINY, subset="val", size=TINY_INPUT[1:])
    cfg = RateAccuracyConfig(
        points=("encoder.block2.pool", "encoder.block4.pool"),
        codecs=("q8", "q2"),
        jpeg_qualities=(50,),
        batch=3,  # 2 frames: the last batch is padded
        progress=False,
    )
    doc = rate_accuracy(model, val, cfg).to_dict()
    assert doc["frames"] == 2 and doc["metric"] == "mean_dice" and doc["input"] == [3, 64, 64]
    ref = evaluate(model, val)["mean_dice"]
    assert doc["reference"]["mean_dice"] == pytest.approx(ref)
    assert [p["name"] for p in doc["points"]] == ["encoder.block2.pool", "encoder.block4.pool"]
    png, jpeg = doc["baselines"]
    assert png["name"] == "png" and png["mean_dice"] == pytest.approx(ref)  # lossless
    assert png["drop_points"] == pytest.approx(0, abs=1e-9) and jpeg["name"] == "jpeg50"

    # the measured rate is what the codec produces for each frame's crossing tensors
    g = trace(model, torch.zeros(1, *TINY_INPUT))
    head, _ = g.split("encoder.block2.pool")
    norm = Normalize(model.splitnet_info)
    total, elements = 0, 0
    for i in range(len(val)):
        arrays = [t.detach().numpy() for t in head(norm(val[i][0][None]))]
        payload = get_codec("q2").encode(arrays)
        total += len(payload)
        elements = sum(a.size for a in arrays)
        assert [d.shape for d in decode(payload)] == [a.shape for a in arrays]
    q8, q2 = doc["points"][0]["results"]
    assert q2["codec"] == "q2" and q2["bits_per_element"] == pytest.approx(
        8 * total / (2 * elements)
    )
    assert q2["kb_per_frame"] == pytest.approx(total / 2 / 1000)
    assert doc["points"][0]["elements"] == elements
    assert q8["bits_per_element"] > q2["bits_per_element"]
    assert abs(q8["drop_points"]) <= 1.0  # 8 bits barely changes the masks
    for r in (q8, q2):
        assert r["drop_points"] == pytest.approx(100 * (ref - r["mean_dice"]))
    # the codec's own times per frame, what splitnet plan costs encode and decode with
    for r in (q8, q2, png, jpeg):
        assert r["encode_ms"] > 0 and r["decode_ms"] > 0

    report = RateAccuracyReport.from_dict(doc)
    targets = [t.to_dict() for t in report.check_target(max_drop_points=0.5, max_bits=0.0001)]
    assert not any(t["met"] for t in targets) and "lowest rate" in targets[0]["miss"]
    table = report.format_table()
    assert "| encoder.block4.pool |" in table and "| jpeg50 |" in table


def test_write_outputs(tiny_checkpoint, tmp_path):
    model, _ = model_from_checkpoint(None, tiny_checkpoint)
    val = open_dataset(TINY, subset="val", size=TINY_INPUT[1:], channels=3)
    cfg = RateAccuracyConfig(
        points=(2,), codecs=("q4",), png=False, jpeg_qualities=(), progress=False
    )
    report = rate_accuracy(model, val, cfg)
    doc = report.to_dict()
    paths = report.write(tmp_path)
    saved = json.loads(open(paths["json"]).read())
    assert saved["target"]["points"][0]["point"] == doc["points"][0]["name"]
    assert open(paths["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_report_json_round_trip(tiny_checkpoint):
    model, _ = model_from_checkpoint(None, tiny_checkpoint)
    val = open_dataset(TINY, subset="val", size=TINY_INPUT[1:])
    cfg = RateAccuracyConfig(points=("1",), codecs=("q4",), jpeg_qualities=(75,), progress=False)
    report = rate_accuracy(model, val, cfg)
    again = RateAccuracyReport.from_dict(json.loads(report.to_json()))
    assert again == report
    with_target = json.loads(report.to_json(max_drop_points=0.5, max_bits=2.0))
    assert RateAccuracyReport.from_dict(with_target) == report  # target is derived, not kept


@pytest.mark.parametrize("name", ["results.json", "ans_results.json"])
def test_saved_results_stay_readable(name):
    doc = json.loads((RESULTS / name).read_text())
    report = RateAccuracyReport.from_dict(doc)
    target = doc["target"]
    again = report.to_dict(max_drop_points=target["max_drop_points"], max_bits=target["max_bits"])
    assert json.dumps(again) == json.dumps(doc)  # the same layout, key order included
    assert report.provenance == {k: doc[k] for k in ("weights", "data", "split")}
    assert "| raw float32 | 32.000 |" in report.format_table()


def test_one_png_setting_for_every_baseline():
    import numpy as np

    from splitnet.profile import image_baseline

    assert PNG_OPTIONS == {"optimize": True}
    base = image_baseline((1, 32, 48))
    from splitnet.synthetic import make_frame

    decoded, payload = code_image(make_frame(0, 0, 32, 48)[0], "png")
    assert base.png_bytes == len(payload)
    assert np.array_equal(decoded, make_frame(0, 0, 32, 48)[0])


def test_versus_image_names_the_cheapest_within_the_bound():
    report = RateAccuracyReport.from_dict(json.loads((RESULTS / "results.json").read_text()))
    rows = {r["point"]: r for r in report.versus_image(max_drop_points=0.5)}
    pool2 = rows["encoder.block2.pool"]
    point = next(p for p in report.points if p.name == "encoder.block2.pool")
    ok = [r for r in point.results if r.score.drop_points <= 0.5]
    cheapest = min(ok, key=lambda r: r.score.kb_per_frame)
    images = [b for b in report.baselines if b.score.drop_points <= 0.5]
    image = min(images, key=lambda b: b.score.kb_per_frame)
    assert (pool2["codec"], pool2["image"]) == (cheapest.codec, image.name)
    assert pool2["ratio"] == pytest.approx(cheapest.score.kb_per_frame / image.score.kb_per_frame)
    # a bound nothing meets: the closest codec and by how much it misses
    (none, *_) = report.versus_image(max_drop_points=-5.0)
    assert none["codec"] is None and none["ratio"] is None and none["miss"] > 0
    assert none["image"] is None  # even the lossless PNG does not beat the model itself
    assert "none (closest:" in report.format_table(max_drop_points=-5.0)
