"""The head as OpenVINO IR: conversion, embedded preprocessing, named outputs."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import fx

from splitnet.bundle import InputSpec
from splitnet.models._preprocess import Normalize

__all__ = ["convert_head", "normalize_frame"]


def convert_head(
    head: fx.GraphModule,
    *,
    input_spec: InputSpec,
    output_names: Sequence[str],
    target,
):
    """Converts the head with OpenVINO's converter into a static-shape ``openvino.Model``.

    The head is captured with ``torch.export`` and converted by
    ``openvino.convert_model``; ``target.prepare`` then rewrites it, the outputs
    are named after the crossing tensors, and (``input_spec.embedded``) the
    preprocessing is built in with ``PrePostProcessor``: the IR takes a
    ``1 x H x W x 3`` uint8 RGB frame.

    Returns:
        ``(model, violations)``: the model and what ``target`` cannot run in it.
    """
    import openvino as ov

    c, h, w = input_spec.shape
    x = torch.zeros(1, c, h, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(head, (x,))
        model = ov.convert_model(program, input=[(1, c, h, w)])
    target.prepare(model)
    if len(model.outputs) != len(output_names):
        raise RuntimeError(
            f"the converted head has {len(model.outputs)} outputs, expected {len(output_names)}"
        )
    for out, name in zip(model.outputs, output_names, strict=True):
        out.get_tensor().set_names({name})
    model.inputs[0].get_tensor().set_names({"frame" if input_spec.embedded else "input"})
    if input_spec.embedded:
        model = _embed_preprocessing(model, input_spec)
    return model, target.violations(model)


def _embed_preprocessing(model, spec: InputSpec):
    """u8 NHWC RGB frame -> f32, / scale, - mean, / std, NCHW: inside the IR."""
    from openvino import Layout, Type
    from openvino.preprocess import ColorFormat, PrePostProcessor

    ppp = PrePostProcessor(model)
    inp = ppp.input()
    inp.tensor().set_element_type(Type.u8).set_layout(Layout(spec.layout)).set_color_format(
        ColorFormat.RGB
    )
    inp.model().set_layout(Layout(spec.model_layout))
    steps = inp.preprocess().convert_element_type(Type.f32)
    # (x / scale - mean) / std  ==  (x - mean * scale) / (std * scale): one subtract, one divide
    steps.mean([m * spec.scale for m in spec.mean]).scale([s * spec.scale for s in spec.std])
    return ppp.build()


def normalize_frame(frame: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """What the embedded preprocessing computes, in torch: ``H x W x 3`` uint8 -> ``1 x 3 x H x W``."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float()[None]
    return Normalize(spec, scale=spec.scale)(x)
