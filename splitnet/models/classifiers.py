"""torchvision's image classifiers, named in kebab case (``mobilenet-v2``, ``resnet50``)."""

from __future__ import annotations

import functools

import torchvision
from torch import nn

from splitnet.models._registry import MODELS, ModelEntry, ModelError, ModelInfo

_MIN_SIZE = {"inception_v3": 75, "googlenet": 32}


def _build(tv_name: str, *, num_classes: int = 1000, **kwargs) -> nn.Module:
    if kwargs.get("weights") is not None:
        raise ModelError("splitnet never downloads weights: pass weights=FILE to create_model")
    if tv_name in ("inception_v3", "googlenet"):
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", True)
    return torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes, **kwargs)


for _tv_name in torchvision.models.list_models(module=torchvision.models):
    MODELS.add(
        _tv_name.replace("_", "-"),
        ModelEntry(
            functools.partial(_build, _tv_name),
            ModelInfo(
                task="classification", num_classes=1000, min_size=_MIN_SIZE.get(_tv_name, 32)
            ),
        ),
    )
