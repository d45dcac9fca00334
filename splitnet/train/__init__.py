"""Training and evaluating split models.

* :func:`train` (BCE + Dice with Adam for segmentation, cross-entropy for
  classification; best checkpoint by validation Dice or top-1; resumable);
* :func:`evaluate` (Dice per class and mean, Severstal's convention; top-1/top-5).

Rate–accuracy (the metric through real codecs per split point) lives beside the
profiler: :func:`splitnet.profile.rate_accuracy`.

This package needs torch; the device side never imports it.
"""

from splitnet.train._checkpoint import (
    CHECKPOINT_FORMAT,
    last_path,
    load_checkpoint,
    model_from_checkpoint,
)
from splitnet.train._eval import Normalize, evaluate, primary_metric
from splitnet.train._loop import TrainConfig, TrainResult, make_loss, train
from splitnet.train._metrics import DiceMeter, TopKMeter, dice_scores

__all__ = [
    "CHECKPOINT_FORMAT",
    "DiceMeter",
    "Normalize",
    "TopKMeter",
    "TrainConfig",
    "TrainResult",
    "dice_scores",
    "evaluate",
    "last_path",
    "load_checkpoint",
    "make_loss",
    "model_from_checkpoint",
    "primary_metric",
    "train",
]
