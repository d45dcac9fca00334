"""Training, metrics, checkpoints and their CLIs (rate-accuracy's included), on tiny models and data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from splitnet.cli.main import main
from splitnet.data import open_dataset
from splitnet.models import create_model
from splitnet.train import (
    DiceMeter,
    Normalize,
    TopKMeter,
    TrainConfig,
    dice_scores,
    evaluate,
    last_path,
    load_checkpoint,
    make_loss,
    model_from_checkpoint,
    train,
)

TINY = "synthetic:n=10,seed=1"
TINY_INPUT = (3, 64, 64)
TINY_KW = {"width": 0.125}

# ---- metrics --------------------------------------------------------------------------------


def test_dice_convention():
    z = torch.zeros(1, 1, 4, 4)
    one = z.clone()
    one[..., :2, :2] = 1
    assert dice_scores(z, z).item() == 1.0  # empty prediction on an empty mask
    assert dice_scores(z, one).item() == 0.0  # missed a defect
    assert dice_scores(one, z).item() == 0.0  # a false alarm
    assert dice_scores(one, one).item() == 1.0
    half = z.clone()
    half[..., :1, :2] = 1  # 2 of the 4 pixels: dice = 2*2 / (2+4)
    assert dice_scores(half, one).item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="N x C x H x W"):
        dice_scores(z[0], z[0])


def test_dice_meter_averages_image_class_pairs():
    pred = torch.zeros(2, 2, 4, 4)
    target = torch.zeros(2, 2, 4, 4)
    target[0, 0, 0, 0] = 1  # image 0 class 0: missed -> 0; the other three pairs empty -> 1
    m = DiceMeter(2)
    m.update(pred[:1], target[:1])
    m.update(pred[1:], target[1:])
    out = m.compute()
    assert out["dice_per_class"] == [0.5, 1.0] and out["mean_dice"] == 0.75


def test_topk_meter():
    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, 2.0, 1.0]])
    m = TopKMeter(3)
    m.update(logits, torch.tensor([2, 1]))
    assert m.compute() == {"top1": 0.5, "top5": 1.0}


# ---- training -------------------------------------------------------------------------------


def test_a_few_steps_reduce_the_loss():
    ds = open_dataset(TINY, subset="train", size=(32, 64))
    x = torch.stack([ds[i][0] for i in range(4)])
    y = torch.stack([ds[i][1] for i in range(4)])
    model = create_model("unet-vgg16", **TINY_KW).train()
    xn = Normalize(model.splitnet_info)(x)
    loss_fn = make_loss("segmentation")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = loss_fn(model(xn), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < 0.97 * losses[0], losses


def _train(tmp_path, epochs=2, resume=False, name="m.pt"):
    return train(
        TrainConfig(
            model="unet-vgg16",
            data=TINY,
            out=str(tmp_path / name),
            epochs=epochs,
            batch=4,
            input_shape=TINY_INPUT,
            model_kwargs=TINY_KW,
            resume=resume,
            progress=False,
        )
    )


def test_train_keeps_best_and_resumes_exactly(tmp_path):
    full = _train(tmp_path / "a", epochs=2)
    assert [h["epoch"] for h in full.history] == [1, 2]
    best = load_checkpoint(tmp_path / "a" / "m.pt")
    assert best["model"] == "unet-vgg16" and best["model_kwargs"] == TINY_KW
    assert best["epoch"] == full.best_epoch and best["best_metric"] == full.best_metric
    assert full.best_metric == max(h["mean_dice"] for h in full.history)
    assert "optimizer" in load_checkpoint(last_path(tmp_path / "a" / "m.pt"))

    _train(tmp_path / "b", epochs=1)
    resumed = _train(tmp_path / "b", epochs=2, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    a = load_checkpoint(last_path(tmp_path / "a" / "m.pt"))["state_dict"]
    b = load_checkpoint(last_path(tmp_path / "b" / "m.pt"))["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # resuming changes nothing

    model, ckpt = model_from_checkpoint("unet-vgg16", tmp_path / "a" / "m.pt")
    val = open_dataset(TINY, subset="val", size=TINY_INPUT[1:])
    assert evaluate(model, val)["mean_dice"] == pytest.approx(ckpt["best_metric"])
    with pytest.raises(ValueError, match="not fcn8s-vgg16"):
        model_from_checkpoint("fcn8s-vgg16", tmp_path / "a" / "m.pt")
    with pytest.raises(ValueError, match="already has 2 epochs"):
        _train(tmp_path / "a", epochs=2, resume=True)


def test_train_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError, match="multiples of 32"):
        train(TrainConfig("unet-vgg16", TINY, str(tmp_path / "m.pt"), input_shape=(3, 50, 64)))
    with pytest.raises(ValueError, match="classification model but"):
        train(TrainConfig("resnet18", TINY, str(tmp_path / "m.pt"), input_shape=(3, 32, 32)))


# ---- rate-accuracy --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    _train(path, epochs=1)
    return path / "m.pt"


# ---- CLI ------------------------------------------------------------------------------------


def test_cli_train_evaluate_rate_accuracy(tmp_path, capsys):
    out = tmp_path / "m.pt"
    argv = ["train", "unet-vgg16", "--data", TINY, "--epochs", "1", "--input", "3x64x64"]
    assert main([*argv, "--width", "0.125", "--out", str(out), "--quiet"]) == 0
    assert "best mean_dice" in capsys.readouterr().out
    assert main(["evaluate", "unet-vgg16", "--weights", str(out), "--data", TINY, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["subset"] == "val" and len(doc["dice_per_class"]) == 4 and doc["images"] == 2
    ra = tmp_path / "ra"
    argv = ["rate-accuracy", "unet-vgg16", "--weights", str(out), "--data", TINY]
    argv += ["--points", "encoder.block3.pool", "--codecs", "q4", "--jpeg", "75", "--quiet"]
    assert main([*argv, "--entropy", "ans", "--calibrate", "2", "--out", str(ra)]) == 0
    assert "| encoder.block3.pool |" in capsys.readouterr().out
    saved = json.loads((ra / "results.json").read_text())
    assert saved["codec_options"] == {"entropy": "ans"} and saved["calibrate"] == 2
    assert (ra / "table.md").is_file() and (ra / "rate_accuracy.png").is_file()


def test_cli_classification_on_a_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for label, level in (("dark", 40), ("light", 200)):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(5):
            a = np.clip(rng.normal(level, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(tmp_path / "imgs" / label / f"{i}.png")
    data = f"folder:{tmp_path / 'imgs'}"
    out = tmp_path / "c.pt"
    argv = ["train", "resnet18", "--data", data, "--epochs", "1", "--input", "3x32x32"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "resnet18", "--weights", str(out), "--data", data, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["images"] == 3 and 0 <= doc["top1"] <= doc["top5"] == 1.0  # 2 classes


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "unet-vgg16", "--weights", "/nope.pt", "--data", TINY], "not found"),
        (["train", "unet-vgg16", "--data", "mnist", "--epochs", "1", "--out", "x.pt"], "source"),
        (
            ["train", "unet-vgg16", "--data", "severstal:/nope", "--epochs", "1", "--out", "x"],
            "directory not found: /nope",
        ),
        (["train", "unet-vgg16", "--data", TINY, "--epochs", "0", "--out", "x.pt"], "epochs"),
        (["train", "nonet", "--data", TINY, "--epochs", "1", "--out", "x.pt"], "unknown model"),
    ],
)
def test_cli_bad_input_exits_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_cli_bad_weights_and_codec(tmp_path, capsys, tiny_checkpoint):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["evaluate", "unet-vgg16", "--weights", str(bad), "--data", TINY]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err
    argv = ["rate-accuracy", "unet-vgg16", "--weights", str(tiny_checkpoint), "--data", TINY]
    assert main([*argv, "--codecs", "q99", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "unknown codec 'q99'" in capsys.readouterr().err
    assert main([*argv, "--points", "decoder.nope", "--quiet", "--out", str(tmp_path)]) == 2
    assert "no split point named" in capsys.readouterr().err


def test_training_stops_on_a_plateau(tmp_path):
    def run(**kw):
        config = TrainConfig(
            "unet-vgg16",
            TINY,
            str(tmp_path / "m.pt"),
            epochs=6,
            batch=4,
            lr=1e-5,  # the tiny model's Dice does not move: a plateau from epoch 1
            input_shape=TINY_INPUT,
            model_kwargs=TINY_KW,
            progress=False,
            **kw,
        )
        return train(config)

    early = run(patience=1)
    assert len(early.history) == early.best_epoch + 1 < 6
    late = run(patience=1, min_epochs=4)
    assert late.best_epoch < 4 and len(late.history) == 4
    assert run().history[-1]["epoch"] == 6
    with pytest.raises(ValueError, match="patience must be >= 1"):
        run(patience=0)


def test_a_tiny_classifier_learns_the_parts_above_chance():
    torch.manual_seed(0)
    spec = "parts:n=900,size=32,val=0.25"
    train_set, val_set = open_dataset(spec, subset="train"), open_dataset(spec, subset="val")
    x, y = (
        torch.stack(t) for t in zip(*(train_set[i] for i in range(len(train_set))), strict=True)
    )
    xv, yv = (torch.stack(t) for t in zip(*(val_set[i] for i in range(len(val_set))), strict=True))

    def block(cin, cout):
        return [torch.nn.Conv2d(cin, cout, 3, 2, 1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]

    model = torch.nn.Sequential(
        *block(3, 16),
        *block(16, 32),
        *block(32, 32),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 6),
    )
    loss_fn = make_loss("classification")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):  # epochs of 23 batches
        for i in range(0, len(x), 30):
            loss = loss_fn(model(x[i : i + 30] - 0.5), y[i : i + 30])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        top1 = (model.eval()(xv - 0.5).argmax(1) == yv).float().mean().item()
    assert top1 > 1.5 / 6, top1  # chance is 1/6 on the held-out images
