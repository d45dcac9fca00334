"""Heatmaps from the server (issue 15): Grad-CAM over a classifier tail's exported graph."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest
import torch
from torch import nn

from splitnet.bundle import read_manifest
from splitnet.export import export_bundle
from splitnet.server import TailModel
from splitnet.server._core import InferenceCore, InferError
from splitnet.wire import make_infer_request, output_arrays


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny") / "b"
    export_bundle(
        _Tiny().eval(), input_shape=(3, 32, 32), split="stem.2", out_dir=out, num_classes=4
    )
    return TailModel(out)


def _infer(model, **kw):
    rng = np.random.default_rng(0)
    tensors = [np.abs(rng.normal(size=t.shape)).astype(np.float32) for t in model.manifest.crossing]
    payload = model.manifest.make_codec().encode(tensors)

    async def main():
        core = InferenceCore({model.name: model})
        try:
            return output_arrays(await core.infer(make_infer_request(model.name, payload, **kw)))
        finally:
            await core.close()

    return asyncio.run(main())


def test_heatmap_is_a_uint8_map_of_the_frame_and_default_outputs_are_unchanged(tiny):
    r = _infer(tiny, outputs=["classes", "heatmap"])
    assert r["heatmap"].shape == (1, 32, 32) and r["heatmap"].dtype == np.uint8
    assert r["heatmap"].max() == 255
    assert sorted(_infer(tiny)) == ["classes", "probabilities", "uncertain"]


def test_the_default_layer_is_the_last_conv_block(tiny):
    from splitnet.server._explain import explainer_of

    assert explainer_of(tiny).default.name == "body.2"  # conv -> bn -> relu


@pytest.mark.parametrize(
    "parameters, message",
    [({"heatmap_layer": "nope"}, "layers: body.0"), ({"heatmap_class": 9}, "heatmap_class")],
)
def test_bad_heatmap_parameters_are_invalid_argument(tiny, parameters, message):
    with pytest.raises(InferError, match=message) as e:
        _infer(tiny, outputs=["heatmap"], parameters=parameters)
    assert e.value.code.name == "INVALID_ARGUMENT"


# -- splitnet explain: a model trained to find a patch, explained end to end -----------------

_S, _P = 32, 8  # frame side, patch side


def _patch_frames(n: int, rng) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Grey noise frames with one 8x8 patch at a random place: red (class 0) or blue (1)."""
    x = rng.integers(60, 140, size=(n, _S, _S, 3)).astype(np.uint8)
    y = rng.integers(0, 2, size=n)
    corners = []
    for i in range(n):
        r, c = (int(v) for v in rng.integers(0, _S - _P + 1, size=2))
        x[i, r : r + _P, c : c + _P] = (220, 40, 40) if y[i] == 0 else (40, 40, 220)
        corners.append((r, c))
    return x, y, corners


class _PatchNet(_Tiny):
    def __init__(self):
        super().__init__()
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, 2))


@pytest.fixture(scope="module")
def patch_bundle(tmp_path_factory):
    """A tiny classifier trained (150 steps, about a second) to tell the patch's colour."""
    from splitnet.models import ModelInfo

    torch.manual_seed(0)
    info = ModelInfo(task="classification", num_classes=2)
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    net, rng = _PatchNet(), np.random.default_rng(0)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(150):
        x, y, _ = _patch_frames(32, rng)
        xt = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - mean) / std
        loss = nn.functional.cross_entropy(net(xt), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("patch") / "b"
    export_bundle(net.eval(), input_shape=(3, _S, _S), split="stem.2", out_dir=out, num_classes=2)
    return out


def _iou(heatmap: np.ndarray, corner: tuple[int, int]) -> float:
    """IoU of the heatmap's top region (at least half its peak) and the patch."""
    top = heatmap >= 128
    box = np.zeros_like(top)
    r, c = corner
    box[r : r + _P, c : c + _P] = True
    return float((top & box).sum() / (top | box).sum())


def test_the_heatmaps_top_region_overlaps_the_patch_the_model_found(patch_bundle):
    from splitnet.explain import explain_image

    x, y, corners = _patch_frames(12, np.random.default_rng(1))
    ious = []
    for frame, label, corner in zip(x, y, corners, strict=True):
        e = explain_image(frame, patch_bundle)  # head on OpenVINO, tail in process
        assert e.classes[0] == label and e.explained == label
        assert e.heatmap.shape == (1, _S, _S)
        ious.append(_iou(e.heatmap[0], corner))
    assert min(ious) > 0.5, ious  # the target; measured about 0.84 on average


def _serve_in_thread(bundle):
    """An InferenceServer of ``bundle`` on its own event loop: (port, stop())."""
    import threading

    from splitnet.server import InferenceServer, ServerConfig

    model = TailModel(bundle)
    loop = asyncio.new_event_loop()
    server = InferenceServer(
        ServerConfig(repository=bundle.parent, port=0, metrics_port=None),
        models={model.name: model},
    )
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def stop():
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()

    return server.port, stop


def test_a_server_answers_the_same_heatmap_as_the_tail_in_process(patch_bundle):
    from splitnet.explain import explain_image

    x, _, _ = _patch_frames(1, np.random.default_rng(2))
    local = explain_image(x[0], patch_bundle, target=1)
    port, stop = _serve_in_thread(patch_bundle)
    try:
        remote = explain_image(x[0], patch_bundle, server=f"127.0.0.1:{port}", target=1)
        with pytest.raises(Exception, match="INVALID_ARGUMENT: heatmap_layer|layers: body"):
            explain_image(x[0], patch_bundle, server=f"127.0.0.1:{port}", layer="nope")
        again = explain_image(x[0], patch_bundle, server=f"127.0.0.1:{port}")  # still serving
    finally:
        stop()
    assert remote.explained == 1 and local.explained == 1
    np.testing.assert_array_equal(remote.heatmap, local.heatmap)
    assert again.heatmap.shape == (1, _S, _S)


def test_explain_cli_writes_the_overlay_png(patch_bundle, tmp_path, capsys):
    from PIL import Image

    from splitnet.cli.main import main

    x, y, _ = _patch_frames(1, np.random.default_rng(3))
    image = tmp_path / "frame.png"
    Image.fromarray(np.repeat(np.repeat(x[0], 2, 0), 2, 1)).save(image)  # 64x64: resized
    out = tmp_path / "overlay.png"
    assert main(["explain", str(image), "--bundle", str(patch_bundle), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"heatmap explains class_{y[0]}" in printed and "wrote" in printed
    with Image.open(out) as im:
        assert im.size == (2 * _S + 2, _S) and im.mode == "RGB"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--class", "7"], "heatmap_class must be an integer in \\[0, 1\\]"),
        (["--layer", "nope"], "layers: body.0"),
        (["--alpha", "2"], "--alpha must be in"),
    ],
)
def test_explain_cli_bad_input_is_one_line_exit_2(patch_bundle, tmp_path, capsys, extra, message):
    from PIL import Image

    from splitnet.cli.main import main

    image = tmp_path / "frame.png"
    Image.fromarray(np.zeros((_S, _S, 3), np.uint8)).save(image)
    assert main(["explain", str(image), "--bundle", str(patch_bundle), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("splitnet explain: error:")
    assert re.search(message, err), err


def test_explain_cli_refuses_a_file_that_is_not_an_image(patch_bundle, tmp_path, capsys):
    from splitnet.cli.main import main

    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    assert main(["explain", str(text), "--bundle", str(patch_bundle)]) == 2
    assert "not an image file" in capsys.readouterr().err


def test_a_segmentation_bundle_is_explained_by_its_probability_maps(repository, tmp_path, capsys):
    from PIL import Image

    from splitnet.cli.main import main
    from splitnet.explain import explain_image

    bundle = repository / "unet"
    h, w = read_manifest(bundle).input.frame_shape[:2]
    frame = np.random.default_rng(0).integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    e = explain_image(frame, bundle)
    assert e.task == "segmentation" and e.heatmap.dtype == np.uint8
    classes = e.heatmap.shape[0]
    assert e.heatmap.shape == (classes, h, w)
    assert e.explained == int(e.heatmap.reshape(classes, -1).max(axis=1).argmax())
    image, out = tmp_path / "f.png", tmp_path / "o.png"
    Image.fromarray(frame).save(image)
    assert main(["explain", str(image), "--bundle", str(bundle), "--out", str(out)]) == 0
    with Image.open(out) as im:  # one row per class, 2-pixel white lines between
        assert im.size == (2 * w + 2, classes * h + 2 * (classes - 1))
    capsys.readouterr()
    assert main(["explain", str(image), "--bundle", str(bundle), "--class", "99"]) == 2
    assert "heatmap_class must be an integer in [0, 3]" in capsys.readouterr().err
