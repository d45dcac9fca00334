"""Measured speed per split point: the head on OpenVINO, the tail in torch.

Each point is exported as a real bundle (``splitnet.export.export_bundle``, in a
temporary folder) and its head is timed by ``splitnet.device.benchmark_head``,
the code behind ``splitnet bench-head``; the exported head's size is recorded
too. The tail is timed in torch eager on this machine.

:func:`measure_tails` times only the torch side (each point's tail and the
whole model), on the CPU or a CUDA device, without OpenVINO: run on the server
machine, it is the server profile that ``splitnet plan --server-profile`` reads.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from splitnet.profile._report import ProfileError, ProfileRecord

__all__ = ["measure_model", "measure_records", "measure_tails", "torch_device"]


def torch_device(name: str) -> torch.device:
    """``"cpu"`` or ``"cuda"`` (``"cuda:1"``) as a device this machine has."""
    dev = torch.device(name)
    if dev.type not in ("cpu", "cuda"):
        raise ProfileError(f"tails are timed on cpu or cuda, got {name!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ProfileError(f"{name} was asked for, but torch sees no CUDA device on this machine")
    return dev


def _timed(fn: Callable[[], object], device: torch.device, seconds: float) -> float:
    """Median latency of ``fn()`` in ms, synchronising a CUDA device after each call."""
    from splitnet.device import benchmark_callable

    def call() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        return benchmark_callable(
            call, seconds=seconds, warmup=min(1.0, seconds / 3)
        ).latency_ms_p50


def measure_records(
    model: nn.Module,
    records: Sequence[ProfileRecord],
    *,
    input_shape: Sequence[int],
    seconds: float = 3.0,
    device: str = "CPU",
    progress: bool = False,
    threads: int | None = None,
) -> list[ProfileRecord]:
    """``records`` with ``device_fps``, ``tail_latency_ms`` and ``exported_head_bytes`` filled in
    (``threads``: OpenVINO's inference threads for the heads)."""
    from tqdm import tqdm

    from splitnet.device import benchmark_head
    from splitnet.export import export_bundle, load_tail

    out = []
    cpu = torch.device("cpu")
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
                bundle,
                seconds=seconds,
                warmup=min(1.0, seconds / 3),
                device=device,
                threads=threads,
            )
            tail = load_tail(bundle, verify=False)
            inputs = [torch.randn(t.shape) for t in r.tensors]
            tail_ms = _timed(lambda tail=tail, inputs=inputs: tail(*inputs), cpu, seconds)
            head_bytes = sum(f.stat().st_size for f in bundle.glob("head.*"))
            out.append(
                dataclasses.replace(
                    r,
                    device_fps=head.fps,
                    tail_latency_ms=tail_ms,
                    exported_head_bytes=head_bytes,
                )
            )
    return out


def measure_tails(
    g,
    records: Sequence[ProfileRecord],
    *,
    seconds: float = 3.0,
    device: str = "cpu",
    progress: bool = False,
) -> list[ProfileRecord]:
    """``records`` with ``tail_latency_ms`` measured on ``device`` (``cpu``/``cuda``).

    Each point's tail is the split graph's (``g.split``), the same operations as a
    bundle's ``tail.pt2``, timed one frame at a time (batch 1), median latency;
    OpenVINO is not needed.
    """
    from tqdm import tqdm

    dev = torch_device(device)
    out = []
    for r in tqdm(records, desc="timing tails", unit="point", disable=not progress, leave=False):
        _, tail = g.split(r.index)
        tail = tail.to(dev)
        inputs = [torch.randn(t.shape, device=dev) for t in r.tensors]
        ms = _timed(lambda tail=tail, inputs=inputs: tail(*inputs), dev, seconds)
        out.append(dataclasses.replace(r, tail_latency_ms=ms))
    return out


def measure_model(
    model: nn.Module, *, input_shape: Sequence[int], seconds: float = 3.0, device: str = "cpu"
) -> float:
    """Median latency in ms of the whole model in torch on ``device``, batch 1: what a
    server spends on a frame sent as an image."""
    dev = torch_device(device)
    x = torch.randn(1, *input_shape, device=dev)
    params = list(model.parameters())
    was_device = params[0].device if params else None
    was_training = model.training
    model.eval().to(dev)
    try:
        return _timed(lambda: model(x), dev, seconds)
    finally:
        model.train(was_training)
        if was_device is not None:
            model.to(was_device)
