"""Metrics: Dice per class (Severstal's convention) and top-k accuracy."""

from __future__ import annotations

import torch

from splitnet._errors import SplitnetError

__all__ = ["DiceMeter", "TopKMeter", "dice_scores"]


class TrainError(SplitnetError):
    """A training, evaluation or rate-accuracy run that cannot start: bad options or checkpoint."""


def dice_scores(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice of each image and class: ``N x C`` in [0, 1].

    ``pred`` and ``target`` are ``N x C x H x W`` binary masks (bool or {0, 1}).
    An empty prediction on an empty mask scores 1 (Severstal's convention), so a
    model that correctly finds nothing is not punished.

    Example:
        >>> empty = torch.zeros(1, 1, 2, 2)
        >>> dice_scores(empty, empty).item()
        1.0
    """
    if pred.shape != target.shape or pred.dim() != 4:
        raise TrainError(f"dice needs two N x C x H x W masks, got {pred.shape} and {target.shape}")
    p, t = pred.bool(), target.bool()
    inter = (p & t).sum((2, 3)).double()
    total = (p.sum((2, 3)) + t.sum((2, 3))).double()
    return torch.where(total == 0, torch.ones_like(total), 2 * inter / total.clamp_min(1))


class DiceMeter:
    """Accumulates Dice over images; ``compute()`` gives per class and mean.

    The mean over classes of the per-class means equals the mean over all
    (image, class) pairs, the competition's score.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.sums = torch.zeros(num_classes, dtype=torch.float64)
        self.count = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        d = dice_scores(pred, target)
        self.sums += d.sum(0)
        self.count += d.shape[0]

    def compute(self) -> dict:
        if self.count == 0:
            raise TrainError("no images were scored")
        per_class = (self.sums / self.count).tolist()
        return {"mean_dice": sum(per_class) / len(per_class), "dice_per_class": per_class}


class TopKMeter:
    """Accumulates top-1 and top-5 accuracy (top-k with k = min(5, classes))."""

    def __init__(self, num_classes: int) -> None:
        self.k = min(5, num_classes)
        self.hits1 = self.hitsk = self.count = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        top = logits.topk(self.k, dim=1).indices
        labels = labels.view(-1, 1)
        self.hits1 += int((top[:, :1] == labels).sum())
        self.hitsk += int((top == labels).any(1).sum())
        self.count += labels.shape[0]

    def compute(self) -> dict:
        if self.count == 0:
            raise TrainError("no images were scored")
        return {"top1": self.hits1 / self.count, "top5": self.hitsk / self.count}
