"""Head benchmark: frames per second and latency percentiles of one synchronous request.

``splitnet bench-head`` and the profiler's ``--measure-fps`` call
:func:`benchmark_head`; :func:`benchmark_callable` times any function the same
way (the torch baseline of ``benchmarks/bench_head.py``). No torch here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from splitnet._errors import ConfigError

__all__ = ["HeadBenchmark", "benchmark_callable", "benchmark_head"]


@dataclass(frozen=True)
class HeadBenchmark:
    """Timings of one frame at a time, after warm-up.

    Attributes:
        label: what was timed (bundle name and device).
        fps: frames per second (iterations / measured seconds).
        latency_ms_mean, latency_ms_p50, latency_ms_p90, latency_ms_p95, latency_ms_p99,
        latency_ms_min, latency_ms_max: per-frame latency.
        iterations: timed frames.
        seconds: measured wall time.
    """

    label: str
    fps: float
    latency_ms_mean: float
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p95: float
    latency_ms_p99: float
    latency_ms_min: float
    latency_ms_max: float
    iterations: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.label}: {self.fps:.2f} FPS, latency p50 {self.latency_ms_p50:.2f} ms, "
            f"p90 {self.latency_ms_p90:.2f} ms, p99 {self.latency_ms_p99:.2f} ms "
            f"({self.iterations} frames in {self.seconds:.1f} s)"
        )


def benchmark_callable(
    fn: Callable[[], Any],
    *,
    seconds: float = 5.0,
    warmup: float = 1.0,
    min_iterations: int = 3,
    label: str = "",
    progress: bool = False,
) -> HeadBenchmark:
    """Calls ``fn()`` repeatedly: ``warmup`` seconds untimed, then ``seconds`` timed.

    At least ``min_iterations`` calls are timed, however long they take.
    """
    if seconds <= 0 or warmup < 0 or min_iterations < 1:
        raise ConfigError("seconds must be > 0, warmup >= 0 and min_iterations >= 1")
    end = time.perf_counter() + warmup
    fn()  # at least one warm-up call: first-run allocations are not latency
    while time.perf_counter() < end:
        fn()
    bar = _bar(seconds, label, progress)
    latencies: list[float] = []
    start = time.perf_counter()
    last = start
    while True:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        latencies.append(t1 - t0)
        if bar is not None and t1 - last >= 0.2:
            bar.update(round(min(t1 - start, seconds) - bar.n, 1))
            last = t1
        if t1 - start >= seconds and len(latencies) >= min_iterations:
            break
    elapsed = time.perf_counter() - start
    if bar is not None:
        bar.close()
    ms = np.asarray(latencies) * 1e3
    return HeadBenchmark(
        label=label,
        fps=len(latencies) / elapsed,
        latency_ms_mean=float(ms.mean()),
        latency_ms_p50=float(np.percentile(ms, 50)),
        latency_ms_p90=float(np.percentile(ms, 90)),
        latency_ms_p95=float(np.percentile(ms, 95)),
        latency_ms_p99=float(np.percentile(ms, 99)),
        latency_ms_min=float(ms.min()),
        latency_ms_max=float(ms.max()),
        iterations=len(latencies),
        seconds=elapsed,
    )


def benchmark_head(
    runner_or_bundle: Any,
    *,
    seconds: float = 5.0,
    warmup: float = 1.0,
    device: str = "CPU",
    threads: int | None = None,
    hint: str = "latency",
    precision: str | None = "f32",
    frame: np.ndarray | None = None,
    progress: bool = False,
) -> HeadBenchmark:
    """FPS and latency of a bundle's head, one synchronous request at a time.

    Args:
        runner_or_bundle: a :class:`~splitnet.device.HeadRunner` or a bundle folder
            (then ``device``, ``threads``, ``hint``, ``precision`` build the runner).
        seconds, warmup: timed and untimed durations.
        frame: the frame to feed (default: seeded random pixels of the right size).
        progress: a progress bar on stderr.
    """
    from splitnet.device._runner import HeadRunner

    if isinstance(runner_or_bundle, HeadRunner):
        runner = runner_or_bundle
    elif isinstance(runner_or_bundle, (str, os.PathLike)):
        runner = HeadRunner(
            runner_or_bundle, device=device, threads=threads, hint=hint, precision=precision
        )
    else:
        raise TypeError(f"expected a HeadRunner or a bundle folder, got {type(runner_or_bundle)}")
    if frame is None:
        frame = np.random.default_rng(0).integers(0, 256, runner.frame_shape, dtype=np.uint8)
    x = runner.check_frame(frame)
    request = runner.request

    def run() -> None:
        request.infer({0: x})

    return benchmark_callable(
        run,
        seconds=seconds,
        warmup=warmup,
        label=f"{runner.manifest.name} on {runner.device}",
        progress=progress,
    )


def _bar(seconds: float, label: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional on a device
        return None
    return tqdm(
        total=seconds,
        desc=label or "benchmark",
        unit="s",
        leave=False,
        bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} s",
    )
