"""The learned bottleneck: layout, two-stage training, resume, export, serving, rate-accuracy."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from splitnet.bottleneck import (
    LATENT_POINT,
    BottleneckConfig,
    BottleneckError,
    BottleneckTrainConfig,
    load_bottleneck,
    plan_strides,
    train_bottleneck,
)
from splitnet.cli import main
from splitnet.codec import CodecError, get_codec
from splitnet.data import open_dataset
from splitnet.train import TrainConfig, model_from_checkpoint, train

TINY = "synthetic:n=8,seed=1"
INPUT = (3, 64, 64)
POINT = "encoder.block2.pool"
SHAPE = BottleneckConfig(latent_channels=4, hidden=16)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "t.pt"
    torch.manual_seed(0)
    kw = {"epochs": 1, "batch": 4, "input_shape": INPUT, "model_kwargs": {"width": 0.125}}
    train(TrainConfig("unet-vgg16", TINY, str(path), progress=False, **kw))
    return path


def _config(teacher, out, **kw) -> BottleneckTrainConfig:
    base = dict(beta=0.01, bottleneck=SHAPE, epochs=1, finetune_epochs=1, batch=4, progress=False)
    return BottleneckTrainConfig(str(teacher), POINT, str(out), **{**base, **kw})


@pytest.fixture(scope="module")
def trained(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("bn") / "bn.pt"
    return train_bottleneck(_config(teacher, out))


def test_every_waiting_skip_goes_into_the_latent():
    # unet-vgg16 at pool 2 of a 64x64 frame: block1's skip (64x64), block2's (32x32), the pool
    shapes = [(1, 8, 64, 64), (1, 16, 32, 32), (1, 16, 16, 16)]
    assert plan_strides(shapes, (64, 64), None) == (8, [8, 4, 2])
    assert plan_strides(shapes, (64, 64), 16) == (16, [16, 8, 4])
    with pytest.raises(BottleneckError, match="finer than a crossing tensor"):
        plan_strides(shapes, (64, 64), 2)
    with pytest.raises(BottleneckError, match="N x C x H x W"):
        plan_strides([(1, 10)], (64, 64), None)


def test_two_stages_and_a_checkpoint_that_rebuilds(trained, teacher):
    assert [(h["stage"], h["epoch"]) for h in trained.history] == [(1, 1), (2, 1)]
    bn, state = load_bottleneck(trained.path, model="unet-vgg16", split=POINT, input_shape=INPUT)
    assert state["split"] == POINT and state["crossing"] == [
        [1, 8, 64, 64],
        [1, 16, 32, 32],
        [1, 16, 16, 16],
    ]
    # the head is the teacher's, unchanged; the rebuilt model scores what training reported
    from splitnet.split import trace

    t, _ = model_from_checkpoint(None, teacher)
    x = torch.rand(1, *INPUT)
    head, _ = trace(t, x).split(POINT)
    assert all(torch.equal(a, b) for a, b in zip(head(x), bn.head(x), strict=True))
    val = open_dataset(TINY, subset="val", size=INPUT[1:])
    from splitnet.train import evaluate

    assert evaluate(bn, val)["mean_dice"] == pytest.approx(trained.scores["mean_dice"])


def test_real_bytes_through_the_learned_codec(trained):
    bn, state = load_bottleneck(trained.path)
    codec = get_codec("learned", tables=state["tables"])
    x = torch.rand(1, *INPUT)
    with torch.no_grad():
        latent = bn.encoder(*bn.head(x))
        rounded = bn.prior(latent)[0]
        payload = codec.encode([latent.numpy()])
        (decoded,) = codec.decode(payload)
        estimate = float(bn.prior.bits(latent)) / 8
    assert decoded.shape == (1, 4, 8, 8)
    clamped = codec.count_clamped(latent.numpy())
    assert clamped <= 2 and np.count_nonzero(decoded != rounded.numpy()) <= clamped
    assert len(payload) <= estimate * 1.02 + 64  # the header: preamble, shape, fingerprint, CRC


def test_resume_continues_where_it_stopped(trained, teacher, tmp_path):
    import shutil
    from pathlib import Path

    from splitnet.train._checkpoint import last_path

    # ``trained`` stopped after one fine-tuning epoch; resume it for a second one
    shutil.copy(last_path(trained.path), last_path(tmp_path / "b.pt"))
    resumed = train_bottleneck(_config(teacher, tmp_path / "b.pt", finetune_epochs=2, resume=True))
    assert [(h["stage"], h["epoch"]) for h in resumed.history] == [(1, 1), (2, 1), (2, 2)]
    assert resumed.history[:2] == trained.history and Path(resumed.path).is_file()
    torch.manual_seed(0)
    full = train_bottleneck(_config(teacher, tmp_path / "a.pt", finetune_epochs=2))
    assert resumed.history[-1]["loss"] == pytest.approx(full.history[-1]["loss"], rel=1e-4)
    with pytest.raises(BottleneckError, match="was trained with split"):
        other = _config(teacher, tmp_path / "b.pt", resume=True)
        train_bottleneck(dataclasses.replace(other, split="encoder.block3.pool"))


def test_a_checkpoint_for_something_else_names_the_mismatch(trained):
    with pytest.raises(BottleneckError, match="for model 'unet-vgg16', not 'fcn8s-vgg16'"):
        load_bottleneck(trained.path, model="fcn8s-vgg16")
    with pytest.raises(BottleneckError, match="for split 'encoder.block2.pool'"):
        load_bottleneck(trained.path, split="encoder.block3.pool")
    with pytest.raises(BottleneckError, match=r"for input_shape \(3, 64, 64\)"):
        load_bottleneck(trained.path, input_shape=(3, 64, 128))


@pytest.mark.parametrize("beta", ["0", "-1", "0.01,0"])
def test_cli_beta_must_be_positive(teacher, tmp_path, capsys, beta):
    argv = ["train-bottleneck", str(teacher), "--split", POINT, "--beta", beta]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--beta must be" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(BottleneckError, match="beta must be > 0"):
        BottleneckTrainConfig("t.pt", POINT, "o.pt", beta=0.0)


def test_cli_trains_a_beta_sweep(teacher, tmp_path, capsys):
    argv = ["train-bottleneck", str(teacher), "--split", POINT, "--beta", "0.01,0.1"]
    argv += ["--epochs", "1", "--finetune-epochs", "0", "--latent-channels", "2", "--quiet"]
    assert main([*argv, "--hidden", "8", "--batch", "4", "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["beta"] for r in rows] == [0.01, 0.1]
    assert all((tmp_path / f"beta-{b:g}.pt").is_file() for b in (0.01, 0.1))


@pytest.mark.export
def test_export_serve_and_rate_accuracy(trained, teacher, tmp_path):
    from splitnet.device import HeadRunner
    from splitnet.export import export_bundle
    from splitnet.profile import RateAccuracyConfig, rate_accuracy
    from splitnet.server import FrameInput, TailModel

    result = export_bundle(
        "unet-vgg16",
        input_shape=INPUT,
        split=POINT,
        out_dir=tmp_path / "bundle",
        target="myriad",
        bottleneck=trained.path,
    )
    m = result.manifest
    assert result.parity.ok and m.codec["name"] == "learned"
    assert [t.name for t in m.crossing] == [LATENT_POINT] and m.crossing[0].shape == (1, 4, 8, 8)
    assert m.split["name"] == POINT and m.split["bottleneck"]["latent_channels"] == 4
    # the device side: head IR -> learned codec; the server: the bundle's codec -> tail
    frame = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    payload = m.make_codec().encode(HeadRunner(tmp_path / "bundle")(frame))
    tail = TailModel(tmp_path / "bundle")
    (out,) = tail.run_batch([FrameInput(tail.check(tail.codec.decode(payload)))])
    assert out["mask"].shape == (64, 64)
    with pytest.raises(CodecError, match="bundle's codec"):
        from splitnet.codec import decode

        decode(payload)
    with pytest.raises(BottleneckError, match="for split"):
        export_bundle(
            "unet-vgg16",
            input_shape=INPUT,
            split="encoder.block3.pool",
            out_dir=tmp_path / "other",
            bottleneck=trained.path,
        )

    model, _ = model_from_checkpoint(None, teacher)
    val = open_dataset(TINY, subset="val", size=INPUT[1:])
    cfg = RateAccuracyConfig(
        points=(POINT,),
        codecs=("q4",),
        png=False,
        jpeg_qualities=(),
        progress=False,
        bottlenecks=(trained.path,),
    )
    report = rate_accuracy(model, val, cfg)
    (point,) = report.points
    assert [r.codec for r in point.results] == ["q4", "learned-beta0.01"]
    learned = point.results[1].score
    assert learned.value == pytest.approx(trained.scores["mean_dice"])
    assert learned.kb_per_frame < point.results[0].score.kb_per_frame
    assert "learned-beta0.01" in report.format_table()


def test_encoder_adds_little_to_the_head(trained):
    from splitnet.bottleneck import bottleneck_macs

    bn, _ = load_bottleneck(trained.path)
    macs = bottleneck_macs(bn, INPUT)
    # block1 (two 3x3 convs at 64x64) + block2 at 32x32, width 0.125: counted by hand
    head = 64 * 64 * 9 * (3 * 8 + 8 * 8) + 32 * 32 * 9 * (8 * 16 + 16 * 16)
    assert macs["head_macs"] == head
    # the pyramid encoder (hidden 16, latent 4 at 1/8): 2x2 steps 8->8 at 32x32,
    # 8+16->8 at 16x16, 8+16->16 at 8x8, then a 3x3 16->16 and a 1x1 16->4
    encoder = (
        32 * 32 * 8 * 8 * 4 + 16 * 16 * 24 * 8 * 4 + 8 * 8 * (24 * 16 * 4 + 9 * 16 * 16 + 16 * 4)
    )
    assert macs["encoder_macs"] == encoder


@pytest.mark.parametrize(
    ("point", "hidden"), [("encoder.block1.pool", 16), ("encoder.block2.pool", 32)]
)
def test_the_studys_encoders_add_under_ten_percent(point, hidden):
    """The issue's bound, at the steel study's shapes (experiments/configs/steel_bottleneck.yaml)."""
    from splitnet.bottleneck import bottleneck_macs, build_bottleneck
    from splitnet.models import create_model

    model = create_model("unet-vgg16", num_classes=4, width=0.25)
    shape = (3, 64, 384)
    x = torch.zeros(1, *shape)
    bn, _ = build_bottleneck(
        model,
        point,
        shape,
        BottleneckConfig(16, hidden=hidden),
        calibration=[(x, None)],
        normalize=lambda t: t,
    )
    assert 0 < bottleneck_macs(bn, shape)["encoder_share"] < 0.10


def test_quantiles_are_settled_before_the_tables_are_cut():
    """Regression: quantiles stepped once per batch stayed near their start (+-10) while the
    latent spread over hundreds, so the tables clamped ~80% of a real latent."""
    from splitnet.bottleneck import FactorizedPrior
    from splitnet.bottleneck._train import settle_quantiles

    torch.manual_seed(0)
    prior = FactorizedPrior(2)
    y = torch.randn(64, 2, 4, 4) * 200
    opt = torch.optim.Adam([p for n, p in prior.named_parameters() if n != "quantiles"], lr=0.05)
    for _ in range(150):  # the density learns the spread; the quantiles are not trained
        opt.zero_grad()
        (-torch.log2(prior(y)[1]).sum()).backward()
        opt.step()
    prior.eval()
    clamped = get_codec("learned", tables=prior.cdf_tables()).count_clamped(y.numpy())
    assert clamped > 0.5 * y.numel()
    settle_quantiles(prior)
    codec = get_codec("learned", tables=prior.cdf_tables())
    assert codec.count_clamped(y.numpy()) <= 0.01 * y.numel()


def test_stage_one_leaves_the_teachers_tail_as_it_was(teacher, tmp_path):
    # stage 1 runs the tail (output distillation) but must not train it: its weights and
    # batch-norm statistics stay the teacher's
    result = train_bottleneck(_config(teacher, tmp_path / "s1.pt", finetune_epochs=0))
    state = torch.load(result.path, weights_only=False)
    from splitnet.split import trace

    teacher_model, _ = model_from_checkpoint(None, teacher)
    _, tail = trace(teacher_model, torch.zeros(1, *INPUT)).split(POINT)
    tuned = state["tail"]
    assert any("running_mean" in k for k in tuned)
    assert all(torch.equal(v, tuned[k]) for k, v in tail.state_dict().items())


def test_output_distillation_is_smallest_at_the_teachers_output():
    from splitnet.bottleneck._train import cosine_lr, output_distillation

    torch.manual_seed(0)
    teacher_out = torch.randn(2, 4, 8, 8)
    for task in ("segmentation", "classification"):
        student = teacher_out.clone().requires_grad_(True)
        loss = output_distillation(student, teacher_out, task)
        loss.backward()
        assert student.grad.abs().max() < 1e-6
        worse = output_distillation(teacher_out + torch.randn_like(teacher_out), teacher_out, task)
        assert worse > loss
    assert (
        output_distillation(teacher_out[:, :, 0, 0], teacher_out[:, :, 0, 0], "classification") == 0
    )
    assert cosine_lr(1e-3, 1, 10) == pytest.approx(1e-3)
    assert cosine_lr(1e-3, 10, 10) == pytest.approx(5e-5)
    assert cosine_lr(1e-3, 1, 1) == pytest.approx(1e-3)


def test_kd_weight_must_not_be_negative(teacher, tmp_path):
    with pytest.raises(BottleneckError, match="--kd-weight must be >= 0"):
        _config(teacher, tmp_path / "x.pt", kd_weight=-1)


def test_a_slim_checkpoint_scores_as_the_full_one(trained, tmp_path):
    import os

    from splitnet.bottleneck import slim_bottleneck
    from splitnet.train import evaluate

    slim = slim_bottleneck(trained.path, tmp_path / "slim.pt")
    assert os.path.getsize(slim) < 0.5 * os.path.getsize(trained.path)
    full_bn, _ = load_bottleneck(trained.path)
    slim_bn, state = load_bottleneck(slim, split=POINT)
    assert "tail" not in state and state["slim"]
    x = torch.rand(2, *INPUT)
    with torch.no_grad():
        a, b = full_bn(x), slim_bn(x)
    assert torch.allclose(a, b, atol=2e-2 * float(a.abs().max()))  # float16 teacher weights
    val = open_dataset(TINY, subset="val", size=INPUT[1:])
    assert evaluate(slim_bn, val)["mean_dice"] == pytest.approx(
        trained.scores["mean_dice"], abs=0.02
    )
    with pytest.raises(BottleneckError, match="not a finished bottleneck"):
        from splitnet.train._checkpoint import last_path

        slim_bottleneck(last_path(trained.path), tmp_path / "x.pt")


@pytest.mark.export
def test_demo_streams_a_trained_bottleneck_and_writes_overlays(trained, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "demo"
    argv = ["demo", "--checkpoint", trained.path, "--frames", "6", "--overlays", "2"]
    assert main([*argv, "--out", str(out), "--workdir", str(tmp_path / "cache")]) == 0
    text = capsys.readouterr().out
    assert "6 ok" in text or "ok 6" in text or "6/6" in text, text
    assert "mean Dice" in text and "as JPEG q95" in text
    overlays = sorted(out.glob("overlay-*.png"))
    assert 1 <= len(overlays) <= 2 and all(str(p) in text for p in overlays)
    with Image.open(overlays[0]) as im:
        assert im.size == (INPUT[2], 2 * INPUT[1] + 2)  # truth above prediction
    assert len(list((out / "results").glob("*.npy"))) == 6
    # a second run takes the cached bundle
    assert main([*argv, "--out", str(out), "--workdir", str(tmp_path / "cache")]) == 0
    assert "(cached)" in capsys.readouterr().out


def test_demo_without_a_checkpoint_says_how_to_get_one(tmp_path, capsys):
    assert main(["demo", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err
    assert (
        "no demo checkpoint" in err and "--untrained" in err and len(err.strip().splitlines()) == 1
    )


def test_slim_keeps_large_batch_norm_statistics_exact(trained, tmp_path):
    # a tuned tail's running variance reached 7e16 in the steel study: float16 made it inf
    from splitnet.bottleneck import slim_bottleneck

    state = torch.load(trained.path, weights_only=False)
    key = next(k for k in state["tail"] if k.endswith("running_var"))
    state["tail"][key] = state["tail"][key] * 1e12
    torch.save(state, tmp_path / "big.pt")
    slim = torch.load(
        slim_bottleneck(tmp_path / "big.pt", tmp_path / "slim.pt"), weights_only=False
    )
    kept = slim["teacher_state"][key]
    assert torch.isfinite(kept).all() and torch.allclose(kept.float(), state["tail"][key])


def test_pyramid_decoder_emits_each_tensor_at_its_scale_and_mixes_neighbours():
    from splitnet.bottleneck import Decoder, PyramidDecoder

    channels, factors = [16, 32, 32], [8, 4, 2]
    shape = BottleneckConfig(latent_channels=4, hidden=16, decoder_hidden=32)
    torch.manual_seed(0)
    latent = torch.randn(1, 4, 4, 6)
    moved = latent.clone()
    moved[0, :, 1, 1] += 5.0  # one latent cell
    reach = {}
    for cls in (PyramidDecoder, Decoder):
        dec = cls(channels, factors, [True, False, True], shape).eval()
        with torch.no_grad():
            out, out2 = dec(latent), dec(moved)
        assert [tuple(t.shape) for t in out] == [(1, 16, 32, 48), (1, 32, 16, 24), (1, 32, 8, 12)]
        assert (out[0] >= 0).all() and (out[2] >= 0).all()
        changed = (out[0] != out2[0]).any(1)[0].nonzero()
        reach[cls] = int(changed[:, 0].max())  # the last full-resolution row it reaches
    # a branch's 2x2 transposed convolutions do not mix cells: only its stem and the two
    # full-resolution convolutions do (rows 0-23, +2); the pyramid mixes at every scale
    assert reach[Decoder] == 25
    assert reach[PyramidDecoder] == 31  # the last row: the whole height


def test_pyramid_encoder_takes_each_tensor_in_at_its_scale():
    from splitnet.bottleneck import PyramidEncoder

    # a U-Net cut at pool 2 (64x96 input): the full-resolution skip, the half-resolution
    # skip and the pool output, coded at 1/8
    shapes = [(1, 16, 64, 96), (1, 32, 32, 48), (1, 32, 16, 24)]
    enc = PyramidEncoder([16, 32, 32], [8, 4, 2], BottleneckConfig(latent_channels=6, hidden=32))
    tensors = [torch.randn(s) for s in shapes]
    assert enc(*tensors).shape == (1, 6, 8, 12)
    # every tensor reaches the latent
    for k in range(3):
        moved = [t.clone() for t in tensors]
        moved[k] += 1.0
        assert not torch.equal(enc(*tensors), enc(*moved))
    assert [d[0].in_channels for d in enc.downs] == [16, 8 + 32, 16 + 32]


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_unknown_design_is_refused(part):
    with pytest.raises(BottleneckError, match=f"unknown {part} 'unet'"):
        BottleneckConfig(**{part: "unet"})


def test_packaged_demo_checkpoint_keeps_its_first_designs():
    from importlib.resources import files

    from splitnet.bottleneck import Decoder, Encoder, read_bottleneck

    asset = files("splitnet") / "assets" / "steel_demo.pt"
    shape = read_bottleneck(asset)["config"]["bottleneck"]
    assert (shape["encoder"], shape["decoder"]) == ("patch", "branches")
    bn, _ = load_bottleneck(asset)
    assert type(bn.encoder) is Encoder and type(bn.decoder) is Decoder
