"""torchvision's image classifiers, named in kebab case (``mobilenet-v2``, ``resnet50``)."""

from __future__ import annotations

import functools

import torchvision
from torch import nn

from splitnet.models._registry import MODELS, ModelEntry, ModelError, ModelInfo

# (min_size, max_size) where the default (32, no limit) is wrong: alexnet's pools need 63
# pixels; ViTs and MaxViT are built for 224x224 and take nothing else
_SIZES = {"inception_v3": (75, None), "alexnet": (63, None), "maxvit_t": (224, 224)}
_SIZES.update({n: (224, 224) for n in torchvision.models.list_models() if n.startswith("vit_")})


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
                "classification",
                1000,
                min_size=_SIZES.get(_tv_name, (32, None))[0],
                max_size=_SIZES.get(_tv_name, (32, None))[1],
            ),
        ),
    )
