"""Triton's ModelStatistics: per-model inference and execution counts and durations.

Fed once per answered frame with how it was batched (:class:`BatchStats`): the
frame's wait in the queue and its share of the batch's compute time, so that
``inference_count / execution_count`` is the mean batch size (what shows that
dynamic batching works) and the compute durations sum to the tail's busy time.
``compute_input`` is the payload's decoding, ``compute_output`` the building of the
answer; the three compute durations have the same count, as Triton's do
(perf_analyzer refuses statistics where they differ).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from splitnet.server._batcher import BatchStats
from splitnet.wire import inference_pb2 as pb

__all__ = ["ModelStats", "Statistics"]


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)


@dataclass
class ModelStats:
    """The running totals of one model."""

    last_inference_ms: int = 0
    inference_count: int = 0
    # frames of a batch of n count 1/n each: the sum is the number of batches run
    executions: float = 0.0
    success: _Duration = field(default_factory=_Duration)
    fail: _Duration = field(default_factory=_Duration)
    queue: _Duration = field(default_factory=_Duration)
    compute: _Duration = field(default_factory=_Duration)
    compute_input: _Duration = field(default_factory=_Duration)
    compute_output: _Duration = field(default_factory=_Duration)
    # batch size -> [frames, compute, input and output seconds of those frames]
    batches: dict[int, list[float]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    )

    @property
    def execution_count(self) -> int:
        return round(self.executions)


class Statistics:
    """Statistics of every model, by name."""

    def __init__(self) -> None:
        self.models: dict[str, ModelStats] = defaultdict(ModelStats)

    def observe_batch(
        self, model: str, stats: BatchStats, *, input_s: float = 0.0, output_s: float = 0.0
    ) -> None:
        """Counts one answered frame: ``stats`` from the batcher, ``input_s`` its decoding,
        ``output_s`` the building of its answer."""
        s = self.models[model]
        s.last_inference_ms = int(time.time() * 1000)
        s.inference_count += 1
        s.executions += 1 / stats.batch_size
        s.success.add(stats.queue_s + stats.compute_s)
        s.queue.add(stats.queue_s)
        s.compute.add(stats.compute_s / stats.batch_size)
        s.compute_input.add(input_s)
        s.compute_output.add(output_s)
        entry = s.batches[stats.batch_size]
        entry[0] += 1
        entry[1] += stats.compute_s / stats.batch_size
        entry[2] += input_s
        entry[3] += output_s

    def count_failure(self, model: str) -> None:
        self.models[model].fail.add(0.0)

    def forget(self, model: str) -> None:
        self.models.pop(model, None)

    def message(self, model: str, version: str) -> pb.ModelStatistics:
        """The ModelStatistics message of one model (zeros when it has answered nothing yet)."""
        s = self.models.get(model) or ModelStats()
        out = pb.ModelStatistics(
            name=model,
            version=version,
            last_inference=s.last_inference_ms,
            inference_count=s.inference_count,
            execution_count=s.execution_count,
        )
        st = out.inference_stats
        for name in ("success", "fail", "queue"):
            d = getattr(s, name)
            getattr(st, name).count, getattr(st, name).ns = d.count, d.ns
        st.compute_infer.count, st.compute_infer.ns = s.compute.count, s.compute.ns
        st.compute_input.count, st.compute_input.ns = s.compute_input.count, s.compute_input.ns
        st.compute_output.count, st.compute_output.ns = s.compute_output.count, s.compute_output.ns
        for size in sorted(s.batches):
            frames, seconds, input_s, output_s = s.batches[size]
            batches = round(frames / size)
            b = out.batch_stats.add(batch_size=size)
            for d, total in (
                (b.compute_infer, seconds),
                (b.compute_input, input_s),
                (b.compute_output, output_s),
            ):
                d.count, d.ns = batches, int(total * 1e9)
        return out
