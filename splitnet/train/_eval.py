"""Evaluation of a whole model on a dataset: Dice per class and mean, or top-1/top-5."""

from __future__ import annotations

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from splitnet.models._preprocess import Normalize
from splitnet.train._metrics import DiceMeter, TopKMeter

__all__ = ["Normalize", "evaluate", "make_meter", "primary_metric"]


def primary_metric(task: str) -> str:
    """The metric that selects checkpoints: ``mean_dice`` or ``top1``."""
    return "mean_dice" if task == "segmentation" else "top1"


def make_meter(task: str, num_classes: int, threshold: float = 0.5):
    """A meter with ``update(model_output, target)`` and ``compute() -> dict``."""
    if task == "segmentation":
        meter = DiceMeter(num_classes)
        return _Thresholded(meter, threshold)
    return TopKMeter(num_classes)


class _Thresholded:
    def __init__(self, meter: DiceMeter, threshold: float) -> None:
        self.meter = meter
        # sigmoid(logit) > threshold  <=>  logit > logit(threshold)
        self.logit = float(torch.logit(torch.tensor(threshold, dtype=torch.float64)))

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.meter.update(logits > self.logit, target)

    def compute(self) -> dict:
        return self.meter.compute()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset,
    *,
    batch: int = 8,
    threshold: float = 0.5,
    progress: bool = False,
) -> dict:
    """Scores ``model`` on ``dataset`` (a :func:`splitnet.data.open_dataset` result).

    Returns:
        Segmentation: ``{"mean_dice", "dice_per_class", "images"}``, with predicted
        masks ``sigmoid(logits) > threshold``; classification: ``{"top1", "top5", "images"}``.
    """
    info = model.splitnet_info
    channels = dataset[0][0].shape[0]
    normalize = Normalize(info, channels)
    meter = make_meter(dataset.task, dataset.num_classes, threshold)
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch, shuffle=False)
    for x, y in tqdm(loader, desc="evaluate", unit="batch", file=sys.stderr, disable=not progress):
        meter.update(model(normalize(x)), y)
    model.train(was_training)
    return {**meter.compute(), "images": len(dataset)}
