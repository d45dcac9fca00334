"""Figures of a profile and of a rate–accuracy report (matplotlib, Agg backend, PNG at 150 dpi)."""

from __future__ import annotations

import os

from splitnet.profile._rate_report import RateAccuracyReport, metric_label
from splitnet.profile._report import ProfileError, ProfileReport, fps_key

__all__ = ["plot_rate_accuracy", "plot_report"]

_MiB = 1024 * 1024
_MAX_LABELS = 40
_LEGEND = {"fontsize": 8, "loc": "upper left", "borderaxespad": 0.0}


def plot_report(
    report: ProfileReport,
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    title: str | None = None,
) -> None:
    """Writes a three-panel figure of ``report`` to ``path`` (PNG).

    (a) cumulative device and server MACs, device parameters and peak activation
    memory; (b) crossing size and device FPS; (c) bitrate per bit width at
    ``fps``, with the raw and PNG image baselines as horizontal lines.

    Args:
        report: a profile.
        path: the PNG file to write.
        fps: frame rate of panel (c) (default: the highest of ``report.fps``).
        title: figure title (default: model and input).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    pts = report.points
    n = len(pts)
    fps = max(report.fps) if fps is None else float(fps)
    if fps not in report.fps:
        raise ProfileError(
            f"fps {fps:g} is not in the report ({', '.join(map(fps_key, report.fps))})"
        )
    x = list(range(n))
    labels = [p.name for p in pts]
    width = min(max(8.0, 0.22 * min(n, _MAX_LABELS) + 4.0), 16.0)
    fig, (ax_a, ax_b, ax_c) = plt.subplots(
        3, 1, figsize=(width, 12.5), sharex=True, gridspec_kw={"hspace": 0.12}
    )
    c, h, w = report.input
    fig.suptitle(
        title or f"{report.model}, input {c}×{h}×{w}: per split point", fontsize=13, y=0.92
    )

    _panel_compute(ax_a, pts, x)
    _panel_crossing(ax_b, pts, x)
    _panel_bitrate(ax_c, report, x, fps)

    step = max(1, -(-n // _MAX_LABELS))
    ax_c.set_xticks(x[::step])
    ax_c.set_xticklabels(labels[::step], rotation=60, ha="right", fontsize=7)
    ax_c.set_xlabel("split point (cut after)")
    ax_c.set_xlim(-0.6, n - 0.4)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def _panel_compute(ax_a, pts, x: list[int]) -> None:
    """(a) cumulative MACs on each side; head parameters and peak activations."""
    ax_a.plot(x, [p.device_macs / 1e9 for p in pts], "o-", color="C0", label="device (head) MACs")
    ax_a.plot(
        x,
        [p.server_macs / 1e9 for p in pts],
        "s--",
        color="C0",
        alpha=0.5,
        ms=4,
        label="server (tail) MACs",
    )
    ax_a.set_ylabel("GMAC (cumulative)")
    ax_a.set_title("(a) compute and device memory", loc="left", fontsize=11)
    ax_a.grid(True, alpha=0.3)
    mem = ax_a.twinx()
    mem.plot(
        x,
        [_pos(p.device_param_bytes["float32"] / _MiB) for p in pts],
        "^-",
        color="C1",
        label="head params, float32",
    )
    mem.plot(
        x,
        [_pos(p.device_param_bytes["float16"] / _MiB) for p in pts],
        "v:",
        color="C1",
        label="head params, float16",
    )
    mem.plot(
        x,
        [_pos(p.peak_activation_bytes / _MiB) for p in pts],
        "d-",
        color="C3",
        label="head peak activations, float32",
    )
    mem.set_yscale("log")
    mem.set_ylabel("device memory (MiB)")
    _legend(ax_a, mem)


def _panel_crossing(ax_b, pts, x: list[int]) -> None:
    """(b) elements crossing the cut, and the measured device FPS where there is one."""
    ax_b.bar(
        x, [p.elements / 1e6 for p in pts], color="C2", alpha=0.7, label="elements crossing the cut"
    )
    ax_b.set_ylabel("crossing size (M elements)")
    ax_b.set_ylim(0, max(p.elements for p in pts) / 1e6 * 1.18)
    ax_b.set_title("(b) crossing size and device frame rate", loc="left", fontsize=11)
    ax_b.grid(True, axis="y", alpha=0.3)
    measured = [p.device_fps for p in pts]
    fps_ax = ax_b.twinx()
    fps_ax.set_ylabel("device FPS (head)")
    if any(v is not None for v in measured):
        xs = [i for i, v in zip(x, measured, strict=True) if v is not None]
        fps_ax.plot(
            xs, [v for v in measured if v is not None], "o-", color="C4", label="device FPS (head)"
        )
    else:
        fps_ax.set_yticks([])
        ax_b.text(
            0.99,
            0.95,
            "device FPS not measured (--measure-fps)",
            transform=ax_b.transAxes,
            ha="right",
            va="top",
            fontsize=9,
            color="0.35",
            bbox={"fc": "white", "ec": "0.8", "alpha": 0.9},
        )
    _legend(ax_b, fps_ax)


def _panel_bitrate(ax_c, report: ProfileReport, x: list[int], fps: float) -> None:
    """(c) bitrate per bit width at ``fps``, beside the raw and PNG image baselines."""
    pts = report.points
    for k, b in enumerate(report.bits):
        ax_c.plot(
            x, [p.mbps[b][fps] for p in pts], "o-", color=f"C{k}", ms=4, label=f"split, {b}-bit"
        )
    base = report.baseline
    ax_c.axhline(base.mbps["raw"][fps], color="k", ls="--", lw=1.2, label="image, raw 8-bit")
    if "png" in base.mbps:
        ax_c.axhline(base.mbps["png"][fps], color="k", ls=":", lw=1.5, label="image, PNG")
    ax_c.set_yscale("log")
    ax_c.set_ylabel(f"bitrate at {fps_key(fps)} FPS (Mbit/s)")
    ax_c.set_title(
        f"(c) bitrate at {fps_key(fps)} FPS vs. sending the image", loc="left", fontsize=11
    )
    ax_c.grid(True, which="both", alpha=0.3)
    ax_c.legend(**_LEGEND, **_outside(ax_c))


def _outside(ax) -> dict:
    """Legend placement right of the panel, past the twin axis' label, never over the data."""
    from matplotlib.transforms import offset_copy

    return {
        "bbox_to_anchor": (1.0, 1.0),
        "bbox_transform": offset_copy(ax.transAxes, fig=ax.figure, x=62, units="points"),
    }


def _pos(v: float) -> float:
    """Zero cannot sit on a log axis; leave a gap instead."""
    return v if v > 0 else float("nan")


def _legend(ax, twin) -> None:
    handles, labels = [], []
    for a in (ax, twin):
        hs, ls = a.get_legend_handles_labels()
        handles += hs
        labels += ls
    if handles:
        ax.legend(handles, labels, **_LEGEND, **_outside(ax))


def plot_rate_accuracy(
    report: RateAccuracyReport, path: str | os.PathLike, *, title: str | None = None
) -> None:
    """kB per frame (log x) against the metric: a line per split point, baselines as markers.

    Args:
        report: a rate–accuracy report.
        path: the PNG file to write.
        title: default: the model, its input and "rate-accuracy per split point".
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=150)
    markers = "os^Dvp<>h"
    for i, p in enumerate(report.points):
        rs = sorted(p.results, key=lambda r: r.score.kb_per_frame)
        xs = [r.score.kb_per_frame for r in rs]
        ys = [100 * r.score.value for r in rs]
        (line,) = ax.plot(xs, ys, marker=markers[i % len(markers)], ms=4, lw=1.4, label=p.name)
        for r, xv, yv in zip(rs, xs, ys, strict=True):
            ax.annotate(
                r.codec,
                (xv, yv),
                textcoords="offset points",
                xytext=(3, -9),
                fontsize=6,
                color=line.get_color(),
            )
    _plot_baselines(ax, report)
    ax.axhline(100 * report.reference_value, color="gray", ls="--", lw=0.8, label="uncompressed")
    ax.set_xscale("log")
    ax.set_xlabel("kB per frame (log scale)")
    ax.set_ylabel(f"{metric_label(report.metric)} (%)")
    c, h, w = report.input
    default = f"{report.model} {c}x{h}x{w}: rate-accuracy per split point"
    ax.set_title(title or default, fontsize=10)
    ax.grid(True, which="both", lw=0.3, alpha=0.6)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_baselines(ax, report: RateAccuracyReport) -> None:
    """PNG as a black star, JPEG qualities as gray squares, each labelled."""
    for b in report.baselines:
        is_png = b.format == "png"
        xy = (b.score.kb_per_frame, 100 * b.score.value)
        ax.scatter(
            *xy,
            marker="*" if is_png else "s",
            s=70 if is_png else 28,
            color="black" if is_png else "dimgray",
            zorder=5,
            label="input as PNG" if is_png else None,
        )
        ax.annotate(b.name, xy, textcoords="offset points", xytext=(4, 4), fontsize=6.5)
    if any(b.format == "jpeg" for b in report.baselines):
        ax.scatter([], [], marker="s", s=28, color="dimgray", label="input as JPEG")
