"""The model registry: names -> builders, with what a deployment needs to know."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from splitnet._errors import SplitnetError
from splitnet._registry import Registry

Task = Literal["segmentation", "classification"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STEEL_CLASSES = ("defect_1", "defect_2", "defect_3", "defect_4")

# what the steel segmentation models share: 4 independent (sigmoid) defect classes
STEEL_SEGMENTATION = dict(
    task="segmentation",
    num_classes=4,
    class_names=STEEL_CLASSES,
    input_multiple=32,
    min_size=32,
    multilabel=True,
)


class ModelError(SplitnetError):
    """A model that cannot be built, loaded or run on the given input."""


@dataclass(frozen=True)
class ModelInfo:
    """What a registered model is, beyond its weights.

    Export bundles record this so that the device and the server need no model
    knowledge: how to preprocess a frame and how to read the output.

    Attributes:
        task: ``"segmentation"`` (output N x classes x H x W logits) or
            ``"classification"`` (output N x classes logits).
        num_classes: the default number of classes.
        class_names: default class names (empty: ``class_<i>``).
        input_multiple: height and width must be multiples of this.
        min_size: smallest height/width the model accepts.
        max_size: largest height/width it accepts (``None``: no limit); a model
            with ``min_size == max_size`` (a ViT) takes that one size only.
        mean, std: per-channel normalisation of an RGB frame scaled to [0, 1].
        multilabel: segmentation classes are independent sigmoids (the steel
            recipe, BCE + Dice) rather than one softmax.
    """

    task: Task
    num_classes: int
    class_names: tuple[str, ...] = ()
    input_multiple: int = 1
    min_size: int = 1
    max_size: int | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    multilabel: bool = False


@dataclass(frozen=True)
class ModelEntry:
    builder: Callable[..., nn.Module]
    info: ModelInfo
    defaults: dict = field(default_factory=dict)  # extra keyword arguments for the builder


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(
    name: str,
    *,
    task: Task,
    num_classes: int,
    class_names: Sequence[str] = (),
    input_multiple: int = 1,
    min_size: int = 1,
    multilabel: bool = False,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Registers a builder ``fn(*, num_classes, **kwargs) -> nn.Module``.

    Example:
        >>> @register_model("tiny-net", task="classification", num_classes=10)
        ... def tiny_net(*, num_classes: int = 10) -> nn.Module: ...
    """

    info = ModelInfo(
        task=task,
        num_classes=num_classes,
        class_names=tuple(class_names),
        input_multiple=input_multiple,
        min_size=min_size,
        multilabel=multilabel,
    )

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(name, ModelEntry(fn, info))
        return fn

    return decorator
