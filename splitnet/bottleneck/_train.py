"""Training a bottleneck at a cut of a trained model (the teacher), in two stages.

Stage 1 (distillation): the teacher's head and tail are frozen; the encoder,
the decoder and the entropy model learn to reproduce what the teacher computes
after the cut: the tensors it sends across (mean squared error, each tensor
scaled by its variance) and, ``kd_weight`` times, its output (the tail run on
the reconstruction against the tail run on the teacher's own tensors: binary
cross-entropy to the teacher's probabilities for segmentation, KL divergence
to its softmax for classification), plus ``beta`` x the rate (bits per input
pixel, from the entropy model's likelihoods under additive uniform noise). Stage 2 (fine-tuning): the encoder
and the entropy model are frozen, so the rate is fixed; the decoder and the
teacher's tail are fine-tuned on the task loss (BCE + Dice, cross-entropy) on
the rounded latent the device will send. In both stages the learning rate
follows a cosine from ``lr`` down to ``lr / 20`` over the stage's epochs (set
per epoch, so a resumed run continues on the same schedule).

Runs are seeded and resumable: the state after every epoch is written to
``OUT.last.pt``, and the finished bottleneck to ``OUT``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from splitnet.bottleneck._entropy import FactorizedPrior
from splitnet.bottleneck._errors import BottleneckError
from splitnet.bottleneck._module import (
    BottleneckConfig,
    BottleneckedModel,
    make_decoder,
    make_encoder,
    plan_strides,
)
from splitnet.bundle import file_sha256
from splitnet.train._loop import epoch_batches
from splitnet.train._loop import save_atomic as _save

__all__ = [
    "BOTTLENECK_FORMAT",
    "BottleneckTrainConfig",
    "BottleneckTrainResult",
    "load_bottleneck",
    "read_bottleneck",
    "slim_bottleneck",
    "train_bottleneck",
]

BOTTLENECK_FORMAT = "splitnet-bottleneck-1"


@dataclass(frozen=True)
class BottleneckTrainConfig:
    """What ``splitnet train-bottleneck`` does.

    Attributes:
        teacher: a checkpoint from ``splitnet train``.
        split: the split point (name or index) where the bottleneck goes.
        out: the bottleneck checkpoint to write.
        data: a ``--data`` spec; default: the teacher's.
        beta: weight of the rate term (bits per input pixel); > 0.
        kd_weight: weight of the distillation of the teacher's output in
            stage 1 (0: the crossing tensors only).
        bottleneck: the latent's channels and stride, the inner width.
        epochs: stage-1 (distillation) epochs.
        finetune_epochs: stage-2 (decoder and tail on the task loss) epochs.
        batch, lr, seed, threshold: as for ``splitnet train``.
        resume: continue from ``OUT.last.pt``.
        progress: progress bars on stderr.
    """

    teacher: str
    split: str
    out: str
    data: str | None = None
    beta: float = 0.01
    kd_weight: float = 1.0
    bottleneck: BottleneckConfig = field(default_factory=BottleneckConfig)
    epochs: int = 8
    finetune_epochs: int = 4
    batch: int = 8
    lr: float = 1e-3
    seed: int = 0
    threshold: float = 0.5
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise BottleneckError(f"--beta must be > 0, got {self.beta}")
        if not self.kd_weight >= 0:
            raise BottleneckError(f"--kd-weight must be >= 0, got {self.kd_weight}")
        if self.epochs < 0 or self.finetune_epochs < 0 or self.epochs + self.finetune_epochs < 1:
            raise BottleneckError("epochs and finetune epochs must be >= 0, one of them >= 1")
        if self.batch < 1 or not self.lr > 0:
            raise BottleneckError("batch must be >= 1 and lr > 0")

    def to_dict(self) -> dict:
        """What a checkpoint records of the run (``progress`` is not part of it)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "progress"}
        return {**d, "bottleneck": self.bottleneck.to_dict()}


@dataclass(frozen=True)
class BottleneckTrainResult:
    """A finished run: the checkpoint, the per-epoch history, the final validation scores."""

    path: str
    history: list[dict]
    scores: dict
    seconds: float


@dataclass
class _Run:
    """The modules, data and progress of one run."""

    teacher: nn.Module
    model: BottleneckedModel
    train_ds: Any
    val_ds: Any
    normalize: Any
    meta: dict
    stage: int = 1
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: float = -1.0
    best_state: dict | None = None


def train_bottleneck(config: BottleneckTrainConfig) -> BottleneckTrainResult:
    """Trains a bottleneck at ``config.split`` of the teacher; see the module docstring.

    Raises:
        BottleneckError: bad options, or a split point the bottleneck cannot take.
        TrainError: a teacher file that is not a ``splitnet train`` checkpoint.
    """
    from splitnet.train._checkpoint import last_path

    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    run = _start(config)
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if config.resume:
        _resume(run, last_path(out), config)
    aux = [p for n, p in run.model.prior.named_parameters() if n.endswith("quantiles")]
    main = [p for n, p in run.model.named_parameters() if not n.endswith("quantiles")]
    for stage, epochs in ((1, config.epochs), (2, config.finetune_epochs)):
        if stage < run.stage:
            continue
        opt = torch.optim.Adam(_trainable(run.model, stage, main), lr=config.lr)
        aux_opt = torch.optim.Adam(aux, lr=config.lr) if stage == 1 else None
        for epoch in range(run.epoch + 1, epochs + 1):
            for group in opt.param_groups:
                group["lr"] = cosine_lr(config.lr, epoch, epochs)
            loss = _epoch(run, config, stage, epoch, opt, aux_opt)
            scores = _validate(run, config)
            run.history.append({"stage": stage, "epoch": epoch, "loss": loss, **scores})
            _note_best(run, scores, stage)
            run.stage, run.epoch = stage, epoch
            _save(_state(run), last_path(out))
            _report(config, stage, epoch, epochs, loss, scores)
        if stage == 1:
            settle_quantiles(run.model.prior)
        run.stage, run.epoch = stage + 1, 0
    if run.best_state is not None:
        _load_trainable(run.model, run.best_state)
    scores = _validate(run, config)
    _save({**_state(run), "final": True, "scores": scores}, out)
    return BottleneckTrainResult(str(out), run.history, scores, time.perf_counter() - t0)


def _start(config: BottleneckTrainConfig) -> _Run:
    """The teacher, its split, the data, and a fresh bottleneck at the cut."""
    from splitnet.data import open_dataset
    from splitnet.models._preprocess import Normalize
    from splitnet.train import model_from_checkpoint

    teacher, ckpt = model_from_checkpoint(None, config.teacher)
    c, h, w = ckpt["input_shape"]
    data = config.data or ckpt["data"]
    train_ds = open_dataset(data, subset="train", size=(h, w), channels=c)
    val_ds = open_dataset(data, subset="val", size=(h, w), channels=c)
    normalize = Normalize(teacher.splitnet_info, c)
    meta = {
        "format": BOTTLENECK_FORMAT,
        "model": ckpt["model"],
        "model_kwargs": ckpt.get("model_kwargs", {}),
        "num_classes": ckpt["num_classes"],
        "task": ckpt["task"],
        "input_shape": [c, h, w],
        "teacher": str(config.teacher),
        "teacher_sha256": file_sha256(config.teacher),
        "data": data,
        "beta": config.beta,
        "config": config.to_dict(),
    }
    batches = DataLoader(train_ds, batch_size=config.batch)
    model, layout = build_bottleneck(
        teacher,
        config.split,
        (c, h, w),
        config.bottleneck,
        calibration=batches,
        normalize=normalize,
    )
    meta.update(layout)
    return _Run(teacher, model, train_ds, val_ds, normalize, meta)


def build_bottleneck(
    teacher: nn.Module,
    split: str | int,
    input_shape: tuple[int, int, int],
    config: BottleneckConfig,
    *,
    calibration: Iterator | None = None,
    normalize=None,
    layout: dict | None = None,
) -> tuple[BottleneckedModel, dict]:
    """Splits ``teacher`` at ``split`` and puts a fresh bottleneck in the cut.

    Args:
        teacher: the trained model.
        split: the split point.
        input_shape: ``(C, H, W)``.
        config: the bottleneck's shape.
        calibration: batches ``(x, y)`` whose crossing tensors tell which are
            never negative (the decoder then ends them with a ReLU); needed
            unless ``layout`` is given.
        normalize: the teacher's input normalisation, for ``calibration``.
        layout: a checkpoint's ``split``/``factors``/``nonnegative``, to rebuild it.

    Returns:
        The model, and its layout (what a checkpoint records to rebuild it).
    """
    from splitnet.export._tail import free_batch_in_reshapes
    from splitnet.split import trace

    teacher.eval()
    g = trace(teacher, torch.zeros(1, *input_shape))
    point = g.point(split)
    head, tail = g.split(point)
    shapes = [t.shape for t in point.tensors]
    stride, factors = plan_strides(shapes, input_shape[1:], config.latent_stride)
    if layout is None:
        layout = {
            "split": point.name,
            "split_index": point.index,
            "latent_stride": stride,
            "factors": factors,
            "nonnegative": _nonnegative(head, calibration, normalize, len(shapes)),
            "crossing": [list(s) for s in shapes],
        }
    channels = [s[1] for s in shapes]
    encoder = make_encoder(channels, layout["factors"], config)
    decoder = make_decoder(channels, layout["factors"], layout["nonnegative"], config)
    prior = FactorizedPrior(config.latent_channels)
    for p in head.parameters():
        p.requires_grad_(False)
    model = BottleneckedModel(
        head,
        encoder,
        decoder,
        free_batch_in_reshapes(tail),
        prior=prior,
        info=teacher.splitnet_info,
        name=getattr(teacher, "splitnet_name", None),
    )
    return model, layout


@torch.no_grad()
def _nonnegative(head: nn.Module, batches, normalize, n: int, limit: int = 8) -> list[bool]:
    """Per crossing tensor: no negative value in ``limit`` calibration batches."""
    if batches is None:
        raise BottleneckError("a new bottleneck needs calibration batches")
    mins = [float("inf")] * n
    for i, (x, _) in enumerate(batches):
        if i == limit:
            break
        for k, t in enumerate(head(normalize(x))):
            mins[k] = min(mins[k], float(t.min()))
    return [m >= 0 for m in mins]


def settle_quantiles(prior: FactorizedPrior, steps: int = 4000) -> None:
    """Moves the prior's quantiles (tails and medians) to where its density puts them.

    The quantile loss involves no data, only the density model, so it can be
    minimised to convergence once the density is trained. During training the
    quantiles move only one small step per batch and lag far behind a latent
    that spreads over hundreds of units; tables from them would clamp most
    values. Adam at a large, then a small step size.
    """
    prior.quantiles.requires_grad_(True)
    opt = torch.optim.Adam([prior.quantiles], lr=1.0)
    for step in range(steps):
        if step == steps * 3 // 4:
            opt.param_groups[0]["lr"] = 0.05
        opt.zero_grad(set_to_none=True)
        prior.aux_loss().backward()
        opt.step()


def cosine_lr(lr: float, epoch: int, epochs: int, floor: float = 0.05) -> float:
    """The learning rate of ``epoch`` (1-based) of ``epochs``: a cosine from ``lr`` to ``floor * lr``."""
    t = (epoch - 1) / max(1, epochs - 1)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def _trainable(model: BottleneckedModel, stage: int, main: list) -> list:
    """Freezes what the stage does not train; returns the main optimizer's parameters.

    Stage 1 trains the encoder, the decoder and the entropy model (its quantiles by
    their own loss); stage 2 the decoder and the tail.
    """
    modules = (model.encoder, model.decoder, model.prior) if stage == 1 else (model.decoder,)
    if stage == 2:
        modules += (model.tail,)
    trained = {id(p) for m in modules for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained)
    return [p for p in main if id(p) in trained]


def _epoch(run: _Run, config, stage: int, epoch: int, opt, aux_opt) -> float:
    """One pass over the train subset; returns the mean loss."""
    from splitnet.train._loop import make_loss

    m = run.model
    m.train()
    m.head.eval()
    if stage == 1:  # the tail is the teacher's: its normalisation statistics stay
        m.tail.eval()
    if stage == 2:
        m.encoder.eval()
        m.prior.eval()
        task_loss = make_loss(run.meta["task"])
    total, count = 0.0, 0
    bar = epoch_batches(
        run.train_ds,
        batch=config.batch,
        seed=config.seed,
        epoch=epoch,
        desc=f"stage {stage} epoch {epoch}",
        progress=config.progress,
    )
    for x, y in bar:
        x = run.normalize(x)
        if stage == 1:
            loss = _distill_loss(m, x, config.beta, config.kd_weight, run.meta["task"])
        else:
            with torch.no_grad():
                y_hat, _ = m.prior(m.encoder(*m.head(x)))
            out = m.tail(*m.decoder(y_hat))
            loss = task_loss(out, y if run.meta["task"] == "segmentation" else y.long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if aux_opt is not None:
            aux_opt.zero_grad(set_to_none=True)
            m.prior.aux_loss().backward()
            aux_opt.step()
        total += loss.item() * x.shape[0]
        count += x.shape[0]
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / count


def _distill_loss(
    m: BottleneckedModel, x: torch.Tensor, beta: float, kd_weight: float, task: str
) -> torch.Tensor:
    """Distortion of the crossing tensors (variance-scaled MSE), ``kd_weight`` x that of
    the teacher's output, ``beta`` x bits per input pixel."""
    with torch.no_grad():
        target = m.head(x)
        teacher_out = m.tail(*target) if kd_weight else None
    y_hat, likelihoods = m.prior(m.encoder(*target))
    recon = m.decoder(y_hat)
    distortion = sum(
        nn.functional.mse_loss(r, t) / t.var().clamp_min(1e-6)
        for r, t in zip(recon, target, strict=True)
    ) / len(target)
    if kd_weight:
        distortion = distortion + kd_weight * output_distillation(m.tail(*recon), teacher_out, task)
    pixels = x.shape[0] * x.shape[2] * x.shape[3]
    rate = -torch.log2(likelihoods).sum() / pixels
    return distortion + beta * rate


def output_distillation(student: torch.Tensor, teacher: torch.Tensor, task: str) -> torch.Tensor:
    """How far the student's output is from the teacher's: per-pixel binary cross-entropy
    to the teacher's probabilities (segmentation), KL divergence to its softmax
    (classification)."""
    if task == "segmentation":
        return nn.functional.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher))
    return nn.functional.kl_div(
        nn.functional.log_softmax(student, dim=1),
        nn.functional.log_softmax(teacher, dim=1),
        log_target=True,
        reduction="batchmean",
    )


@torch.no_grad()
def _validate(run: _Run, config) -> dict:
    """Task metric on the rounded latent and the entropy model's bytes per frame."""
    from splitnet.train._eval import make_meter, primary_metric

    m = run.model.eval()
    meter = make_meter(run.val_ds.task, run.val_ds.num_classes, config.threshold)
    bits, frames = 0.0, 0
    for x, y in DataLoader(run.val_ds, batch_size=config.batch):
        latent = m.encoder(*m.head(run.normalize(x)))
        bits += float(m.prior.bits(latent))
        frames += x.shape[0]
        meter.update(m.tail(*m.decoder(m.prior(latent)[0])), y)
    metric = primary_metric(run.val_ds.task)
    return {metric: meter.compute()[metric], "estimated_bytes_per_frame": bits / 8 / frames}


def _note_best(run: _Run, scores: dict, stage: int) -> None:
    """Stage 2 keeps the decoder and tail of its best epoch (stage 1 keeps its last)."""
    from splitnet.train._eval import primary_metric

    metric = scores[primary_metric(run.meta["task"])]
    if stage == 2 and metric > run.best:
        run.best = metric
        run.best_state = _trainable_state(run.model)


def _trainable_state(model: BottleneckedModel) -> dict:
    return {
        "decoder": {k: v.clone() for k, v in model.decoder.state_dict().items()},
        "tail": {k: v.clone() for k, v in model.tail.state_dict().items()},
    }


def _load_trainable(model: BottleneckedModel, state: dict) -> None:
    model.decoder.load_state_dict(state["decoder"])
    model.tail.load_state_dict(state["tail"])


def _state(run: _Run) -> dict:
    m = run.model
    return {
        **run.meta,
        "stage": run.stage,
        "epoch": run.epoch,
        "history": run.history,
        "best": run.best,
        "best_state": run.best_state,
        "teacher_state": run.teacher.state_dict(),
        "encoder": m.encoder.state_dict(),
        "decoder": m.decoder.state_dict(),
        "prior": m.prior.state_dict(),
        "tail": m.tail.state_dict(),
        "tables": m.prior.cdf_tables(),
    }


def _resume(run: _Run, path: Path, config: BottleneckTrainConfig) -> None:
    state = read_bottleneck(path)
    for key in ("model", "split", "input_shape", "teacher_sha256"):
        if state.get(key) != run.meta.get(key):
            raise BottleneckError(
                f"{path} was trained with {key} {state.get(key)!r}, not {run.meta.get(key)!r}"
            )
    _load_modules(run.model, state)
    run.stage, run.epoch, run.history = state["stage"], state["epoch"], list(state["history"])
    run.best, run.best_state = state["best"], state["best_state"]
    done = config.epochs if run.stage == 1 else config.finetune_epochs
    if run.epoch >= done:
        run.stage, run.epoch = run.stage + 1, 0


def _load_modules(model: BottleneckedModel, state: dict) -> None:
    model.encoder.load_state_dict(state["encoder"])
    model.decoder.load_state_dict(state["decoder"])
    model.prior.load_state_dict(state["prior"])
    if "tail" in state:  # a slim checkpoint has the tuned tail in its teacher_state
        model.tail.load_state_dict(state["tail"])


def _half_if_exact_enough(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float16 unless that overflows or loses more than float16's precision
    (a tuned tail's batch-norm statistics can reach 1e16)."""
    if not t.is_floating_point():
        return t
    h = t.half()
    if not torch.isfinite(h).all() or not torch.allclose(
        h.float(), t.float(), rtol=1e-3, atol=1e-4
    ):
        return t
    return h


def slim_bottleneck(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Writes a finished bottleneck checkpoint to ``dst`` at about a third of its size.

    The tuned tail goes into the teacher's state dict in place of the teacher's
    own tail (the tail's parameters keep the teacher's names), which is stored
    in float16 where that is exact to float16's precision (large batch-norm
    statistics stay float32); the training history stays, the best-epoch copy and the resume
    state go. :func:`load_bottleneck` reads both forms.

    Raises:
        BottleneckError: ``src`` is not a finished bottleneck checkpoint.
    """
    state = read_bottleneck(src)
    if not state.get("final"):
        raise BottleneckError(f"{src} is not a finished bottleneck checkpoint")
    teacher = dict(state["teacher_state"])
    tail = state.pop("tail")
    unknown = set(tail) - set(teacher)
    if unknown:
        raise BottleneckError(f"{src}: tail parameters not in the teacher: {sorted(unknown)[:3]}")
    teacher.update(tail)
    state["teacher_state"] = {k: _half_if_exact_enough(v) for k, v in teacher.items()}
    state.pop("best_state", None)
    state["slim"] = True
    _save(state, Path(dst))
    return Path(dst)


def _report(config, stage: int, epoch: int, epochs: int, loss: float, scores: dict) -> None:
    if config.progress:
        parts = "  ".join(f"{k} {v:.4g}" for k, v in scores.items())
        tqdm.write(
            f"stage {stage} epoch {epoch}/{epochs}  loss {loss:.4f}  {parts}", file=sys.stderr
        )


def read_bottleneck(path: str | os.PathLike) -> dict:
    """A bottleneck checkpoint's contents (layout, config, scores, weights), without
    building the model (:func:`load_bottleneck` does that).

    Raises:
        BottleneckError: not a bottleneck checkpoint.
    """
    from splitnet.models import read_torch_file

    state = read_torch_file(path, "bottleneck checkpoint")
    if not isinstance(state, dict) or state.get("format") != BOTTLENECK_FORMAT:
        raise BottleneckError(f"{path} is not a bottleneck checkpoint (splitnet train-bottleneck)")
    shape = state.get("config", {}).get("bottleneck")
    if isinstance(shape, dict):  # written before the pyramids: the first designs
        shape.setdefault("decoder", "branches")
        shape.setdefault("encoder", "patch")
    return state


def load_bottleneck(
    path: str | os.PathLike,
    *,
    model: str | None = None,
    split: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> tuple[BottleneckedModel, dict]:
    """Rebuilds a trained bottleneck (teacher head, encoder, decoder, tuned tail).

    Args:
        path: a checkpoint from :func:`train_bottleneck`.
        model, split, input_shape: what the caller expects; a checkpoint made
            for another model, split point or input shape raises.

    Returns:
        ``(model, checkpoint)``; the model is in eval mode, its ``prior`` set.

    Raises:
        BottleneckError: not a bottleneck checkpoint, or one for something else.
    """
    from splitnet.models import create_model

    state = read_bottleneck(path)
    expected = {"model": model, "split": split, "input_shape": input_shape}
    for key, want in expected.items():
        have = state[key] if key != "input_shape" else tuple(state[key])
        if want is not None and have != (tuple(want) if key == "input_shape" else want):
            raise BottleneckError(f"{path} is a bottleneck for {key} {have!r}, not {want!r}")
    teacher = create_model(
        state["model"], num_classes=state["num_classes"], **state["model_kwargs"]
    )
    teacher.load_state_dict(state["teacher_state"])
    config = BottleneckConfig(**state["config"]["bottleneck"])
    bn, _ = build_bottleneck(
        teacher, state["split"], tuple(state["input_shape"]), config, layout=state
    )
    _load_modules(bn, state)
    return bn.eval(), state
