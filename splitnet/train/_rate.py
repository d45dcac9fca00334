"""Rate-accuracy: the metric of a split model through a real codec, per point and codec.

For every split point, the head runs on a batch, each frame's crossing tensors
are encoded by the codec into bytes, decoded from those bytes, and the tail
runs on the decoded tensors; the metric of the tail's output is compared with
the uncompressed model's. The baselines send the input image itself (PNG and
JPEG, Pillow) and run the whole model on the decoded image.
"""

from __future__ import annotations

import io
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from splitnet.train._eval import Normalize, make_meter, primary_metric
from splitnet.train._metrics import TrainError

__all__ = [
    "DEFAULT_CODECS",
    "DEFAULT_JPEG_QUALITIES",
    "RateAccuracyConfig",
    "check_target",
    "format_table",
    "plot_rate_accuracy",
    "rate_accuracy",
]

DEFAULT_CODECS = ("q8", "q6", "q4", "q3", "q2")
DEFAULT_JPEG_QUALITIES = (95, 75, 50, 25)


@dataclass(frozen=True)
class RateAccuracyConfig:
    """What to sweep.

    Attributes:
        points: split point names or indices (``None``: every ``pool`` point).
        codecs: codec names (``splitnet.codec.list_codecs()``).
        codec_options: keyword options for every codec (``{"entropy": "ans"}``).
        calibrate: frames whose crossing tensors fix the codec's ranges
            (``codec.calibrate``); ``0``: ranges measured per frame, sent in the payload.
        png: include the lossless PNG baseline.
        jpeg_qualities: JPEG baselines' qualities.
        batch: frames per forward pass.
        threshold: sigmoid threshold of predicted masks.
        progress: tqdm bars on stderr.
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


def _batches(dataset, batch: int):
    """``(x, y, n)`` with ``x`` padded to ``batch`` frames by repeating the last; ``n`` real."""
    for start in range(0, len(dataset), batch):
        items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        n = len(items)
        x = torch.stack([it[0] for it in items])
        y = torch.stack([torch.as_tensor(it[1]) for it in items])
        if n < batch:
            x = torch.cat([x, x[-1:].expand(batch - n, *x.shape[1:])])
        yield x, y, n


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """``C x H x W`` [0, 1] -> ``H x W`` (gray: equal channels) or ``H x W x C`` uint8."""
    a = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    if a.shape[0] == 1 or (a == a[:1]).all():
        return a[0]
    return a.transpose(1, 2, 0)


def image_roundtrip(
    x: torch.Tensor, fmt: str, quality: int | None = None
) -> tuple[torch.Tensor, int]:
    """Encodes a ``C x H x W`` frame as PNG/JPEG with Pillow, decodes it; ``(frame, bytes)``.

    A frame whose channels are equal (a grayscale camera) is sent as one channel.
    """
    a = _to_uint8(x)
    buf = io.BytesIO()
    img = Image.fromarray(a)
    if fmt == "png":
        img.save(buf, format="PNG", optimize=True)
    else:
        img.save(buf, format="JPEG", quality=quality)
    size = buf.tell()
    buf.seek(0)
    with Image.open(buf) as im:
        b = np.asarray(im.convert(img.mode))
    t = torch.from_numpy(b.copy()).float().div_(255)
    t = t.permute(2, 0, 1) if t.dim() == 3 else t[None].expand(x.shape[0], -1, -1)
    return t.contiguous(), size


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().numpy(), dtype=np.float32)


def _summary(scores: dict, metric: str, reference: float, nbytes: float, frames: int) -> dict:
    out = {
        metric: scores[metric],
        "drop_points": 100 * (reference - scores[metric]),
        "kb_per_frame": nbytes / frames / 1000,
    }
    if "dice_per_class" in scores:
        out["dice_per_class"] = scores["dice_per_class"]
    if "top5" in scores:
        out["top5"] = scores["top5"]
    return out


@torch.no_grad()
def rate_accuracy(
    model: nn.Module,
    dataset,
    config: RateAccuracyConfig = RateAccuracyConfig(),
    *,
    calibration_data=None,
) -> dict:  # noqa: E501
    """Sweeps split points x codecs on ``dataset`` and returns the JSON document.

    Args:
        model: a splitnet model (``create_model``) with trained weights.
        dataset: an :func:`splitnet.data.open_dataset` result of fixed frame size.
        config: what to sweep.
        calibration_data: frames for ``config.calibrate`` (default: ``dataset``).

    Returns:
        ``{"input", "frames", "metric", "reference", "points": [{..., "results":
        [{"codec", "bits_per_element", "kb_per_frame", <metric>, "drop_points", ...}]}],
        "baselines": [...]}``; ``drop_points`` is 100 x (uncompressed - coded).
    """
    from splitnet.codec import decode, get_codec
    from splitnet.split import trace

    model.eval()
    metric = primary_metric(dataset.task)
    x0 = dataset[0][0]
    channels = x0.shape[0]
    normalize = Normalize(model.splitnet_info, channels)
    batch = max(1, min(config.batch, len(dataset)))
    g = trace(model, torch.zeros(batch, *x0.shape))
    if config.points is None:
        points = g.select(kind="pool")
        if not points:
            raise TrainError(f"{g.name} has no pool points; name the points to sweep (--points)")
    else:
        points = [g.point(p) for p in config.points]
    codecs = [get_codec(name, **config.codec_options) for name in config.codecs]
    frames = len(dataset)
    show = {"file": sys.stderr, "disable": not config.progress, "leave": False}

    def meter():
        return make_meter(dataset.task, dataset.num_classes, config.threshold)

    ref = meter()
    for x, y, n in tqdm(_batches(dataset, batch), desc="uncompressed", **show):
        ref.update(model(normalize(x))[:n], y)
    reference = ref.compute()
    ref_value = reference[metric]

    doc_points = []
    bar = tqdm(total=len(points) * len(codecs), desc="points x codecs", unit="run", **show)
    for p in points:
        head, tail = g.split(p)
        coded = codecs
        if config.calibrate > 0:
            cal_ds = calibration_data if calibration_data is not None else dataset
            cal_frames = []
            for x, _, n in _batches(cal_ds, batch):
                feats = head(normalize(x))
                cal_frames += [[_to_numpy(f[i : i + 1]) for f in feats] for i in range(n)]
                if len(cal_frames) >= config.calibrate:
                    break
            coded = [c.calibrate(cal_frames[: config.calibrate]) for c in codecs]
        meters = [meter() for _ in coded]
        nbytes = [0] * len(coded)
        for x, y, n in _batches(dataset, batch):
            feats = head(normalize(x))
            per_frame = [[_to_numpy(f[i : i + 1]) for f in feats] for i in range(n)]
            for k, codec in enumerate(coded):
                decoded = []
                for arrays in per_frame:
                    payload = codec.encode(arrays)
                    nbytes[k] += len(payload)
                    decoded.append(decode(payload))
                tensors = [
                    torch.from_numpy(np.concatenate([d[j] for d in decoded]))
                    for j in range(len(feats))
                ]
                if n < batch:  # pad as the traced batch size requires
                    tensors = [
                        torch.cat([t, t[-1:].expand(batch - n, *t.shape[1:])]) for t in tensors
                    ]
                meters[k].update(tail(*tensors)[:n], y)
        results = []
        for codec, m, b in zip(coded, meters, nbytes, strict=True):
            r = {"codec": codec.name, **_summary(m.compute(), metric, ref_value, b, frames)}
            r["bits_per_element"] = 8 * b / (frames * (p.elements // batch))
            results.append(r)
            bar.update()
        doc_points.append(
            {
                "index": p.index,
                "name": p.name,
                "kind": p.kind,
                "elements": p.elements // batch,
                "tensors": [{"name": t.name, "shape": [1, *t.shape[1:]]} for t in p.tensors],
                "results": results,
            }
        )
    bar.close()

    baselines = []
    variants = ([("png", None)] if config.png else []) + [
        ("jpeg", q) for q in config.jpeg_qualities
    ]
    input_elements = math.prod(x0.shape)
    for fmt, quality in tqdm(variants, desc="image baselines", **show):
        m, total = meter(), 0
        for x, y, n in _batches(dataset, batch):
            frames_hat = []
            for i in range(n):
                xi, size = image_roundtrip(x[i], fmt, quality)
                frames_hat.append(xi)
                total += size
            xh = torch.stack(frames_hat + [frames_hat[-1]] * (batch - n))
            m.update(model(normalize(xh))[:n], y)
        b = {
            "name": fmt if quality is None else f"jpeg{quality}",
            "format": fmt,
            "quality": quality,
        }
        b.update(_summary(m.compute(), metric, ref_value, total, frames))
        b["bits_per_element"] = 8 * total / (frames * input_elements)
        baselines.append(b)

    return {
        "model": getattr(model, "splitnet_name", type(model).__name__),
        "input": list(x0.shape),
        "frames": frames,
        "metric": metric,
        "threshold": config.threshold,
        "codec_options": dict(config.codec_options),
        "calibrate": config.calibrate,
        "reference": {**reference, "kb_per_frame_float32": 4 * input_elements / 1000},
        "points": doc_points,
        "baselines": baselines,
    }


def check_target(doc: dict, *, max_drop_points: float = 0.5, max_bits: float = 2.0) -> list[dict]:
    """Per point: the least-drop codec at ``<= max_bits`` bits per element, and whether
    its drop is ``<= max_drop_points``.

    Returns:
        One dict per point: ``point``, ``met``, ``codec``, ``bits_per_element``,
        ``drop_points`` (``None`` where no codec reaches ``max_bits``), and
        ``miss``: how far the drop (or, with no codec under the rate, the
        lowest rate) is from the target.
    """
    out = []
    for p in doc["points"]:
        under = [r for r in p["results"] if r["bits_per_element"] <= max_bits]
        if under:
            best = min(under, key=lambda r: (r["drop_points"], r["bits_per_element"]))
            met = best["drop_points"] <= max_drop_points
            miss = max(0.0, best["drop_points"] - max_drop_points)
            out.append(
                {
                    "point": p["name"],
                    "met": met,
                    "codec": best["codec"],
                    "bits_per_element": best["bits_per_element"],
                    "drop_points": best["drop_points"],
                    "miss": f"drop {miss:.2f} points over" if not met else "",
                }
            )
        else:
            low = min(p["results"], key=lambda r: r["bits_per_element"])
            out.append(
                {
                    "point": p["name"],
                    "met": False,
                    "codec": None,
                    "bits_per_element": None,
                    "drop_points": None,
                    "miss": f"lowest rate {low['bits_per_element']:.2f} bits/element ({low['codec']})",
                }
            )
    return out


def _metric_label(metric: str) -> str:
    return {"mean_dice": "mean Dice", "top1": "top-1"}.get(metric, metric)


def format_table(doc: dict, *, max_drop_points: float = 0.5, max_bits: float = 2.0) -> str:
    """The markdown tables: points x codecs, baselines, and the target check."""
    metric = doc["metric"]
    label = _metric_label(metric)
    ref = doc["reference"][metric]
    c, h, w = doc["input"]
    lines = [
        f"Model `{doc['model']}`, input {c}x{h}x{w}, {doc['frames']} frames; "
        f"uncompressed {label} {100 * ref:.2f}%. "
        f"Codec options: {doc['codec_options'] or 'defaults'}"
        + (f", ranges calibrated on {doc['calibrate']} frames" if doc.get("calibrate") else "")
        + ".",
        "",
        f"| split point | elements | codec | bits/element | kB/frame | {label} (%) | drop (points) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for p in doc["points"]:
        for r in p["results"]:
            lines.append(
                f"| {p['name']} | {p['elements']:,} | {r['codec']} | {r['bits_per_element']:.3f} "
                f"| {r['kb_per_frame']:.2f} | {100 * r[metric]:.2f} | {r['drop_points']:+.2f} |"
            )
    lines += [
        "",
        "Remote inference (the input image sent, the whole model on the server):",
        "",
        f"| baseline | bits/element | kB/frame | {label} (%) | drop (points) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines.append(
        f"| raw float32 | 32.000 | {doc['reference']['kb_per_frame_float32']:.2f} "
        f"| {100 * ref:.2f} | +0.00 |"
    )
    for b in doc["baselines"]:
        lines.append(
            f"| {b['name']} | {b['bits_per_element']:.3f} | {b['kb_per_frame']:.2f} "
            f"| {100 * b[metric]:.2f} | {b['drop_points']:+.2f} |"
        )
    lines += [
        "",
        f"Target: <= {max_drop_points} point {label} drop at <= {max_bits} bits/element:",
        "",
        "| split point | met | codec | bits/element | drop (points) | miss |",
        "|---|---|---|---:|---:|---|",
    ]
    for t in check_target(doc, max_drop_points=max_drop_points, max_bits=max_bits):
        bpe = "-" if t["bits_per_element"] is None else f"{t['bits_per_element']:.3f}"
        drop = "-" if t["drop_points"] is None else f"{t['drop_points']:+.2f}"
        lines.append(
            f"| {t['point']} | {'yes' if t['met'] else 'no'} | {t['codec'] or '-'} | {bpe} "
            f"| {drop} | {t['miss']} |"
        )
    return "\n".join(lines) + "\n"


def plot_rate_accuracy(doc: dict, path, *, title: str | None = None) -> None:
    """kB per frame (log x) against the metric: a line per split point, baselines as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = doc["metric"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=150)
    markers = "os^Dvp<>h"
    for i, p in enumerate(doc["points"]):
        rs = sorted(p["results"], key=lambda r: r["kb_per_frame"])
        xs = [r["kb_per_frame"] for r in rs]
        ys = [100 * r[metric] for r in rs]
        (line,) = ax.plot(xs, ys, marker=markers[i % len(markers)], ms=4, lw=1.4, label=p["name"])
        for r, xv, yv in zip(rs, xs, ys, strict=True):
            ax.annotate(
                r["codec"],
                (xv, yv),
                textcoords="offset points",
                xytext=(3, -9),
                fontsize=6,
                color=line.get_color(),
            )
    bs = doc["baselines"]
    for b in bs:
        is_png = b["format"] == "png"
        ax.scatter(
            b["kb_per_frame"],
            100 * b[metric],
            marker="*" if is_png else "s",
            s=70 if is_png else 28,
            color="black" if is_png else "dimgray",
            zorder=5,
            label="input as PNG" if is_png else None,
        )
        ax.annotate(
            b["name"],
            (b["kb_per_frame"], 100 * b[metric]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=6.5,
        )
    if any(b["format"] == "jpeg" for b in bs):
        ax.scatter([], [], marker="s", s=28, color="dimgray", label="input as JPEG")
    ref = 100 * doc["reference"][metric]
    ax.axhline(ref, color="gray", ls="--", lw=0.8, label="uncompressed")
    ax.set_xscale("log")
    ax.set_xlabel("kB per frame (log scale)")
    ax.set_ylabel(f"{_metric_label(metric)} (%)")
    c, h, w = doc["input"]
    ax.set_title(title or f"{doc['model']} {c}x{h}x{w}: rate-accuracy per split point", fontsize=10)
    ax.grid(True, which="both", lw=0.3, alpha=0.6)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(
    doc: dict,
    out_dir,
    *,
    stem: str = "",
    max_drop_points: float = 0.5,
    max_bits: float = 2.0,
) -> dict[str, str]:
    """Writes ``results.json`` (with the target check), ``table.md`` and
    ``rate_accuracy.png`` into ``out_dir``, each name prefixed by ``stem``."""
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / f"{stem}results.json",
        "table": out / f"{stem}table.md",
        "plot": out / f"{stem}rate_accuracy.png",
    }
    target = check_target(doc, max_drop_points=max_drop_points, max_bits=max_bits)
    doc = {
        **doc,
        "target": {"max_drop_points": max_drop_points, "max_bits": max_bits, "points": target},
    }
    paths["json"].write_text(json.dumps(doc, indent=2) + "\n")
    paths["table"].write_text(format_table(doc, max_drop_points=max_drop_points, max_bits=max_bits))
    plot_rate_accuracy(doc, paths["plot"])
    return {k: str(v) for k, v in paths.items()}
