"""The planner's figure: end-to-end latency and pipelined FPS against bandwidth.

matplotlib with the Agg backend, PNG at 150 dpi, like ``splitnet.profile``'s figures.
"""

from __future__ import annotations

import os

import numpy as np

from splitnet.plan._cost import Candidate, crossovers, curves
from splitnet.plan._plan import PLOT_RANGE_BPS, Plan
from splitnet.plan._units import format_bandwidth

__all__ = ["plot_plan"]

_LEADING = 5
_MAX_LINES = 10


def _lines(plan: Plan) -> list[tuple[Candidate, bool]]:
    """``(candidate, meets the bounds)`` to draw: the leading candidates at the planned
    link, every candidate that is best somewhere in the range (under either objective),
    and the best of each baseline kind (drawn even outside the bounds)."""
    ranked = plan.candidates
    chosen = ranked[:_LEADING]
    for objective in ("latency", "fps"):
        for x in crossovers(
            ranked, rtt_s=plan.link.rtt_s, objective=objective, pipeline=plan.pipeline
        ):
            chosen += [c for c in ranked if c.name in (x.below, x.above)]
    everything = [(k.candidate, True) for k in plan.ranked] + [
        (k.candidate, False) for k in plan.excluded
    ]
    out = list(dict.fromkeys(chosen))[:_MAX_LINES]
    drawn = [(c, True) for c in out]
    for kind in ("device", "image"):
        if not any(c.kind == kind for c in out):
            first = next(((c, ok) for c, ok in everything if c.kind == kind), None)
            if first is not None:
                drawn.append(first)
    return drawn


def plot_plan(plan: Plan, path: str | os.PathLike, *, title: str | None = None) -> None:
    """Writes the figure of ``plan`` to ``path`` (PNG).

    (a) end-to-end latency and (b) pipelined FPS from 0.1 Mbit/s to 1 Gbit/s (log
    axes) at the plan's RTT, for the leading candidates and the two baselines; the
    bandwidths where the best candidate (under the plan's bounds) changes are marked,
    and so is the planned bandwidth.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    lo, hi = PLOT_RANGE_BPS
    grid = np.geomspace(lo, hi, 400)
    drawn = _lines(plan)
    fig, axes = plt.subplots(2, 1, figsize=(9, 10), sharex=True, gridspec_kw={"hspace": 0.08})
    c, h, w = plan.input
    fig.suptitle(
        title
        or f"{plan.model}, input {c}×{h}×{w}, RTT {1000 * plan.link.rtt_s:g} ms: "
        "which split for which link",
        fontsize=12,
        y=0.93,
    )
    for ax, objective, label in (
        (axes[0], "latency", "end-to-end latency (ms)"),
        (axes[1], "fps", "pipelined FPS (slowest stage)"),
    ):
        values = curves(
            [cand for cand, _ in drawn], grid, plan.link.rtt_s, objective, plan.pipeline
        )
        for i, (cand, ok) in enumerate(drawn):
            style = {"device": "k-", "image": "--"}.get(cand.kind, "-")
            ax.plot(
                grid / 1e6,
                values[i],
                style,
                lw=2.2 if cand.kind != "split" else 1.4,
                alpha=1.0 if ok else 0.45,
                label=cand.name + ("" if ok else " (outside the bounds)"),
            )
        _mark_crossovers(ax, plan, objective)
        ax.axvline(plan.link.bandwidth_bps / 1e6, color="0.5", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, loc="upper right" if objective == "latency" else "lower right")
    axes[1].set_xlabel(
        f"uplink bandwidth (Mbit/s); dotted: {format_bandwidth(plan.link.bandwidth_bps)} planned; "
        "markers: where the best candidate changes"
    )
    axes[1].set_xlim(lo / 1e6, hi / 1e6)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def _mark_crossovers(ax, plan: Plan, objective: str) -> None:
    ranked = plan.candidates
    by_name = {cand.name: cand for cand in ranked}
    xs = crossovers(ranked, rtt_s=plan.link.rtt_s, objective=objective, pipeline=plan.pipeline)
    for i, x in enumerate(xs):
        y = curves(
            [by_name[x.above]],
            np.array([x.bandwidth_bps]),
            plan.link.rtt_s,
            objective,
            plan.pipeline,
        )[0, 0]
        ax.axvline(x.bandwidth_bps / 1e6, color="C3", lw=0.8, alpha=0.5)
        ax.plot([x.bandwidth_bps / 1e6], [y], "o", color="C3", ms=6, zorder=5)
        ax.annotate(
            format_bandwidth(x.bandwidth_bps),
            (x.bandwidth_bps / 1e6, y),
            textcoords="offset points",
            xytext=(4, 6 + 10 * (i % 3)),  # neighbouring crossovers' labels stacked
            fontsize=7,
            color="C3",
            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
        )
