"""The rate–accuracy report: typed records, the target check, tables, figure and files.

Torch-free: a report read back from ``results.json`` (:meth:`RateAccuracyReport.from_dict`)
renders without the model. The JSON layout is the one ``splitnet rate-accuracy`` has
always written, so older result files stay readable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitnet._table import format_table

__all__ = [
    "ImageBaselineRecord",
    "RateAccuracyRecord",
    "RateAccuracyReport",
    "RatePoint",
    "RateScore",
    "TargetResult",
]

# scores besides the primary metric that a record keeps, in JSON order
_EXTRA_SCORES = ("dice_per_class", "top5")


def metric_label(metric: str) -> str:
    """``mean_dice -> "mean Dice"``, ``top1 -> "top-1"``."""
    return {"mean_dice": "mean Dice", "top1": "top-1"}.get(metric, metric)


@dataclass(frozen=True)
class RateScore:
    """The metric and the rate of one way of sending a frame.

    Attributes:
        value: the primary metric (``mean_dice`` or ``top1``), in [0, 1].
        drop_points: ``100 x (uncompressed - value)``.
        kb_per_frame: mean kB (10^3 bytes) sent per frame.
        bits_per_element: bits sent per element crossing (or, for a baseline, per input element).
        extra: the other scores (``dice_per_class``, ``top5``) where the task has them.
        encode_ms, decode_ms: mean time per frame of the codec's encode (tensors or
            image -> bytes) and decode (bytes -> what the tail or model takes), one
            frame at a time on the machine that ran the sweep; ``None`` in files
            written before they were measured.
    """

    value: float
    drop_points: float
    kb_per_frame: float
    bits_per_element: float
    extra: dict[str, Any] = field(default_factory=dict)
    encode_ms: float | None = None
    decode_ms: float | None = None

    def to_dict(self, metric: str) -> dict:
        """The score's JSON keys, in the order of the file: metric, drop, kB, extras, bits,
        then the codec's times where measured."""
        doc = {
            metric: self.value,
            "drop_points": self.drop_points,
            "kb_per_frame": self.kb_per_frame,
            **self.extra,
            "bits_per_element": self.bits_per_element,
        }
        if self.encode_ms is not None:
            doc["encode_ms"] = self.encode_ms
        if self.decode_ms is not None:
            doc["decode_ms"] = self.decode_ms
        return doc

    @classmethod
    def from_dict(cls, d: dict, metric: str) -> RateScore:
        return cls(
            value=d[metric],
            drop_points=d["drop_points"],
            kb_per_frame=d["kb_per_frame"],
            bits_per_element=d["bits_per_element"],
            extra={k: d[k] for k in _EXTRA_SCORES if k in d},
            encode_ms=d.get("encode_ms"),
            decode_ms=d.get("decode_ms"),
        )


@dataclass(frozen=True)
class RateAccuracyRecord:
    """One codec at one split point.

    Attributes:
        codec: the codec's name (``q4``).
        score: its metric and rate.
    """

    codec: str
    score: RateScore

    def to_dict(self, metric: str) -> dict:
        return {"codec": self.codec, **self.score.to_dict(metric)}

    @classmethod
    def from_dict(cls, d: dict, metric: str) -> RateAccuracyRecord:
        return cls(codec=d["codec"], score=RateScore.from_dict(d, metric))


@dataclass(frozen=True)
class RatePoint:
    """A split point and its codecs' records.

    Attributes:
        index, name, kind: the split point (see :class:`~splitnet.split.SplitPoint`).
        elements: elements crossing the cut per frame.
        tensors: ``(name, shape)`` of each crossing tensor, batch 1.
        results: one record per codec, in the sweep's order.
    """

    index: int
    name: str
    kind: str
    elements: int
    tensors: tuple[tuple[str, tuple[int, ...]], ...]
    results: tuple[RateAccuracyRecord, ...]

    def to_dict(self, metric: str) -> dict:
        return {
            "index": self.index,
            "name": self.name,
            "kind": self.kind,
            "elements": self.elements,
            "tensors": [{"name": n, "shape": list(s)} for n, s in self.tensors],
            "results": [r.to_dict(metric) for r in self.results],
        }

    @classmethod
    def from_dict(cls, d: dict, metric: str) -> RatePoint:
        return cls(
            index=d["index"],
            name=d["name"],
            kind=d["kind"],
            elements=d["elements"],
            tensors=tuple((t["name"], tuple(t["shape"])) for t in d["tensors"]),
            results=tuple(RateAccuracyRecord.from_dict(r, metric) for r in d["results"]),
        )


@dataclass(frozen=True)
class ImageBaselineRecord:
    """Remote inference: the input image sent as PNG or JPEG, the whole model on the server.

    Attributes:
        name: ``png`` or ``jpeg<quality>``.
        format: ``png`` or ``jpeg``.
        quality: the JPEG quality (``None`` for PNG).
        score: its metric and rate (bits per input element).
    """

    name: str
    format: str
    quality: int | None
    score: RateScore

    def to_dict(self, metric: str) -> dict:
        return {
            "name": self.name,
            "format": self.format,
            "quality": self.quality,
            **self.score.to_dict(metric),
        }

    @classmethod
    def from_dict(cls, d: dict, metric: str) -> ImageBaselineRecord:
        return cls(
            name=d["name"],
            format=d["format"],
            quality=d["quality"],
            score=RateScore.from_dict(d, metric),
        )


@dataclass(frozen=True)
class TargetResult:
    """Whether a split point meets the target (see :meth:`RateAccuracyReport.check_target`).

    Attributes:
        point: the split point's name.
        met: its best codec under the rate drops the metric by at most the target.
        codec, bits_per_element, drop_points: that codec (``None`` where no codec
            reaches the rate).
        miss: how far the drop (or, with no codec under the rate, the lowest rate)
            is from the target; ``""`` when met.
    """

    point: str
    met: bool
    codec: str | None
    bits_per_element: float | None
    drop_points: float | None
    miss: str

    def to_dict(self) -> dict:
        return {
            "point": self.point,
            "met": self.met,
            "codec": self.codec,
            "bits_per_element": self.bits_per_element,
            "drop_points": self.drop_points,
            "miss": self.miss,
        }


def _target_of(p: RatePoint, max_drop_points: float, max_bits: float) -> TargetResult:
    under = [r for r in p.results if r.score.bits_per_element <= max_bits]
    if not under:
        low = min(p.results, key=lambda r: r.score.bits_per_element)
        miss = f"lowest rate {low.score.bits_per_element:.2f} bits/element ({low.codec})"
        return TargetResult(p.name, False, None, None, None, miss)
    best = min(under, key=lambda r: (r.score.drop_points, r.score.bits_per_element))
    met = best.score.drop_points <= max_drop_points
    over = max(0.0, best.score.drop_points - max_drop_points)
    return TargetResult(
        point=p.name,
        met=met,
        codec=best.codec,
        bits_per_element=best.score.bits_per_element,
        drop_points=best.score.drop_points,
        miss="" if met else f"drop {over:.2f} points over",
    )


@dataclass(frozen=True)
class RateAccuracyReport:
    """The metric of a split model through real codecs, per split point and codec.

    Attributes:
        model: the model's name.
        input: input shape ``(C, H, W)``.
        frames: frames scored.
        metric: the primary metric (``mean_dice`` or ``top1``).
        threshold: sigmoid threshold of predicted masks.
        codec_options: options given to every codec.
        calibrate: frames that fixed the codecs' ranges (``0``: per-frame ranges).
        reference: the uncompressed model's scores, with ``kb_per_frame_float32``
            (the input as float32).
        points: one entry per swept split point.
        baselines: the input image sent as PNG/JPEG.
        provenance: where the figures come from (``weights``, ``data``, ``subset``),
            written after ``baselines``.
    """

    model: str
    input: tuple[int, ...]
    frames: int
    metric: str
    threshold: float
    codec_options: dict[str, Any]
    calibrate: int
    reference: dict[str, Any]
    points: tuple[RatePoint, ...]
    baselines: tuple[ImageBaselineRecord, ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def reference_value(self) -> float:
        """The uncompressed model's primary metric."""
        return self.reference[self.metric]

    def check_target(
        self, *, max_drop_points: float = 0.5, max_bits: float = 2.0
    ) -> list[TargetResult]:
        """Per point: the least-drop codec at ``<= max_bits`` bits per element, and
        whether its drop is ``<= max_drop_points``."""
        return [_target_of(p, max_drop_points, max_bits) for p in self.points]

    def to_dict(
        self, *, max_drop_points: float | None = None, max_bits: float | None = None
    ) -> dict:
        """The JSON document; with both target options, the target check under ``"target"``."""
        doc = {
            "model": self.model,
            "input": list(self.input),
            "frames": self.frames,
            "metric": self.metric,
            "threshold": self.threshold,
            "codec_options": dict(self.codec_options),
            "calibrate": self.calibrate,
            "reference": dict(self.reference),
            "points": [p.to_dict(self.metric) for p in self.points],
            "baselines": [b.to_dict(self.metric) for b in self.baselines],
            **self.provenance,
        }
        if max_drop_points is not None and max_bits is not None:
            target = self.check_target(max_drop_points=max_drop_points, max_bits=max_bits)
            doc["versus_image"] = self.versus_image(max_drop_points=max_drop_points)
            doc["target"] = {
                "max_drop_points": max_drop_points,
                "max_bits": max_bits,
                "points": [t.to_dict() for t in target],
            }
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> RateAccuracyReport:
        """Reads :meth:`to_dict`'s document (a ``results.json``); ``target`` is recomputed
        on demand, so it is not kept."""
        metric = doc["metric"]
        known = set(cls.__dataclass_fields__) - {"provenance"}
        return cls(
            model=doc["model"],
            input=tuple(doc["input"]),
            frames=doc["frames"],
            metric=metric,
            threshold=doc["threshold"],
            codec_options=dict(doc["codec_options"]),
            calibrate=doc.get("calibrate", 0),
            reference=dict(doc["reference"]),
            points=tuple(RatePoint.from_dict(p, metric) for p in doc["points"]),
            baselines=tuple(ImageBaselineRecord.from_dict(b, metric) for b in doc["baselines"]),
            provenance={
                k: v
                for k, v in doc.items()
                if k not in known and k not in ("target", "versus_image")
            },
        )

    def to_json(self, *, indent: int | None = 2, **target) -> str:
        """:meth:`to_dict` as JSON; ``target``: ``max_drop_points`` and ``max_bits``."""
        return json.dumps(self.to_dict(**target), indent=indent)

    def versus_image(self, *, max_drop_points: float = 0.5) -> list[dict]:
        """Per point: its cheapest way within ``max_drop_points`` of the uncompressed
        metric beside the cheapest image baseline within the same bound.

        Each entry: ``point``; ``codec``, ``kb_per_frame``, ``drop_points`` of the
        cheapest codec within the bound (``None`` where none is: then ``closest``
        names the least-drop codec and ``miss`` by how much it misses); ``image``
        and ``image_kb_per_frame`` (the cheapest baseline within the bound, the
        lossless PNG at worst) and ``ratio``, the split's bytes over the image's.
        """
        within = [b for b in self.baselines if b.score.drop_points <= max_drop_points]
        image = min(within, key=lambda b: b.score.kb_per_frame) if within else None
        rows = []
        for p in self.points:
            ok = [r for r in p.results if r.score.drop_points <= max_drop_points]
            best = min(ok, key=lambda r: r.score.kb_per_frame) if ok else None
            row: dict[str, Any] = {
                "point": p.name,
                "codec": best.codec if best else None,
                "kb_per_frame": best.score.kb_per_frame if best else None,
                "drop_points": best.score.drop_points if best else None,
                "image": image.name if image else None,
                "image_kb_per_frame": image.score.kb_per_frame if image else None,
                "ratio": (
                    best.score.kb_per_frame / image.score.kb_per_frame if best and image else None
                ),
            }
            if best is None and p.results:
                closest = min(p.results, key=lambda r: r.score.drop_points)
                row["closest"] = closest.codec
                row["miss"] = closest.score.drop_points - max_drop_points
            rows.append(row)
        return rows

    def format_table(self, *, max_drop_points: float = 0.5, max_bits: float = 2.0) -> str:
        """The Markdown tables: points x codecs, baselines, and the target check."""
        label = metric_label(self.metric)
        c, h, w = self.input
        calibrated = f", ranges calibrated on {self.calibrate} frames" if self.calibrate else ""
        intro = (
            f"Model `{self.model}`, input {c}x{h}x{w}, {self.frames} frames; "
            f"uncompressed {label} {100 * self.reference_value:.2f}%. "
            f"Codec options: {self.codec_options or 'defaults'}{calibrated}."
        )
        target = f"Target: <= {max_drop_points} point {label} drop at <= {max_bits} bits/element:"
        parts = [
            intro,
            self._points_table(label),
            "Remote inference (the input image sent, the whole model on the server):",
            self._baselines_table(label),
            target,
            _target_table(self.check_target(max_drop_points=max_drop_points, max_bits=max_bits)),
            f"Against the image: the fewest bytes per frame within {max_drop_points} points "
            f"of the uncompressed {label}, by split point and by the image baselines:",
            _versus_table(self.versus_image(max_drop_points=max_drop_points)),
        ]
        return "\n\n".join(parts) + "\n"

    def _points_table(self, label: str) -> str:
        header = ["split point", "elements", "codec", "bits/element", "kB/frame"]
        header += [f"{label} (%)", "drop (points)"]
        rows = [
            [p.name, f"{p.elements:,}", r.codec, *_score_cells(r.score)]
            for p in self.points
            for r in p.results
        ]
        return format_table(header, rows, align="lrlrrrr", style="markdown")

    def _baselines_table(self, label: str) -> str:
        header = ["baseline", "bits/element", "kB/frame", f"{label} (%)", "drop (points)"]
        raw = RateScore(self.reference_value, 0.0, self.reference["kb_per_frame_float32"], 32.0)
        rows = [["raw float32", *_score_cells(raw)]]
        rows += [[b.name, *_score_cells(b.score)] for b in self.baselines]
        return format_table(header, rows, align="lrrrr", style="markdown")

    def plot(self, path: str | os.PathLike, *, title: str | None = None) -> None:
        """Writes the figure (see :func:`splitnet.profile.plot_rate_accuracy`)."""
        from splitnet.profile._plots import plot_rate_accuracy

        plot_rate_accuracy(self, path, title=title)

    def write(
        self,
        out_dir: str | os.PathLike,
        *,
        stem: str = "",
        max_drop_points: float = 0.5,
        max_bits: float = 2.0,
    ) -> dict[str, str]:
        """Writes ``results.json`` (with the target check), ``table.md`` and
        ``rate_accuracy.png`` into ``out_dir``, each name prefixed by ``stem``.

        Returns:
            ``{"json": path, "table": path, "plot": path}``.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "json": out / f"{stem}results.json",
            "table": out / f"{stem}table.md",
            "plot": out / f"{stem}rate_accuracy.png",
        }
        target = {"max_drop_points": max_drop_points, "max_bits": max_bits}
        paths["json"].write_text(self.to_json(**target) + "\n")
        paths["table"].write_text(self.format_table(**target))
        self.plot(paths["plot"])
        return {k: str(v) for k, v in paths.items()}


def _score_cells(s: RateScore) -> list[str]:
    """bits/element, kB/frame, metric (%), drop (points)."""
    return [
        f"{s.bits_per_element:.3f}",
        f"{s.kb_per_frame:.2f}",
        f"{100 * s.value:.2f}",
        f"{s.drop_points:+.2f}",
    ]


def _target_table(targets: list[TargetResult]) -> str:
    header = ["split point", "met", "codec", "bits/element", "drop (points)", "miss"]
    rows = [
        [
            t.point,
            "yes" if t.met else "no",
            t.codec or "-",
            "-" if t.bits_per_element is None else f"{t.bits_per_element:.3f}",
            "-" if t.drop_points is None else f"{t.drop_points:+.2f}",
            t.miss,
        ]
        for t in targets
    ]
    return format_table(header, rows, align="lllrrl", style="markdown")


def _versus_table(rows: list[dict]) -> str:
    header = ["split point", "codec", "kB/frame", "drop (points)", "image", "image kB/frame"]
    header.append("split / image")
    cells = []
    for r in rows:
        if r["codec"] is None:
            missed = f"none (closest: {r.get('closest')}, {r.get('miss', 0):.2f} points over)"
            split = [missed, "-", "-"]
        else:
            split = [r["codec"], f"{r['kb_per_frame']:.2f}", f"{r['drop_points']:+.2f}"]
        image = [r["image"] or "-", "-" if r["image"] is None else f"{r['image_kb_per_frame']:.2f}"]
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        cells.append([r["point"], *split, *image, ratio])
    return format_table(header, cells, align="llrrlrr", style="markdown")
