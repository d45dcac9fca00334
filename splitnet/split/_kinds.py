"""Coarse kinds of ATen operations, for selecting split points (``kind="pool"``)."""

from __future__ import annotations

from typing import Any

_KIND_OF = {
    "conv": ("convolution", "conv1d", "conv2d", "conv3d", "_convolution"),
    "deconv": ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"),
    "pool": (
        "max_pool1d",
        "max_pool2d",
        "max_pool3d",
        "max_pool2d_with_indices",
        "avg_pool1d",
        "avg_pool2d",
        "avg_pool3d",
        "adaptive_avg_pool1d",
        "adaptive_avg_pool2d",
        "adaptive_max_pool2d",
        "_adaptive_avg_pool2d",
    ),
    "relu": ("relu", "threshold"),
    "act": (
        "hardtanh",
        "relu6",
        "hardswish",
        "hardsigmoid",
        "sigmoid",
        "silu",
        "gelu",
        "leaky_relu",
        "elu",
        "selu",
        "tanh",
        "mish",
        "softplus",
        "softmax",
        "_softmax",
        "log_softmax",
        "prelu",
    ),
    "norm": (
        "batch_norm",
        "_native_batch_norm_legit_no_training",
        "_native_batch_norm_legit",
        "native_batch_norm",
        "layer_norm",
        "native_layer_norm",
        "group_norm",
        "native_group_norm",
        "instance_norm",
    ),
    "add": ("add", "sub", "rsub"),
    "mul": ("mul", "div"),
    "concat": ("cat", "concat", "stack"),
    "upsample": (
        "upsample_nearest2d",
        "upsample_bilinear2d",
        "upsample_bicubic2d",
        "_upsample_nearest_exact2d",
        "_upsample_bilinear2d_aa",
        "upsample_nearest1d",
        "upsample_linear1d",
        "pixel_shuffle",
    ),
    "linear": ("linear", "addmm", "mm", "matmul", "bmm", "baddbmm", "einsum"),
    "reshape": (
        "view",
        "reshape",
        "_unsafe_view",
        "flatten",
        "permute",
        "transpose",
        "t",
        "squeeze",
        "unsqueeze",
        "expand",
        "contiguous",
        "slice",
        "select",
        "split",
        "chunk",
        "unbind",
        "split_with_sizes",
        "alias",
        "clone",
    ),
    "pad": ("constant_pad_nd", "pad", "reflection_pad2d", "replication_pad2d"),
    "reduce": ("mean", "sum", "amax", "amin", "max", "min"),
    "dropout": ("dropout", "native_dropout", "feature_dropout"),
}
_KIND = {op: kind for kind, ops in _KIND_OF.items() for op in ops}

KINDS: tuple[str, ...] = (*_KIND_OF, "other")

# friendlier names for point names than the ATen spelling
_FRIENDLY = {
    "_native_batch_norm_legit_no_training": "batch_norm",
    "convolution": "conv",
    "conv2d": "conv",
    "upsample_nearest2d": "upsample",
    "upsample_bilinear2d": "upsample",
    "max_pool2d": "pool",
    "avg_pool2d": "pool",
    "adaptive_avg_pool2d": "pool",
}


def op_short_name(target: Any, *, friendly: bool = False) -> str:
    """``aten.max_pool2d.default`` -> ``max_pool2d``."""
    packet = getattr(target, "_overloadpacket", None)
    name = getattr(packet, "__name__", None) or getattr(target, "__name__", None) or str(target)
    name = name.split(".")[-1]
    return _FRIENDLY.get(name, name) if friendly else name


def op_kind(target: Any) -> str:
    """The kind of an operation (``"other"`` when it has none of the known kinds)."""
    return _KIND.get(op_short_name(target), "other")
