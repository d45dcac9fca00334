"""The training loop: BCE + Dice (segmentation) or cross-entropy (classification), Adam."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from splitnet.models._preprocess import Normalize
from splitnet.train._checkpoint import CHECKPOINT_FORMAT, last_path, load_checkpoint
from splitnet.train._eval import evaluate, primary_metric
from splitnet.train._metrics import TrainError

__all__ = ["TrainConfig", "TrainResult", "make_loss", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """What ``splitnet train`` does.

    Attributes:
        model: a registered model name.
        data: a ``--data`` spec (:func:`splitnet.data.open_dataset`); its
            ``train`` subset trains, its ``val`` subset (20% unless ``val=``) validates.
        out: the best checkpoint's path; the last epoch's resumable state goes
            next to it (``model.pt`` -> ``model.last.pt``).
        epochs: total epochs (a resumed run continues up to this number).
        batch: batch size.
        lr: Adam's learning rate.
        input_shape: ``(C, H, W)`` that samples are resized to; ``None``: the
            data's own size (classification: 3 x 224 x 224).
        model_kwargs: extra builder arguments (``{"width": 0.25}``).
        seed: seeds the initialisation and the shuffling of every epoch.
        threshold: sigmoid threshold of predicted masks for validation Dice.
        resume: continue from the last-epoch state next to ``out``.
        progress: show tqdm progress bars on stderr.
        max_seconds: a wall-time budget: no epoch starts that, at the pace of
            the epochs so far, would end after it (``None``: no budget).
    """

    model: str
    data: str
    out: str
    epochs: int = 10
    batch: int = 4
    lr: float = 1e-3
    input_shape: tuple[int, int, int] | None = None
    model_kwargs: dict = field(default_factory=dict)
    seed: int = 0
    threshold: float = 0.5
    resume: bool = False
    progress: bool = True
    max_seconds: float | None = None


@dataclass(frozen=True)
class TrainResult:
    """The outcome: best epoch and metric, and the per-epoch history."""

    best_epoch: int
    best_metric: float
    metric_name: str
    history: list
    out: str
    seconds: float


class BCEDiceLoss(nn.Module):
    """``BCEWithLogits + soft Dice`` over independent class planes (the steel recipe)."""

    def __init__(self) -> None:
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss

        self.bce = nn.BCEWithLogitsLoss()
        self.dice = DiceLoss(mode="multilabel", from_logits=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.bce(logits, target) + self.dice(logits, target)


def _save(obj: dict, path: Path) -> None:
    """``torch.save`` to a temporary file renamed into place: a reader (or a resumed
    run after a kill) never sees a half-written checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def make_loss(task: str) -> nn.Module:
    """BCE + Dice for ``"segmentation"``, cross-entropy for ``"classification"``."""
    return BCEDiceLoss() if task == "segmentation" else nn.CrossEntropyLoss()


def _check_task(model_task: str, data_task: str, model: str, data: str) -> None:
    if model_task != data_task:
        raise TrainError(f"{model} is a {model_task} model but --data {data} is {data_task} data")


def resolve_input(
    input_shape: tuple[int, int, int] | None, task: str, multiple: int
) -> tuple[int, int, int] | None:
    """Default and check the input shape against the model's size multiple."""
    if input_shape is None and task == "classification":
        input_shape = (3, 224, 224)
    if input_shape is not None:
        c, h, w = input_shape
        if c not in (1, 3):
            raise TrainError(f"--input must have 1 or 3 channels, got {c}")
        if h % multiple or w % multiple:
            raise TrainError(
                f"--input height and width must be multiples of {multiple}, got {h}x{w}"
            )
    return input_shape


def train(config: TrainConfig) -> TrainResult:
    """Trains ``config.model`` on ``config.data``, keeping the best checkpoint.

    Each epoch shuffles with a generator seeded by ``(seed, epoch)``, so a run
    resumed from its last-epoch state continues exactly as if it had not stopped.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: bad configuration or data (``OSError`` for unreadable files).
    """
    from splitnet.data import open_dataset
    from splitnet.models import create_model, get_model_info

    t0 = time.perf_counter()
    if config.epochs < 1 or config.batch < 1 or not config.lr > 0:
        raise TrainError("epochs and batch must be >= 1 and lr > 0")
    info = get_model_info(config.model)
    input_shape = resolve_input(config.input_shape, info.task, info.input_multiple)
    channels = input_shape[0] if input_shape else 3
    size = tuple(input_shape[1:]) if input_shape else None
    train_ds = open_dataset(config.data, subset="train", size=size, channels=channels)
    val_ds = open_dataset(config.data, subset="val", size=size, channels=channels)
    _check_task(info.task, train_ds.task, config.model, config.data)
    if input_shape is None:
        input_shape = tuple(train_ds[0][0].shape)

    torch.manual_seed(config.seed)
    kwargs = dict(config.model_kwargs)
    if channels != 3 and info.task == "segmentation":
        kwargs.setdefault("in_channels", channels)
    model = create_model(config.model, num_classes=train_ds.num_classes, **kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = make_loss(info.task)
    normalize = Normalize(model.splitnet_info, channels)
    metric_name = primary_metric(info.task)

    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start, best, best_epoch, history = 0, -1.0, 0, []
    if config.resume:
        state = load_checkpoint(last_path(out))
        if state["model"] != config.model or state["model_kwargs"] != kwargs:
            raise TrainError(
                f"{last_path(out)} was trained as {state['model']} {state['model_kwargs']}, "
                f"not {config.model} {kwargs}"
            )
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        start, best, best_epoch = state["epoch"], state["best_metric"], state["best_epoch"]
        history = list(state["history"])
        if start >= config.epochs:
            raise TrainError(f"{last_path(out)} already has {start} epochs; ask for more --epochs")

    meta = {
        "format": CHECKPOINT_FORMAT,
        "model": config.model,
        "model_kwargs": kwargs,
        "num_classes": train_ds.num_classes,
        "class_names": list(train_ds.class_names),
        "task": info.task,
        "input_shape": list(input_shape),
        "data": config.data,
        "metric_name": metric_name,
        "config": {k: v for k, v in asdict(config).items() if k not in ("progress",)},
    }
    meta["config"]["input_shape"] = list(input_shape)

    t_loop = time.perf_counter()
    for epoch in range(start + 1, config.epochs + 1):
        done = epoch - 1 - start
        if config.max_seconds is not None and done:
            pace = (time.perf_counter() - t_loop) / done
            if time.perf_counter() - t0 + pace > config.max_seconds:
                tqdm.write(
                    f"stopping after epoch {epoch - 1}: epoch {epoch} would pass the "
                    f"{config.max_seconds:.0f} s budget",
                    file=sys.stderr,
                )
                break
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        loader = DataLoader(train_ds, batch_size=config.batch, shuffle=True, generator=generator)
        model.train()
        total, count = 0.0, 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            file=sys.stderr,
            disable=not config.progress,
            leave=False,
        )
        for x, y in bar:
            logits = model(normalize(x))
            loss = loss_fn(logits, y if info.task == "segmentation" else y.long())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * x.shape[0]
            count += x.shape[0]
            bar.set_postfix(loss=f"{total / count:.4f}")
        model.eval()
        scores = evaluate(model, val_ds, batch=config.batch, threshold=config.threshold)
        metric = scores[metric_name]
        improved = metric > best
        if improved:
            best, best_epoch = metric, epoch
        history.append({"epoch": epoch, "loss": total / count, metric_name: metric})
        record = {**meta, "epoch": epoch, "best_metric": best, "best_epoch": best_epoch}
        record["history"] = history
        if improved:
            _save({**record, "state_dict": model.state_dict(), "scores": scores}, out)
        _save(
            {**record, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()},
            last_path(out),
        )
        if config.progress:
            tqdm.write(
                f"epoch {epoch}/{config.epochs}  loss {total / count:.4f}  "
                f"val {metric_name} {metric:.4f}{'  (best)' if improved else ''}",
                file=sys.stderr,
            )
    return TrainResult(best_epoch, best, metric_name, history, str(out), time.perf_counter() - t0)
