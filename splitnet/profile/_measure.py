"""Measured speed per split point: the head on OpenVINO, the tail in torch.

Each point is exported as a real bundle (``splitnet.export.export_bundle``, in a
temporary folder) and its head is timed by ``splitnet.device.benchmark_head``,
the code behind ``splitnet bench-head``; the exported head's size is recorded
too. The tail is timed in torch eager on this machine.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from splitnet.profile._report import ProfileRecord

__all__ = ["measure_records"]


def measure_records(
    model: nn.Module,
    records: Sequence[ProfileRecord],
    *,
    input_shape: Sequence[int],
    seconds: float = 3.0,
    device: str = "CPU",
    progress: bool = False,
) -> list[ProfileRecord]:
    """``records`` with ``device_fps``, ``tail_latency_ms`` and ``exported_head_bytes`` filled in."""
    from tqdm import tqdm

    from splitnet.device import benchmark_callable, benchmark_head
    from splitnet.export import export_bundle, load_tail

    out = []
    with tempfile.TemporaryDirectory(prefix="splitnet-measure-") as tmp:
        for r in tqdm(
            records, desc="measuring FPS", unit="point", disable=not progress, leave=False
        ):
            bundle = Path(tmp) / str(r.index)
            export_bundle(
                model,
                input_shape=tuple(input_shape),
                split=r.index,
                out_dir=bundle,
                codec="f16",
                parity_frames=1,
            )
            head = benchmark_head(
                bundle, seconds=seconds, warmup=min(1.0, seconds / 3), device=device
            )
            tail = load_tail(bundle, verify=False)
            inputs = [torch.randn(t.shape) for t in r.tensors]
            with torch.inference_mode():
                tail_bench = benchmark_callable(
                    lambda tail=tail, inputs=inputs: tail(*inputs),
                    seconds=seconds,
                    warmup=min(1.0, seconds / 3),
                )
            head_bytes = sum(f.stat().st_size for f in bundle.glob("head.*"))
            out.append(
                dataclasses.replace(
                    r,
                    device_fps=head.fps,
                    tail_latency_ms=tail_bench.latency_ms_p50,
                    exported_head_bytes=head_bytes,
                )
            )
    return out
