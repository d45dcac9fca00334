"""Rate–accuracy: the metric of a split model through a real codec, per point and codec.

For every split point, the head runs on a batch, each frame's crossing tensors
are encoded by the codec into bytes, decoded from those bytes, and the tail
runs on the decoded tensors; the metric of the tail's output is compared with
the uncompressed model's. The baselines send the input image itself (PNG and
JPEG, :func:`splitnet.profile._baseline.code_image`) and run the whole model on
the decoded image. The result is a :class:`RateAccuracyReport`.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from splitnet.models._preprocess import Normalize
from splitnet.profile._baseline import decode_image, encode_image
from splitnet.profile._rate_report import (
    ImageBaselineRecord,
    RateAccuracyRecord,
    RateAccuracyReport,
    RatePoint,
    RateScore,
)
from splitnet.profile._report import ProfileError
from splitnet.split import SplitGraph, SplitPoint
from splitnet.train._eval import make_meter, primary_metric

__all__ = [
    "DEFAULT_CODECS",
    "DEFAULT_JPEG_QUALITIES",
    "RateAccuracyConfig",
    "image_roundtrip",
    "rate_accuracy",
]

DEFAULT_CODECS = ("q8", "q6", "q4", "q3", "q2")
DEFAULT_JPEG_QUALITIES = (95, 75, 50, 25)


@dataclass(frozen=True)
class RateAccuracyConfig:
    """What to sweep.

    Attributes:
        points: split point names or indices (``None``: every ``pool`` point); see
            :meth:`splitnet.split.SplitGraph.parse_points`.
        codecs: codec names (``splitnet.codec.list_codecs()``).
        codec_options: keyword options for every codec (``{"entropy": "ans"}``).
        calibrate: frames whose crossing tensors fix the codec's ranges
            (``codec.calibrate``); ``0``: ranges measured per frame, sent in the payload.
        png: include the lossless PNG baseline.
        jpeg_qualities: JPEG baselines' qualities.
        batch: frames per forward pass.
        threshold: sigmoid threshold of predicted masks.
        progress: tqdm bars on stderr.
        bottlenecks: checkpoints from ``splitnet train-bottleneck`` of this model;
            each adds a record ``learned-beta<B>`` at its split point (the frames
            through its encoder, the learned codec's real bytes, its decoder and
            its fine-tuned tail), against the same uncompressed reference.
    """

    points: tuple[str | int, ...] | None = None
    codecs: tuple[str, ...] = DEFAULT_CODECS
    codec_options: dict = field(default_factory=dict)
    calibrate: int = 0
    png: bool = True
    jpeg_qualities: tuple[int, ...] = DEFAULT_JPEG_QUALITIES
    batch: int = 8
    threshold: float = 0.5
    progress: bool = True
    bottlenecks: tuple[str, ...] = ()


def _batches(dataset, batch: int):
    """``(x, y, n)`` with ``x`` padded to ``batch`` frames by repeating the last; ``n`` real."""
    for start in range(0, len(dataset), batch):
        items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        n = len(items)
        x = torch.stack([it[0] for it in items])
        y = torch.stack([torch.as_tensor(it[1]) for it in items])
        yield _pad(x, batch), y, n


def _pad(t: torch.Tensor, batch: int) -> torch.Tensor:
    """``t`` padded to ``batch`` rows by repeating its last (the traced batch size)."""
    if len(t) >= batch:
        return t
    return torch.cat([t, t[-1:].expand(batch - len(t), *t.shape[1:])])


def image_roundtrip(
    x: torch.Tensor, fmt: str, quality: int | None = None
) -> tuple[torch.Tensor, int]:
    """Sends a ``C x H x W`` [0, 1] frame as PNG/JPEG and decodes it; ``(frame, bytes)``.

    A frame whose channels are equal (a grayscale camera) is sent as one channel.
    """
    t, size, _, _ = _timed_image_roundtrip(x, fmt, quality)
    return t, size


def _timed_image_roundtrip(
    x: torch.Tensor, fmt: str, quality: int | None
) -> tuple[torch.Tensor, int, float, float]:
    """:func:`image_roundtrip` plus the seconds of its encode (uint8 samples -> bytes)
    and decode (bytes -> the model's float frame)."""
    a = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    a = a[0] if a.shape[0] == 1 or (a == a[:1]).all() else a.transpose(1, 2, 0)
    t0 = time.perf_counter()
    payload = encode_image(a, fmt, quality)
    t1 = time.perf_counter()
    decoded = decode_image(payload, "L" if a.ndim == 2 else "RGB")
    t = torch.from_numpy(decoded).float().div_(255)
    t = t.permute(2, 0, 1) if t.dim() == 3 else t[None].expand(x.shape[0], -1, -1)
    t = t.contiguous()
    return t, len(payload), t1 - t0, time.perf_counter() - t1


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().numpy(), dtype=np.float32)


class _Sweep:
    """The state one sweep shares: dataset, batch size, normalisation, meters, reference."""

    def __init__(self, model: nn.Module, dataset, config: RateAccuracyConfig) -> None:
        self.model, self.dataset, self.config = model, dataset, config
        self.metric = primary_metric(dataset.task)
        self.frame_shape = tuple(dataset[0][0].shape)
        self.normalize = Normalize(model.splitnet_info, self.frame_shape[0])
        self.batch = max(1, min(config.batch, len(dataset)))
        self.frames = len(dataset)
        self.show = {"file": sys.stderr, "disable": not config.progress, "leave": False}
        self.reference: dict = {}

    def meter(self):
        return make_meter(self.dataset.task, self.dataset.num_classes, self.config.threshold)

    def batches(self, dataset=None):
        return _batches(self.dataset if dataset is None else dataset, self.batch)

    def score(
        self, scores: dict, nbytes: float, elements: int, encode_s: float, decode_s: float
    ) -> RateScore:
        """A record's score: ``nbytes`` sent over all frames, ``elements`` per frame,
        ``encode_s``/``decode_s`` the codec's seconds over all frames."""
        value = scores[self.metric]
        return RateScore(
            value=value,
            drop_points=100 * (self.reference[self.metric] - value),
            kb_per_frame=nbytes / self.frames / 1000,
            bits_per_element=8 * nbytes / (self.frames * elements),
            extra={k: scores[k] for k in ("dice_per_class", "top5") if k in scores},
            encode_ms=1000 * encode_s / self.frames,
            decode_ms=1000 * decode_s / self.frames,
        )


def _reference(s: _Sweep) -> dict:
    """The uncompressed model's scores."""
    ref = s.meter()
    for x, y, n in tqdm(s.batches(), desc="uncompressed", **s.show):
        ref.update(s.model(s.normalize(x))[:n], y)
    return ref.compute()


def _sweep_points(s: _Sweep) -> tuple[list[SplitPoint], SplitGraph]:
    """The traced graph (at the sweep's batch size) and the points to sweep."""
    from splitnet.split import trace

    g = trace(s.model, torch.zeros(s.batch, *s.frame_shape))
    if s.config.points is None:
        points = g.select(kind="pool")
    else:
        points = g.parse_points(s.config.points)
    if not points:
        raise ProfileError(f"{g.name} has no pool points; name the points to sweep (--points)")
    return points, g


def _calibrated(s: _Sweep, head, codecs: list, calibration_data) -> list:
    """``codecs`` with ranges fixed on ``config.calibrate`` frames' crossing tensors."""
    cal_frames = []
    for x, _, n in s.batches(calibration_data):
        feats = head(s.normalize(x))
        cal_frames += [[_to_numpy(f[i : i + 1]) for f in feats] for i in range(n)]
        if len(cal_frames) >= s.config.calibrate:
            break
    return [c.calibrate(cal_frames[: s.config.calibrate]) for c in codecs]


def _point_records(s: _Sweep, g: SplitGraph, p: SplitPoint, codecs: list, calibration_data):
    """Every codec at point ``p``: frames through encode -> bytes -> decode -> tail."""
    head, tail = g.split(p)
    if s.config.calibrate > 0:
        codecs = _calibrated(s, head, codecs, calibration_data)
    meters = [s.meter() for _ in codecs]
    nbytes = [0] * len(codecs)
    seconds = [[0.0, 0.0] for _ in codecs]  # encode, decode
    for x, y, n in s.batches():
        feats = head(s.normalize(x))
        per_frame = [[_to_numpy(f[i : i + 1]) for f in feats] for i in range(n)]
        for k, codec in enumerate(codecs):
            t0 = time.perf_counter()
            payloads = [codec.encode(arrays) for arrays in per_frame]
            t1 = time.perf_counter()
            decoded = [codec.decode(b) for b in payloads]
            seconds[k][0] += t1 - t0
            seconds[k][1] += time.perf_counter() - t1
            nbytes[k] += sum(len(b) for b in payloads)
            tensors = [
                _pad(torch.from_numpy(np.concatenate([d[j] for d in decoded])), s.batch)
                for j in range(len(feats))
            ]
            meters[k].update(tail(*tensors)[:n], y)
    elements = p.elements // s.batch
    results = tuple(
        RateAccuracyRecord(codec.name, s.score(m.compute(), b, elements, *t))
        for codec, m, b, t in zip(codecs, meters, nbytes, seconds, strict=True)
    )
    return _rate_point(s, p, results)


def _rate_point(s: _Sweep, p: SplitPoint, results: tuple) -> RatePoint:
    return RatePoint(
        index=p.index,
        name=p.name,
        kind=p.kind,
        elements=p.elements // s.batch,
        tensors=tuple((t.name, (1, *t.shape[1:])) for t in p.tensors),
        results=results,
    )


@torch.no_grad()
def _bottleneck_record(s: _Sweep, path: str) -> tuple[str, RateAccuracyRecord]:
    """A trained bottleneck: frames through its encoder, the learned codec's real
    bytes, its decoder and tail; ``(its split point, its record)``."""
    from splitnet.bottleneck import load_bottleneck
    from splitnet.codec import get_codec

    name = getattr(s.model, "splitnet_name", None)
    bn, state = load_bottleneck(path, model=name, input_shape=s.frame_shape)
    codec = get_codec("learned", tables=state["tables"])
    meter, total, encode_s, decode_s = s.meter(), 0, 0.0, 0.0
    for x, y, n in s.batches():
        latent = bn.encoder(*bn.head(s.normalize(x)))
        per_frame = [_to_numpy(latent[i : i + 1]) for i in range(n)]
        t0 = time.perf_counter()
        payloads = [codec.encode([a]) for a in per_frame]
        t1 = time.perf_counter()
        decoded = np.concatenate([codec.decode(b)[0] for b in payloads])
        encode_s, decode_s = encode_s + t1 - t0, decode_s + time.perf_counter() - t1
        total += sum(len(b) for b in payloads)
        meter.update(bn.tail(*bn.decoder(_pad(torch.from_numpy(decoded), s.batch)))[:n], y)
    elements = sum(math.prod(shape[1:]) for shape in state["crossing"])
    # the codec's times only: the bottleneck's encoder (device) and decoder (server) are
    # network layers, timed with the head and tail (bench-head on its bundle)
    score = s.score(meter.compute(), total, elements, encode_s, decode_s)
    return state["split"], RateAccuracyRecord(f"learned-beta{state['beta']:g}", score)


def _with_bottlenecks(s: _Sweep, g: SplitGraph, points: list[RatePoint]) -> list[RatePoint]:
    """``points`` with each configured bottleneck's record added at its split point."""
    points = list(points)
    for path in s.config.bottlenecks:
        split, record = _bottleneck_record(s, path)
        at = [i for i, p in enumerate(points) if p.name == split]
        if at:
            points[at[0]] = dataclasses.replace(
                points[at[0]], results=points[at[0]].results + (record,)
            )
        else:
            points.append(_rate_point(s, g.point(split), (record,)))
    return sorted(points, key=lambda p: p.index)


def _image_baselines(s: _Sweep) -> tuple[ImageBaselineRecord, ...]:
    """The input image sent as PNG (if configured) and JPEG at each quality."""
    variants = [("png", None)] if s.config.png else []
    variants += [("jpeg", q) for q in s.config.jpeg_qualities]
    input_elements = math.prod(s.frame_shape)
    out = []
    for fmt, quality in tqdm(variants, desc="image baselines", **s.show):
        m, total, encode_s, decode_s = s.meter(), 0, 0.0, 0.0
        for x, y, n in s.batches():
            frames_hat = []
            for i in range(n):
                xi, size, enc, dec = _timed_image_roundtrip(x[i], fmt, quality)
                frames_hat.append(xi)
                total, encode_s, decode_s = total + size, encode_s + enc, decode_s + dec
            m.update(s.model(s.normalize(_pad(torch.stack(frames_hat), s.batch)))[:n], y)
        name = fmt if quality is None else f"jpeg{quality}"
        score = s.score(m.compute(), total, input_elements, encode_s, decode_s)
        out.append(ImageBaselineRecord(name, fmt, quality, score))
    return tuple(out)


@torch.no_grad()
def rate_accuracy(
    model: nn.Module,
    dataset,
    config: RateAccuracyConfig = RateAccuracyConfig(),
    *,
    calibration_data=None,
) -> RateAccuracyReport:
    """Sweeps split points x codecs on ``dataset``.

    Args:
        model: a splitnet model (``create_model``) with trained weights.
        dataset: an :func:`splitnet.data.open_dataset` result of fixed frame size.
        config: what to sweep.
        calibration_data: frames for ``config.calibrate`` (default: ``dataset``).

    Returns:
        A :class:`RateAccuracyReport`; each record's ``drop_points`` is
        100 x (uncompressed - coded).

    Raises:
        ProfileError: no point to sweep; SplitError: an unknown point.
    """
    from splitnet.codec import get_codec

    model.eval()
    s = _Sweep(model, dataset, config)
    points, g = _sweep_points(s)
    codecs = [get_codec(name, **config.codec_options) for name in config.codecs]
    s.reference = _reference(s)
    cal = calibration_data if calibration_data is not None else dataset
    rate_points = []
    bar = tqdm(total=len(points) * len(codecs), desc="points x codecs", unit="run", **s.show)
    for p in points:
        rate_points.append(_point_records(s, g, p, codecs, cal))
        bar.update(len(codecs))
    bar.close()
    rate_points = _with_bottlenecks(s, g, rate_points)
    return RateAccuracyReport(
        model=getattr(model, "splitnet_name", type(model).__name__),
        input=s.frame_shape,
        frames=s.frames,
        metric=s.metric,
        threshold=config.threshold,
        codec_options=dict(config.codec_options),
        calibrate=config.calibrate,
        reference={**s.reference, "kb_per_frame_float32": 4 * math.prod(s.frame_shape) / 1000},
        points=tuple(rate_points),
        baselines=_image_baselines(s),
    )
