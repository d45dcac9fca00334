"""Heatmaps from the server (issue 15): Grad-CAM over a classifier tail's exported graph."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from torch import nn

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
