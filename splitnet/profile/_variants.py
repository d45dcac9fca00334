"""``splitnet variants``: head variants side by side (issue 14; seeds 000 and 002).

For each bundle: its variant, the size of its head files, the head's parameters,
accuracy on held-out data through the bundle as deployed (OpenVINO head, codec,
tail; top-1/top-5 or mean Dice), and the head's latency (mean, p95) and FPS at each
thread count on each OpenVINO device asked for. A device that is not present is
reported as absent, not left out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from splitnet._errors import ConfigError
from splitnet._table import format_table

__all__ = ["VariantRow", "VariantsReport", "plot_variants", "report_variants"]


@dataclass
class VariantRow:
    """One bundle of the report."""

    bundle: str
    name: str
    variant: str
    precision: str
    size_mib: float
    parameters: int | None
    accuracy: dict[str, float] = field(default_factory=dict)
    # "DEVICE/threads" -> {"fps", "latency_ms_mean", "latency_ms_p95"}, or {"absent": True}
    speed: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class VariantsReport:
    rows: list[VariantRow]
    metric: str  # top1 or mean_dice
    data: str | None
    frames: int
    devices: dict[str, bool]  # asked for -> present
    threads: list[int]

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "data": self.data,
            "frames": self.frames,
            "devices": self.devices,
            "threads": self.threads,
            "variants": [asdict(r) for r in self.rows],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """A Markdown table: one row per bundle, FPS and latency per device and threads."""
        keys = [f"{d}/{t}" for d, here in self.devices.items() if here for t in self.threads]
        absent = [d for d, here in self.devices.items() if not here]
        acc = ["top1", "top5"] if self.metric == "top1" else ["mean_dice"]
        head = ["variant", "precision", "head MiB", "params", *acc]
        head += [f"{k.replace('/', ' ')} thr FPS (mean / p95 ms)" for k in keys] + absent
        rows = []
        for r in self.rows:
            cells = [r.variant, r.precision, f"{r.size_mib:.3f}", _count(r.parameters)]
            cells += [f"{100 * r.accuracy[a]:.2f}" if a in r.accuracy else "-" for a in acc]
            for k in keys:
                s = r.speed[k]
                cells.append(
                    f"{s['fps']:.1f} ({s['latency_ms_mean']:.2f} / {s['latency_ms_p95']:.2f})"
                )
            cells += ["absent"] * len(absent)
            rows.append(cells)
        return format_table(head, rows, style="markdown")


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def _accuracy(bundle: Path, dataset, frames: int, progress: bool) -> dict[str, float]:
    import torch

    from splitnet.train._calibrate import deployed_logits
    from splitnet.train._eval import make_meter

    meter = make_meter(dataset.task, dataset.num_classes)
    for logits, y in deployed_logits(
        bundle, dataset, frames=frames, progress=progress, desc=f"accuracy {bundle.name}"
    ):
        target = y[None] if torch.is_tensor(y) else torch.tensor([int(y)])
        meter.update(torch.from_numpy(logits), target)
    got = meter.compute()
    return {k: float(v) for k, v in got.items() if k in ("top1", "top5", "mean_dice")}


def report_variants(
    bundles: Sequence[str | Path],
    *,
    data: str | None = None,
    frames: int = 200,
    devices: Sequence[str] = ("CPU",),
    threads: Sequence[int] = (1, 2),
    seconds: float = 3.0,
    progress: bool = True,
) -> VariantsReport:
    """Measures ``bundles`` (head variants of one model, e.g. ``splitnet optimize``'s).

    Args:
        data: held-out data (its ``val`` subset unless the spec says ``subset=``);
            None skips accuracy.
        frames: held-out frames scored at most.
        devices: OpenVINO devices to time the head on; those not present are reported
            absent.
        threads: inference thread counts (CPU).
        seconds: timed seconds per (bundle, device, threads).

    Raises:
        ConfigError: no bundle, bundles of different tasks or inputs, bad numbers.
    """
    import openvino as ov

    from splitnet.bundle import read_manifest
    from splitnet.device.bench import benchmark_head

    if not bundles:
        raise ConfigError("give at least one bundle folder")
    if frames < 1 or seconds <= 0 or not threads or min(threads) < 1:
        raise ConfigError("--frames and --threads must be >= 1 and --seconds > 0")
    manifests = [(Path(b), read_manifest(b)) for b in bundles]
    for path, m in manifests:
        if not m.has_head:
            raise ConfigError(f"{path} is an image bundle: it has no head to compare")
    first = manifests[0][1]
    for path, m in manifests[1:]:
        if m.task != first.task or tuple(m.input.shape) != tuple(first.input.shape):
            raise ConfigError(
                f"{path}: a {m.task} model on {tuple(m.input.shape)}, the first bundle is a "
                f"{first.task} model on {tuple(first.input.shape)}: compare variants of one model"
            )
    present = set(ov.Core().available_devices)
    asked = {d: any(p == d or p.startswith(d + ".") for p in present) for d in devices}
    dataset = None
    if data is not None:
        from splitnet.data import open_dataset, parse_spec

        spec = parse_spec(data)
        c, h, w = first.input.shape
        dataset = open_dataset(
            spec, subset=spec.options.get("subset", "val"), size=(h, w), channels=c
        )
        if dataset.task != first.task:
            raise ConfigError(f"--data {data} is {dataset.task} data for a {first.task} model")
    rows = []
    for path, m in manifests:
        variant = (m.head or {}).get("variant") or {}
        size = sum((path / m.head[k]).stat().st_size for k in ("xml", "bin"))
        row = VariantRow(
            bundle=str(path),
            name=m.name,
            variant=variant.get("name", "fp16"),
            precision=str(m.head.get("precision", "FP16")),
            size_mib=size / 2**20,
            parameters=variant.get("parameters"),
        )
        if dataset is not None:
            row.accuracy = _accuracy(path, dataset, frames, progress)
        for d, here in asked.items():
            for t in threads:
                key = f"{d}/{t}"
                if not here:
                    row.speed[key] = {"absent": True}
                    continue
                b = benchmark_head(
                    path, device=d, threads=t, seconds=seconds, warmup=min(1.0, seconds)
                )
                row.speed[key] = {
                    "fps": b.fps,
                    "latency_ms_mean": b.latency_ms_mean,
                    "latency_ms_p95": b.latency_ms_p95,
                }
        rows.append(row)
    metric = "mean_dice" if first.task == "segmentation" else "top1"
    n = 0 if dataset is None else min(frames, len(dataset))
    return VariantsReport(rows, metric, data, n, asked, list(threads))


def plot_variants(report: VariantsReport, path: str | Path) -> None:
    """Accuracy against head latency (first present device, 1st thread count); marker
    area proportional to the head's file size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    device = next((d for d, here in report.devices.items() if here), None)
    if device is None:
        raise ConfigError("no device asked for is present: nothing to plot")
    key = f"{device}/{report.threads[0]}"
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    biggest = max(r.size_mib for r in report.rows) or 1.0
    for r in report.rows:
        if not r.accuracy or key not in r.speed:
            continue
        x = r.speed[key]["latency_ms_mean"]
        y = 100 * r.accuracy[report.metric]
        ax.scatter(x, y, s=60 + 900 * r.size_mib / biggest, alpha=0.6)
        ax.annotate(
            f"{r.variant}\n{r.size_mib:.2f} MiB", (x, y), textcoords="offset points", xytext=(8, 6)
        )
    label = "top-1 (%)" if report.metric == "top1" else "mean Dice (%)"
    ax.set_xlabel(f"head latency on {device}, {report.threads[0]} thread(s) (ms, mean)")
    ax.set_ylabel(label)
    ax.set_title(f"head variants: {label} vs latency\n(marker area ~ file size)", fontsize=10)
    ax.margins(x=0.2, y=0.25)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
