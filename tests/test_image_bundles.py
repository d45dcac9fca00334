"""The planner's baselines as bundles: the image sent as PNG/JPEG to the whole model on the
server, and the whole model on the device with no server."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
from _serve_helpers import run_with_server

from splitnet.codec import CodecError, get_codec

SHAPE = (3, 32, 64)
ARGS = {"width": 0.125}


# ---- the image codecs ----------------------------------------------------------------------


def _frame(seed: int = 0, gray: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if gray:
        g = rng.integers(0, 256, size=(32, 64, 1), dtype=np.uint8)
        return np.repeat(g, 3, axis=2)
    return rng.integers(0, 256, size=(32, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("gray", [False, True])
def test_png_round_trips_a_frame_exactly(gray):
    codec = get_codec("png")
    frame = _frame(gray=gray)
    (out,) = codec.decode(codec.encode([frame[None]]))
    assert out.shape == (1, 32, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(out[0], frame)


def test_a_gray_frame_goes_as_one_channel_as_the_rate_accuracy_baseline_measures_it():
    """The bytes the planner reads (rate-accuracy's image baseline: one channel for a
    grayscale frame) are the bytes an image bundle sends."""
    from splitnet.profile import code_image

    frame = _frame(gray=True)
    sent = get_codec("png").encode([frame[None]])
    assert sent == code_image(frame[:, :, 0], "png")[1]
    assert len(sent) < len(get_codec("png").encode([_frame()[None]]))


def test_jpeg_quality_is_an_option_and_lossy():
    frame = _frame(gray=True)
    hi, lo = get_codec("jpeg", quality=95), get_codec("jpeg", quality=10)
    assert hi.config() == {"name": "jpeg", "quality": 95}
    assert get_codec(**hi.config()) == hi
    assert len(lo.encode([frame])) < len(hi.encode([frame]))
    (out,) = hi.decode(hi.encode([frame]))
    assert out.shape == (1, 32, 64, 3) and not np.array_equal(out[0], frame)
    with pytest.raises(CodecError, match="quality"):
        get_codec("jpeg", quality=0)
    with pytest.raises(CodecError, match="no option"):
        get_codec("png", level=3)


def test_image_codec_refuses_what_is_not_a_frame():
    codec = get_codec("png")
    with pytest.raises(CodecError, match="uint8"):
        codec.encode([np.zeros((1, 32, 64, 3), np.float32)])
    with pytest.raises(CodecError, match="one frame"):
        codec.encode([_frame(), _frame()])


def test_a_corrupted_or_truncated_image_is_a_codec_error():
    codec = get_codec("png")
    payload = codec.encode([_frame()])
    bad = bytearray(payload)
    bad[len(bad) // 2] ^= 0xFF  # a flipped byte in the compressed samples: PNG's CRC
    for p in (bytes(bad), payload[: len(payload) // 2], b"", b"not an image at all"):
        with pytest.raises(CodecError):
            codec.decode(p)
    jpeg = get_codec("jpeg").encode([_frame()])
    with pytest.raises(CodecError):  # a PNG codec takes PNG only
        codec.decode(jpeg)


def test_decode_refuses_an_image_larger_than_the_bundle_before_decompressing_it():
    """A tiny file that declares a huge image (a decompression bomb) is refused from its
    header: no sample is decompressed."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buf, format="PNG")  # 9 M samples in ~9 kB of zlib
    codec = get_codec("png")
    with pytest.raises(CodecError, match="exceeds the limit of 6144 samples"):
        codec.decode(buf.getvalue(), max_elements=32 * 64 * 3)
    # the frame itself is within the bundle's limit
    assert codec.decode(codec.encode([_frame()]), max_elements=32 * 64 * 3)[0].shape[1:3] == (
        32,
        64,
    )


# ---- bundles -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def whole_bundles(tmp_path_factory):
    """An image (PNG) bundle, a JPEG one and a device-only one of the same small U-Net."""
    from splitnet.export import export_whole

    root = tmp_path_factory.mktemp("whole")
    kw = {"input_shape": SHAPE, "model_args": ARGS, "parity_frames": 1}
    png = export_whole("unet-vgg16", out_dir=root / "repo" / "png", mode="image", **kw)
    jpeg = export_whole(
        "unet-vgg16", out_dir=root / "repo" / "jpeg", mode="image", image_codec="jpeg:80", **kw
    )
    dev = export_whole("unet-vgg16", out_dir=root / "dev", mode="device-only", **kw)
    return root, png, jpeg, dev


def test_export_whole_writes_the_two_baselines(whole_bundles):
    from splitnet.bundle import read_manifest

    root, png, jpeg, dev = whole_bundles
    assert png.manifest.name == "unet-vgg16.image-png" and png.manifest.mode == "image"
    assert jpeg.manifest.name == "unet-vgg16.image-jpeg80"
    assert jpeg.manifest.codec["options"] == {"quality": 80}
    assert set(png.manifest.files) == {"tail.pt2"}  # no head: nothing runs on the device
    assert dev.manifest.mode == "device-only" and set(dev.manifest.files) == {
        "head.xml",
        "head.bin",
    }
    assert [t.shape for t in dev.manifest.crossing] == [(1, 4, 32, 64)]
    # the tail's normalisation is the model's (checked at export against the model)
    assert png.parity.max_rel < 1e-4
    for d in (root / "repo" / "png", root / "dev"):
        assert read_manifest(d).mode in ("image", "device-only")  # mode survives the file


def test_image_tail_is_the_model_on_the_frame_normalised_as_in_training(tmp_path):
    """The server's tail on the decoded frame is the whole model after training's
    normalisation, ``(x / 255 - mean) / std`` in NCHW, computed here by hand."""
    import torch

    from splitnet.bundle import load_tail
    from splitnet.export import export_whole
    from splitnet.models import create_model

    model = create_model("unet-vgg16", **ARGS).eval()
    export_whole(model, input_shape=SHAPE, out_dir=tmp_path / "b", mode="image", parity_frames=1)
    tail = load_tail(tmp_path / "b")
    frame = _frame(3)
    info = model.splitnet_info
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model(x)
        got = tail(torch.from_numpy(frame[None]).float())
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4)


def test_server_serves_image_bundles_next_to_a_split_bundle(repository, whole_bundles, tmp_path):
    """Both image bundles and a split bundle in one repository; the daemon streams frames
    as PNG/JPEG on the usual wire and gets masks back."""
    import shutil

    from splitnet.device import DaemonConfig, DeviceDaemon
    from splitnet.server import load_repository

    root, png, jpeg, _ = whole_bundles
    repo = tmp_path / "repo"
    shutil.copytree(root / "repo", repo)
    shutil.copytree(repository / "unet", repo / "unet")
    shutil.copytree(root / "dev", repo / "dev")  # device-only: skipped by the server
    models = load_repository(repo)
    assert set(models) == {png.manifest.name, jpeg.manifest.name, "unet-vgg16.encoder.block3.pool"}

    async def body(server, port):
        out = {}
        for name in ("png", "jpeg"):
            cfg = DaemonConfig(
                bundle=repo / name,
                servers=(f"127.0.0.1:{port}",),
                frames=6,
                out=tmp_path / f"out-{name}",
                window=2,
            )
            out[name] = await DeviceDaemon(cfg).run()
        return out

    summaries = run_with_server(repo, models, body)
    for name, s in summaries.items():
        assert (s.frames_sent, s.ok, s.failed) == (6, 6, 0), (name, s.errors)
        assert len(list((tmp_path / f"out-{name}").glob("*.png"))) == 6
    # the PNG's bytes are the frame's PNG: the daemon sent the image, not a tensor
    assert summaries["png"].payload_bytes_mean > summaries["jpeg"].payload_bytes_mean


def test_server_answers_a_corrupted_image_with_invalid_argument(whole_bundles):
    """A corrupted image is the client's error (INVALID_ARGUMENT), and the server goes on."""
    import grpc

    from splitnet.server import InferenceCore, InferError, load_repository
    from splitnet.wire import make_infer_request

    root, png, _, _ = whole_bundles
    models = load_repository(root / "repo")
    name = png.manifest.name
    good = get_codec("png").encode([_frame()])

    async def main():
        core = InferenceCore(models)
        try:
            codes = []
            for payload in (good[:-20], b"\x89PNG\r\n\x1a\n" + bytes(40), good):
                request = make_infer_request(name, payload)
                try:
                    await core.infer(request)
                    codes.append(grpc.StatusCode.OK)
                except InferError as e:
                    codes.append(e.code)
            return codes
        finally:
            await core.close()

    assert asyncio.run(main()) == [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OK,
    ]


def test_device_only_bundle_runs_without_a_server(whole_bundles, tmp_path):
    """No --server: the daemon runs the whole model and writes the masks the server would
    have answered, and summary.json with FPS and latency."""
    import torch

    from splitnet.cli import main
    from splitnet.device import HeadRunner, postprocess

    root, _, _, dev = whole_bundles
    out = tmp_path / "out"
    assert main(["device", "--bundle", str(root / "dev"), "--frames", "4", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == 4 and summary["frames_sent"] == 0 and summary["fps"] > 0
    assert 0 < summary["head_ms_mean"] <= summary["latency_mean_ms"]
    assert len(list(out.glob("*.png"))) == 4
    # the mask is the argmax of the model's logits, as the server's TailModel computes it
    runner = HeadRunner(root / "dev")
    frame = _frame(1)
    (logits,) = runner(frame)
    got = postprocess(dev.manifest, logits, probabilities=True)
    assert dev.manifest.output.multilabel  # the steel U-Net: one sigmoid per defect class
    p = torch.from_numpy(logits).sigmoid()
    best, idx = p.max(1)
    ref = torch.where(best >= 0.5, idx + 1, torch.zeros_like(idx))[0]
    assert np.array_equal(got["mask"], ref.numpy().astype(np.uint8))
    assert np.allclose(got["probabilities"], p[0].numpy(), atol=1e-6)


def test_postprocess_matches_the_servers_tail_model_for_softmax_masks_and_classes():
    from types import SimpleNamespace

    import torch

    from splitnet.device import postprocess

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 4, 5, 6)).astype(np.float32)
    m = SimpleNamespace(task="segmentation", output=SimpleNamespace(multilabel=False))
    got = postprocess(m, logits, probabilities=True)
    p = torch.from_numpy(logits).softmax(1)
    assert np.array_equal(got["mask"], p.argmax(1)[0].numpy().astype(np.uint8))
    assert np.allclose(got["probabilities"], p[0].numpy(), atol=1e-6)
    c = SimpleNamespace(task="classification", output=SimpleNamespace(multilabel=False))
    z = rng.normal(size=(1, 10)).astype(np.float32)
    res = postprocess(c, z, top_k=3)
    top_p, top_i = torch.from_numpy(z).softmax(1).topk(3)
    assert np.array_equal(res["classes"], top_i[0].numpy())
    assert np.allclose(res["probabilities"], top_p[0].numpy(), atol=1e-6)


def test_cli_one_line_errors(whole_bundles, tmp_path, capsys):
    from splitnet.cli import main

    root, png, _, _ = whole_bundles
    base = ["export", "unet-vgg16", "--input", "3x32x64", "--model-arg", "width=0.125"]
    assert main([*base, "--whole", "--image-codec", "gif", "--out", str(tmp_path / "a")]) == 2
    assert "--image-codec must be png, jpeg or jpeg:QUALITY" in capsys.readouterr().err
    assert main([*base, "--whole", "--split", "3", "--out", str(tmp_path / "b")]) == 2
    assert "takes no --split" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "c")]) == 2
    assert "--split is required" in capsys.readouterr().err
    # an image bundle needs a server, and has no head to benchmark
    assert main(["device", "--bundle", str(root / "repo" / "png"), "--frames", "1"]) == 2
    assert "missing option(s): --server" in capsys.readouterr().err
    assert main(["bench-head", str(root / "repo" / "png")]) == 2
    assert "is an image bundle: it has no head" in capsys.readouterr().err


def test_device_side_of_image_and_device_only_bundles_runs_without_torch(whole_bundles, tmp_path):
    from _no_torch import run_without_torch

    root, _, _, _ = whole_bundles
    code = """
import numpy as np
from splitnet.cli import main
from splitnet.device import open_head
from splitnet.bundle import read_manifest
rc = main(["device", "--bundle", sys.argv[1], "--frames", "2", "--out", sys.argv[3]])
assert rc == 0, rc
head = open_head(sys.argv[2])
codec = read_manifest(sys.argv[2]).make_codec()
frame = np.zeros((32, 64, 3), np.uint8)
assert codec.decode(codec.encode(head(frame)))[0].shape == (1, 32, 64, 3)
"""
    args = (str(root / "dev"), str(root / "repo" / "jpeg"), str(tmp_path))
    res = run_without_torch(code, args=args)
    assert res.returncode == 0, res.stderr


def test_an_image_of_another_size_than_the_bundle_is_refused_from_its_header():
    """After the merge with the shape-checked decode: the server passes the bundle's shapes."""
    from splitnet.codec import CodecError, get_codec

    codec = get_codec("png")
    payload = codec.encode([np.zeros((1, 8, 12, 3), np.uint8)])
    assert codec.decode(payload, shapes=[(1, 8, 12, 3)])[0].shape == (1, 8, 12, 3)
    with pytest.raises(CodecError, match="png image of 8x12; the bundle takes 16x12"):
        codec.decode(payload, shapes=[(1, 16, 12, 3)])
