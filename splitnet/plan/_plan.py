"""A plan: the candidates ranked on one link, the crossovers, and their renderings."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from splitnet._table import format_table
from splitnet.plan._cost import (
    OBJECTIVES,
    Bounds,
    Candidate,
    Cost,
    Crossover,
    Link,
    Pipeline,
    build_candidates,
    crossovers,
    rank,
)
from splitnet.plan._errors import PlanError
from splitnet.plan._inputs import (
    check_same_model,
    read_device_files,
    read_profile,
    read_rate_accuracy,
)
from splitnet.plan._units import format_bandwidth

__all__ = ["PLOT_RANGE_BPS", "Plan", "make_plan", "plan_candidates"]

PLOT_RANGE_BPS = (1e5, 1e9)  # 0.1 Mbit/s .. 1 Gbit/s: the crossovers and the figure


@dataclass(frozen=True)
class Plan:
    """The candidates on one link, best first.

    Attributes:
        model, input: what is planned.
        link: the link it is planned for.
        objective: ``latency`` or ``fps``.
        bounds: the metric-drop and device-memory bounds.
        ranked: the candidates that meet the bounds, best first.
        excluded: the others, with what they miss.
        crossovers: bandwidths in :data:`PLOT_RANGE_BPS` where the best candidate
            under the bounds changes (at this RTT and objective).
        notes: what was estimated or skipped, and where the figures come from.
        inputs: the files read.
        pipeline: how the frames flow (window, shared cores, source time, batching delay).
    """

    model: str
    input: tuple[int, ...]
    link: Link
    objective: str
    bounds: Bounds
    ranked: tuple[Cost, ...]
    excluded: tuple[Cost, ...]
    crossovers: tuple[Crossover, ...]
    notes: tuple[str, ...] = ()
    inputs: dict | None = None
    pipeline: Pipeline = Pipeline()

    @property
    def best(self) -> Cost:
        return self.ranked[0]

    @property
    def candidates(self) -> list[Candidate]:
        """The candidates that meet the bounds, in rank order."""
        return [k.candidate for k in self.ranked]

    def to_dict(self) -> dict:
        """The JSON document of ``splitnet plan --json``: every candidate with every term."""
        return {
            "model": self.model,
            "input": list(self.input),
            "link": {"bandwidth_bps": self.link.bandwidth_bps, "rtt_ms": 1000 * self.link.rtt_s},
            "objective": self.objective,
            "pipeline": self.pipeline.to_dict(),
            "bounds": {
                "max_drop_points": self.bounds.max_drop_points,
                "max_device_memory_bytes": self.bounds.max_device_memory_bytes,
            },
            "best": self.best.candidate.name,
            "ranked": [{"rank": i + 1, **k.to_dict()} for i, k in enumerate(self.ranked)],
            "excluded": [k.to_dict() for k in self.excluded],
            "crossovers": [x.to_dict() for x in self.crossovers],
            "notes": list(self.notes),
            "inputs": dict(self.inputs or {}),
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def format_table(self, *, top: int = 10) -> str:
        """The ranked table (the first ``top``, and the baselines wherever they rank),
        then the link, the crossovers and the notes."""
        header = ["rank", "candidate", "device ms", "kB/frame", "link ms", "server ms"]
        header += ["latency ms", "FPS", "stream ms", "slowest", "drop", "device MB"]
        shown = [
            (i, k) for i, k in enumerate(self.ranked) if i < top or k.candidate.kind != "split"
        ]
        rows = [_row(i + 1, k) for i, k in shown]
        rows += [_row(None, k) for k in self.excluded if k.candidate.kind != "split"]
        lines = [format_table(header, rows, align="rl" + "r" * (len(header) - 2))]
        b = self.bounds
        bounds = []
        if b.max_drop_points is not None:
            bounds.append(f"drop <= {b.max_drop_points:g} points")
        if b.max_device_memory_bytes is not None:
            bounds.append(f"device memory <= {b.max_device_memory_bytes / 1e6:g} MB")
        c, h, w = self.input
        lines += [
            "",
            f"{self.model} {c}x{h}x{w} over {format_bandwidth(self.link.bandwidth_bps)}, "
            f"RTT {1000 * self.link.rtt_s:g} ms{_pipeline_text(self.pipeline)}; "
            f"objective {self.objective}"
            f"{'; ' + ', '.join(bounds) if bounds else ''}: "
            f"{len(self.ranked)} candidates meet the bounds, {len(self.excluded)} do not "
            f"(x: outside the bounds; *: estimated term)",
            f"best: {self.best.candidate.name} ({_summary(self.best)})",
        ]
        if self.crossovers:
            lines.append(
                "the best changes at: "
                + "; ".join(
                    f"{format_bandwidth(x.bandwidth_bps)} ({x.below} -> {x.above})"
                    for x in self.crossovers
                )
            )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _pipeline_text(p: Pipeline) -> str:
    parts = [f"window {p.window}"] if p.window else []
    if p.shared_cores:
        parts.append(f"device and server on {p.shared_cores:g} shared core(s)")
    if p.source_ms:
        parts.append(f"source {p.source_ms:g} ms")
    if p.server_delay_ms:
        parts.append(f"batching delay {p.server_delay_ms:g} ms")
    if p.head_threads:
        parts.append(f"heads on {p.head_threads} OpenVINO thread(s)")
    return ", " + ", ".join(parts) if parts else ""


def _summary(k: Cost) -> str:
    return f"{k.latency_ms:.1f} ms, {k.fps:.2f} FPS, drop {k.candidate.drop_points:+.2f}"


def _row(rank: int | None, k: Cost) -> list[str]:
    c = k.candidate
    star = {
        t: "*" if t in c.estimated else ""
        for t in ("head_ms", "encode_ms", "decode_ms", "tail_ms", "drop_points")
    }
    device_star = star["head_ms"] or star["encode_ms"]
    server_star = star["decode_ms"] or star["tail_ms"]
    return [
        "x" if rank is None else str(rank),
        c.name,
        f"{c.device_ms:.2f}{device_star}",
        f"{c.wire_bytes / 1e3:.2f}",
        f"{k.link_ms:.2f}",
        f"{c.server_ms:.2f}{server_star}",
        f"{k.latency_ms:.1f}",
        f"{k.fps:.2f}" if k.fps != float("inf") else "inf",
        f"{k.stream_latency_ms:.1f}",
        k.bottleneck,
        f"{c.drop_points:+.2f}{star['drop_points']}",
        f"{c.device_memory_bytes / 1e6:.1f}",
    ]


def plan_candidates(
    candidates: Sequence[Candidate],
    link: Link,
    *,
    objective: str = "latency",
    bounds: Bounds | None = None,
    model: str = "",
    input_shape: Sequence[int] = (0, 0, 0),
    notes: Sequence[str] = (),
    inputs: dict | None = None,
    pipeline: Pipeline | None = None,
) -> Plan:
    """Ranks ``candidates`` on ``link`` and finds the crossovers (see :func:`make_plan`)."""
    bounds = bounds if bounds is not None else Bounds()
    pipeline = pipeline or Pipeline()
    ranked, excluded = rank(candidates, link, objective=objective, bounds=bounds, pipeline=pipeline)
    feasible = [k.candidate for k in ranked]
    xs = crossovers(
        feasible,
        rtt_s=link.rtt_s,
        objective=objective,
        low_bps=PLOT_RANGE_BPS[0],
        high_bps=PLOT_RANGE_BPS[1],
        pipeline=pipeline,
    )
    return Plan(
        model=model,
        input=tuple(input_shape),
        link=link,
        objective=objective,
        bounds=bounds,
        ranked=tuple(ranked),
        excluded=tuple(excluded),
        crossovers=tuple(xs),
        notes=tuple(notes),
        inputs=inputs,
        pipeline=pipeline,
    )


def make_plan(
    profile: str | os.PathLike | Sequence[str | os.PathLike],
    rate_accuracy: str | os.PathLike,
    *,
    bandwidth_bps: float,
    rtt_s: float = 0.0,
    objective: str = "latency",
    max_drop_points: float | None = None,
    max_device_memory_mb: float | None = None,
    server_profile: str | os.PathLike | None = None,
    model: str | None = None,
    input_shape: Sequence[int] | None = None,
    pipeline: Pipeline | None = None,
) -> Plan:
    """Reads the measurements and ranks every candidate on a link.

    Args:
        profile: ``splitnet profile --measure-fps --json`` file, optionally with
            ``splitnet bench-head --json`` files (a list) that replace head times.
        rate_accuracy: ``splitnet rate-accuracy``'s ``results.json``.
        bandwidth_bps, rtt_s: the link.
        objective: ``latency`` (end to end, one frame) or ``fps`` (pipelined).
        max_drop_points: bound on the metric drop (points).
        max_device_memory_mb: bound on the device memory (10^6 bytes).
        server_profile: a profile run on the server (``--measure-tail``).
        model, input_shape: what the caller expects; checked against the files.
        pipeline: how the frames flow (:class:`~splitnet.plan.Pipeline`: the daemon's
            window, shared cores, source time, the server's batching delay); default
            none of them.

    Returns:
        A :class:`Plan`.

    Raises:
        PlanError: unreadable or mismatched files, a missing measurement, an unknown
            objective, a bound that no candidate meets.

    Example:
        >>> plan = make_plan("p.json", "results.json", bandwidth_bps=20e6, rtt_s=0.03)
        >>> print(plan.format_table())
    """
    if objective not in OBJECTIVES:
        raise PlanError(f"unknown objective {objective!r}; objectives: {', '.join(OBJECTIVES)}")
    if not bandwidth_bps > 0:
        raise PlanError(f"the bandwidth must be > 0, got {bandwidth_bps:g} bit/s")
    if rtt_s < 0:
        raise PlanError(f"the RTT must be >= 0, got {rtt_s:g} s")
    if max_device_memory_mb is not None and max_device_memory_mb <= 0:
        raise PlanError(f"--max-device-memory must be > 0 MB, got {max_device_memory_mb:g}")
    paths = [profile] if isinstance(profile, (str, os.PathLike)) else list(profile)
    prof, heads = read_device_files([os.fspath(p) for p in paths])
    rate = read_rate_accuracy(rate_accuracy)
    server = read_profile(server_profile) if server_profile is not None else None
    if model is not None or input_shape is not None:
        check_same_model(
            "the command line",
            model if model is not None else prof.model,
            tuple(input_shape) if input_shape is not None else prof.input,
            prof.path,
            prof.model,
            prof.input,
        )
    candidates, notes = build_candidates(prof, rate, heads=heads, server=server)
    bounds = Bounds(
        max_drop_points=max_drop_points,
        max_device_memory_bytes=None
        if max_device_memory_mb is None
        else max_device_memory_mb * 1e6,
    )
    inputs = {
        "profile": [os.fspath(p) for p in paths],
        "rate_accuracy": os.fspath(rate_accuracy),
        "server_profile": None if server_profile is None else os.fspath(server_profile),
    }
    return plan_candidates(
        candidates,
        Link(bandwidth_bps, rtt_s),
        objective=objective,
        bounds=bounds,
        model=prof.model,
        input_shape=prof.input,
        notes=notes,
        inputs=inputs,
        pipeline=pipeline,
    )
