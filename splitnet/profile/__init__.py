"""Per-split-point profile: compute, memory and bandwidth of every cut; rate–accuracy.

For each split point: the head's and tail's multiply–accumulates (counted by
``torch.utils.flop_counter`` on fake tensors, in one pass over the graph), the
head's parameters and peak activation bytes, the bytes crossing the cut at
each bit width and the bitrate at each frame rate, next to the baseline of
sending the image itself.

:func:`rate_accuracy` measures the other side of the trade-off: the metric of
the split model through real codecs at each point, against sending the image
as PNG/JPEG, as a :class:`RateAccuracyReport`.

Example:
    >>> from splitnet.profile import profile_model
    >>> report = profile_model("unet-vgg16", input_shape=(3, 256, 1600), kind="pool")
    >>> print(report.format_table())
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence

from splitnet.profile._baseline import PNG_OPTIONS, STAND_IN, code_image, image_png_bytes
from splitnet.profile._plots import plot_rate_accuracy
from splitnet.profile._rate import (
    DEFAULT_CODECS,
    DEFAULT_JPEG_QUALITIES,
    RateAccuracyConfig,
    image_roundtrip,
    rate_accuracy,
)
from splitnet.profile._rate_report import (
    ImageBaselineRecord,
    RateAccuracyRecord,
    RateAccuracyReport,
    RatePoint,
    RateScore,
    TargetResult,
)
from splitnet.profile._report import (
    Baseline,
    ProfileError,
    ProfileRecord,
    ProfileReport,
    bits_key,
    fps_key,
    human_bytes,
    mbps,
)
from splitnet.split import SplitError, SplitGraph, SplitPoint

__all__ = [
    "DEFAULT_CODECS",
    "DEFAULT_JPEG_QUALITIES",
    "PNG_OPTIONS",
    "Baseline",
    "ImageBaselineRecord",
    "RateAccuracyConfig",
    "RateAccuracyRecord",
    "RateAccuracyReport",
    "RatePoint",
    "RateScore",
    "TargetResult",
    "code_image",
    "image_roundtrip",
    "plot_rate_accuracy",
    "rate_accuracy",
    "ProfileRecord",
    "ProfileReport",
    "bits_key",
    "check_bits",
    "check_fps",
    "fps_key",
    "human_bytes",
    "image_baseline",
    "mbps",
    "plot_report",
    "point_macs",
    "profile_graph",
    "profile_model",
    "select_points",
]

DEFAULT_BITS = (32, 16, 8, 4)
DEFAULT_FPS = (10.0, 12.0)


def point_macs(g: SplitGraph, *, progress: bool = False) -> list[int]:
    """Multiply–accumulates of each point's own operation; ``sum`` is the model's total."""
    from splitnet.profile._flops import point_macs as _macs
    from splitnet.profile._graphinfo import graph_info

    return _macs(g, graph_info(g), progress=progress)


def plot_report(report: ProfileReport, path: str | os.PathLike, **kwargs) -> None:
    """Writes the three-panel figure of ``report`` to a PNG file (see ``_plots.plot_report``)."""
    from splitnet.profile._plots import plot_report as _plot

    _plot(report, path, **kwargs)


def select_points(
    g: SplitGraph,
    *,
    kind: str | Iterable[str] | None = None,
    points: str | Iterable[str | int] | None = None,
) -> list[SplitPoint]:
    """Points chosen by kind or by a list of names, indices and index ranges.

    Args:
        g: a traced graph.
        kind: one kind or several (``"pool"``, ``["conv", "add"]``).
        points: what :meth:`~splitnet.split.SplitGraph.parse_points` takes: names,
            indices, inclusive index ranges ``"a-b"``, kinds, ``all``
            (``"3,10-20,encoder.block3.pool"``).

    Returns:
        The points in execution order, without repeats; every point when
        neither ``kind`` nor ``points`` is given.

    Raises:
        SplitError: an unknown kind, name or index.
    """
    selected = g.select(kind=kind) if kind is not None else list(g.points)
    if points is None:
        return selected
    wanted = {p.index for p in g.parse_points(points)}
    return [p for p in selected if p.index in wanted]


def image_baseline(
    input_shape: Sequence[int],
    *,
    fps: Iterable[float] = DEFAULT_FPS,
    image: str | os.PathLike | None = None,
) -> Baseline:
    """The cost of sending the image itself: raw 8-bit and PNG bytes and Mbit/s.

    Args:
        input_shape: ``(C, H, W)``.
        fps: frame rates.
        image: a real image to measure the PNG size on (resized to ``H x W``);
            default: frame 0 of the synthetic steel dataset.
    """
    c, h, w = (int(d) for d in input_shape)
    fps = check_fps(fps)
    raw = c * h * w
    png = image_png_bytes(c, h, w, image=image)
    rates = {"raw": {f: mbps(raw, f) for f in fps}}
    if png is not None:
        rates["png"] = {f: mbps(png, f) for f in fps}
    return Baseline(
        raw_bytes=raw,
        png_bytes=png,
        image=STAND_IN if image is None else os.path.basename(os.fspath(image)),
        mbps=rates,
    )


def profile_graph(
    g: SplitGraph,
    points: Iterable[int | str | SplitPoint] | None = None,
    *,
    bits: Iterable[int] = DEFAULT_BITS,
    fps: Iterable[float] = DEFAULT_FPS,
    image: str | os.PathLike | None = None,
    progress: bool = False,
) -> ProfileReport:
    """Profiles the split points of a traced graph.

    Args:
        g: a traced graph (batch 1, one ``C x H x W`` input).
        points: points to report (default: all). Counting covers the whole
            graph either way, so cumulative figures are exact.
        bits: bit widths per crossing element, each in 1..32.
        fps: frame rates, each > 0.
        image: real image for the PNG baseline (default: a synthetic stand-in).
        progress: show a tqdm bar on stderr.

    Returns:
        A :class:`ProfileReport`.

    Raises:
        ValueError: a bit width outside 1..32, a frame rate <= 0, an unknown point.
    """
    from splitnet.profile._flops import point_macs as _macs
    from splitnet.profile._graphinfo import graph_info
    from splitnet.profile._memory import head_params, peak_activation_bytes

    bits = check_bits(bits)
    fps = check_fps(fps)
    chosen = list(g.points) if points is None else [g.point(p) for p in points]
    chosen = sorted({p.index: p for p in chosen}.values(), key=lambda p: p.index)
    if len(g.input_shapes) != 1 or len(g.input_shapes[0]) != 4 or g.input_shapes[0][0] != 1:
        raise ProfileError(
            f"the profiler takes one 1xCxHxW input, {g.name} has inputs {g.input_shapes}"
        )
    input_chw = tuple(g.input_shapes[0][1:])
    baseline = image_baseline(input_chw, fps=fps, image=image)

    info = graph_info(g)
    macs = _macs(g, info, progress=progress)
    params = head_params(g, info)
    peaks = peak_activation_bytes(g, info)
    total = sum(macs)
    cum, running = [], 0
    for m in macs:
        running += m
        cum.append(running)
    total_params = params[-1].count if params else 0

    records = []
    for p in chosen:
        nbytes = {b: p.elements * b / 8 for b in bits}
        records.append(
            ProfileRecord(
                index=p.index,
                name=p.name,
                kind=p.kind,
                op=p.op,
                tensors=p.tensors,
                elements=p.elements,
                device_macs=cum[p.index],
                server_macs=total - cum[p.index],
                device_params=params[p.index].count,
                device_param_bytes={
                    "float32": params[p.index].float32_bytes,
                    "float16": params[p.index].float16_bytes,
                },
                peak_activation_bytes=peaks[p.index],
                bytes=nbytes,
                mbps={b: {f: mbps(nbytes[b], f) for f in fps} for b in bits},
            )
        )
    return ProfileReport(
        model=g.name,
        input=input_chw,
        bits=bits,
        fps=fps,
        total_macs=total,
        total_params=total_params,
        points=tuple(records),
        baseline=baseline,
    )


def profile_model(
    name: str,
    *,
    input_shape: Sequence[int],
    kind: str | Iterable[str] | None = None,
    points: str | Iterable[str | int] | None = None,
    bits: Iterable[int] = DEFAULT_BITS,
    fps: Iterable[float] = DEFAULT_FPS,
    image: str | os.PathLike | None = None,
    num_classes: int | None = None,
    progress: bool = False,
    measure_fps: bool = False,
    measure_tail: str | None = None,
    measure_seconds: float = 3.0,
    head_threads: int | None = None,
    **model_kwargs,
) -> ProfileReport:
    """Builds a registered model, traces it at ``input_shape`` and profiles its points.

    Args:
        name: a registered model (``splitnet.list_models()``).
        input_shape: ``(C, H, W)``.
        kind, points: which points to report (see :func:`select_points`); default all.
        bits, fps, image, progress: see :func:`profile_graph`.
        num_classes: output classes (default: the model's).
        measure_fps: also export each point and time its head with OpenVINO
            (``device_fps``, as ``splitnet bench-head``) and its tail in torch
            on the CPU (``tail_latency_ms``), ``measure_seconds`` each; the whole
            model is exported and timed as one head too (``whole_model``);
            ``head_threads``: OpenVINO's inference threads for them (default: its choice).
        measure_tail: ``"cpu"`` or ``"cuda"``: time each point's tail and the whole
            model in torch on that device, without OpenVINO (on the server machine,
            this is the server profile of ``splitnet plan``); with ``measure_fps``
            these tail times replace the CPU ones.
        **model_kwargs: passed to ``create_model`` (e.g. ``width=0.25``).
    """
    import torch

    from splitnet.models import create_model
    from splitnet.split import trace

    bits = check_bits(bits)  # fail before the (slow) model build
    fps = check_fps(fps)
    model = create_model(name, num_classes=num_classes, **model_kwargs)
    g = trace(model, torch.zeros(1, *input_shape), name=name)
    chosen = select_points(g, kind=kind, points=points)
    if not chosen:
        raise SplitError(f"no split point of {name} matches the selection")
    report = profile_graph(g, chosen, bits=bits, fps=fps, image=image, progress=progress)
    if not (measure_fps or measure_tail):
        return report
    from splitnet.profile import _measure

    if measure_tail is not None:
        _measure.torch_device(measure_tail)  # fail before the timing starts
    records, whole = list(report.points), None
    if measure_fps:
        last = profile_graph(g, [g.points[-1]], bits=bits, fps=fps, image=image).points[0]
        *records, whole = _measure.measure_records(
            model,
            [*records, last],
            input_shape=input_shape,
            seconds=measure_seconds,
            progress=progress,
            threads=head_threads,
        )
    if measure_tail is not None:
        records = _measure.measure_tails(
            g, records, seconds=measure_seconds, device=measure_tail, progress=progress
        )
    tail_device = measure_tail or "cpu"
    return dataclasses.replace(
        report,
        points=tuple(records),
        whole_model=whole,
        model_latency_ms=_measure.measure_model(
            model, input_shape=input_shape, seconds=measure_seconds, device=tail_device
        ),
        tail_device=tail_device,
    )


def check_bits(bits: Iterable[int]) -> tuple[int, ...]:
    """Bit widths as a tuple without repeats; raises ``ValueError`` outside 1..32."""
    out = []
    for b in bits:
        if isinstance(b, bool) or int(b) != b or not 1 <= int(b) <= 32:
            raise ProfileError(f"bit widths must be integers in 1..32, got {b}")
        out.append(int(b))
    if not out:
        raise ProfileError("at least one bit width is needed")
    return tuple(dict.fromkeys(out))


def check_fps(fps: Iterable[float]) -> tuple[float, ...]:
    """Frame rates as a tuple without repeats; raises ``ValueError`` unless each is > 0."""
    out = []
    for f in fps:
        f = float(f)
        if not f > 0 or f == float("inf"):
            raise ProfileError(f"frame rates must be > 0, got {f:g}")
        out.append(f)
    if not out:
        raise ProfileError("at least one frame rate is needed")
    return tuple(dict.fromkeys(out))
