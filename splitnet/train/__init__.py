"""Training and evaluating split models, and their rate-accuracy trade-off.

* :func:`train` (BCE + Dice with Adam for segmentation, cross-entropy for
  classification; best checkpoint by validation Dice or top-1; resumable);
* :func:`evaluate` (Dice per class and mean, Severstal's convention; top-1/top-5);
* :func:`rate_accuracy` (every split point x codec through the real codec, and
  the input sent as PNG/JPEG as baselines).

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
from splitnet.train._rate import (
    DEFAULT_CODECS,
    DEFAULT_JPEG_QUALITIES,
    RateAccuracyConfig,
    check_target,
    format_table,
    image_roundtrip,
    plot_rate_accuracy,
    rate_accuracy,
    write_outputs,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_CODECS",
    "DEFAULT_JPEG_QUALITIES",
    "RateAccuracyConfig",
    "check_target",
    "format_table",
    "image_roundtrip",
    "plot_rate_accuracy",
    "rate_accuracy",
    "write_outputs",
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
