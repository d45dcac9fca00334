"""Every segmentation-models-pytorch architecture x encoder, as ``smp-<arch>-<encoder>``.

Encoders are named as segmentation-models-pytorch names them (``resnet34``,
``efficientnet-b0``, ``mobilenet_v2``, ``mit_b0``) and any timm model through
its ``tu-`` prefix (``smp-unet-tu-resnet18``). Weights are never downloaded:
``encoder_weights=None`` always.
"""

from __future__ import annotations

import functools

from torch import nn

from splitnet._registry import UnknownNameError
from splitnet.models._registry import MODELS, STEEL_SEGMENTATION, ModelEntry, ModelError, ModelInfo

__all__ = ["smp_architectures"]

# PAN's feature-pyramid attention pools its 1/32 map three more times: 128 pixels at least
_SIZES = {"pan": {"min_size": 128}}


@functools.cache
def smp_architectures() -> dict[str, type]:
    """Lower-case architecture name -> segmentation-models-pytorch class."""
    import segmentation_models_pytorch as smp

    return {name.lower(): cls for name, cls in smp.MODEL_ARCHITECTURES_MAPPING.items()}


@functools.cache
def _encoders() -> frozenset[str]:
    import segmentation_models_pytorch as smp

    return frozenset(smp.encoders.get_encoder_names())


def _build(arch: str, encoder: str, *, num_classes: int = 4, **kwargs) -> nn.Module:
    if kwargs.get("encoder_weights") is not None:
        raise ModelError("splitnet never downloads weights: pass weights=FILE to create_model")
    kwargs["encoder_weights"] = None
    try:
        return smp_architectures()[arch](encoder_name=encoder, classes=num_classes, **kwargs)
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"smp-{arch}-{encoder} cannot be built: {msg}") from None


def _resolve(suffix: str) -> ModelEntry | None:
    arch, _, encoder = suffix.partition("-")
    if arch not in smp_architectures():
        valid = ", ".join(sorted(smp_architectures()))
        raise UnknownNameError(
            f"unknown smp architecture {arch!r} in 'smp-{suffix}'; valid: {valid}"
        )
    if not (encoder in _encoders() or encoder.startswith("tu-")):
        valid = ", ".join(sorted(_encoders()))
        raise UnknownNameError(
            f"unknown smp encoder {encoder!r} in 'smp-{suffix}'; valid: {valid}, or tu-<timm model>"
        )
    info = ModelInfo(**{**STEEL_SEGMENTATION, **_SIZES.get(arch, {})})
    return ModelEntry(functools.partial(_build, arch, encoder), info)


def _enumerate() -> list[str]:
    return [f"{a}-{e}" for a in smp_architectures() for e in sorted(_encoders())]


MODELS.add_family("smp-", pattern="smp-<arch>-<encoder>", resolve=_resolve, enumerate=_enumerate)
