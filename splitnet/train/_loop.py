"""The training loop: BCE + Dice (segmentation) or cross-entropy (classification), Adam."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
        patience: stop when the validation metric has not improved for this
            many epochs (a plateau; ``None``: run all ``epochs``).
        min_epochs: no plateau stop before this epoch: a segmentation model
            first scores well by predicting nothing, then worse, then better.
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
    patience: int | None = None
    min_epochs: int = 0


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


def epoch_batches(dataset, *, batch: int, seed: int, epoch: int, desc: str, progress: bool) -> tqdm:
    """The shuffled batches of one epoch under a progress bar; the order is a
    function of ``(seed, epoch)``, so a resumed run sees the batches it would have."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, generator=generator)
    return tqdm(loader, desc=desc, unit="batch", file=sys.stderr, disable=not progress, leave=False)


def save_atomic(obj: dict, path: Path) -> None:
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


@dataclass
class _Run:
    """What one training run holds between epochs."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    train_ds: Any
    val_ds: Any
    task: str
    kwargs: dict
    input_shape: tuple[int, ...]
    channels: int
    start: int = 0
    best: float = -1.0
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)


def train(config: TrainConfig) -> TrainResult:
    """Trains ``config.model`` on ``config.data``, keeping the best checkpoint.

    Each epoch shuffles with a generator seeded by ``(seed, epoch)``, so a run
    resumed from its last-epoch state continues exactly as if it had not stopped.

    Returns:
        A :class:`TrainResult`.

    Raises:
        TrainError: bad configuration or data (``OSError`` for unreadable files).
    """
    t0 = time.perf_counter()
    if config.epochs < 1 or config.batch < 1 or not config.lr > 0:
        raise TrainError("epochs and batch must be >= 1 and lr > 0")
    if config.patience is not None and config.patience < 1:
        raise TrainError(f"patience must be >= 1, got {config.patience}")
    run = _start(config)
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if config.resume:
        _resume(run, config, last_path(out))
    meta = _checkpoint_meta(run, config)
    metric_name = meta["metric_name"]
    normalize = Normalize(run.model.splitnet_info, run.channels)
    loss_fn = make_loss(run.task)
    t_loop = time.perf_counter()
    for epoch in range(run.start + 1, config.epochs + 1):
        if _over_budget(config, epoch, run.start, t0, t_loop) or _plateau(config, run, epoch):
            break
        loss = _train_epoch(run, config, epoch, normalize, loss_fn)
        run.model.eval()
        scores = evaluate(run.model, run.val_ds, batch=config.batch, threshold=config.threshold)
        metric = scores[metric_name]
        improved = metric > run.best
        if improved:
            run.best, run.best_epoch = metric, epoch
        run.history.append({"epoch": epoch, "loss": loss, metric_name: metric})
        record = {**meta, "epoch": epoch, "best_metric": run.best, "best_epoch": run.best_epoch}
        record["history"] = run.history
        state = run.model.state_dict()
        if improved:
            save_atomic({**record, "state_dict": state, "scores": scores}, out)
        save_atomic(
            {**record, "state_dict": state, "optimizer": run.optimizer.state_dict()}, last_path(out)
        )
        if config.progress:
            tqdm.write(
                f"epoch {epoch}/{config.epochs}  loss {loss:.4f}  "
                f"val {metric_name} {metric:.4f}{'  (best)' if improved else ''}",
                file=sys.stderr,
            )
    elapsed = time.perf_counter() - t0
    return TrainResult(run.best_epoch, run.best, metric_name, run.history, str(out), elapsed)


def _start(config: TrainConfig) -> _Run:
    """Opens the train and validation subsets and builds the model and optimizer."""
    from splitnet.data import open_dataset
    from splitnet.models import create_model, get_model_info

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
    return _Run(model, optimizer, train_ds, val_ds, info.task, kwargs, input_shape, channels)


def _resume(run: _Run, config: TrainConfig, path: Path) -> None:
    """Loads the model, optimizer and history of the last-epoch checkpoint ``path``."""
    state = load_checkpoint(path)
    if state["model"] != config.model or state["model_kwargs"] != run.kwargs:
        raise TrainError(
            f"{path} was trained as {state['model']} {state['model_kwargs']}, "
            f"not {config.model} {run.kwargs}"
        )
    run.model.load_state_dict(state["state_dict"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.start, run.best, run.best_epoch = state["epoch"], state["best_metric"], state["best_epoch"]
    run.history = list(state["history"])
    if run.start >= config.epochs:
        raise TrainError(f"{path} already has {run.start} epochs; ask for more --epochs")


def _checkpoint_meta(run: _Run, config: TrainConfig) -> dict:
    """What every checkpoint of the run records besides weights and progress."""
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model": config.model,
        "model_kwargs": run.kwargs,
        "num_classes": run.train_ds.num_classes,
        "class_names": list(run.train_ds.class_names),
        "task": run.task,
        "input_shape": list(run.input_shape),
        "data": config.data,
        "metric_name": primary_metric(run.task),
        "config": {k: v for k, v in asdict(config).items() if k not in ("progress",)},
    }
    meta["config"]["input_shape"] = list(run.input_shape)
    return meta


def _plateau(config: TrainConfig, run: _Run, epoch: int) -> bool:
    """Whether ``config.patience`` epochs have passed since the best one (and
    ``config.min_epochs`` are done)."""
    if config.patience is None or epoch - 1 < config.min_epochs:
        return False
    if epoch - 1 - run.best_epoch < config.patience:
        return False
    tqdm.write(
        f"stopping after epoch {epoch - 1}: no better validation score for "
        f"{config.patience} epochs (best at epoch {run.best_epoch})",
        file=sys.stderr,
    )
    return True


def _over_budget(config: TrainConfig, epoch: int, start: int, t0: float, t_loop: float) -> bool:
    """Whether epoch ``epoch`` would end past ``config.max_seconds`` at the pace so far."""
    done = epoch - 1 - start
    if config.max_seconds is None or not done:
        return False
    pace = (time.perf_counter() - t_loop) / done
    if time.perf_counter() - t0 + pace <= config.max_seconds:
        return False
    tqdm.write(
        f"stopping after epoch {epoch - 1}: epoch {epoch} would pass the "
        f"{config.max_seconds:.0f} s budget",
        file=sys.stderr,
    )
    return True


def _train_epoch(run: _Run, config: TrainConfig, epoch: int, normalize, loss_fn) -> float:
    """One pass over the train subset; returns the mean loss."""
    bar = epoch_batches(
        run.train_ds,
        batch=config.batch,
        seed=config.seed,
        epoch=epoch,
        desc=f"epoch {epoch}/{config.epochs}",
        progress=config.progress,
    )
    run.model.train()
    total, count = 0.0, 0
    for x, y in bar:
        logits = run.model(normalize(x))
        loss = loss_fn(logits, y if run.task == "segmentation" else y.long())
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        total += loss.item() * x.shape[0]
        count += x.shape[0]
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / count
