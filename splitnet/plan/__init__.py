"""Choosing the split for a link: the cost of every candidate from measured figures.

Reads what splitnet's measurements write (``profile --measure-fps --json``,
``bench-head --json``, ``rate-accuracy``'s ``results.json``, a server profile from
``profile --measure-tail``), costs every split point x codec and the two baselines
(the whole model on the device; the image sent as PNG/JPEG to the whole model on
the server) on a link, and ranks them by end-to-end latency or pipelined FPS under
a metric-drop and a device-memory bound. Torch-free: it reads JSON.

Example:
    >>> from splitnet.plan import make_plan, parse_bandwidth, parse_duration
    >>> plan = make_plan(
    ...     "profile.json", "results.json",
    ...     bandwidth_bps=parse_bandwidth("20Mbit/s"), rtt_s=parse_duration("30ms"),
    ...     max_drop_points=0.5,
    ... )
    >>> plan.best.candidate.name
    'encoder.block3.pool q4'
"""

from __future__ import annotations

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
    curves,
    evaluate,
    rank,
    request_overhead_bytes,
)
from splitnet.plan._errors import PlanError
from splitnet.plan._file import (
    PlanCandidate,
    PlanFile,
    plan_file_from_plan,
    read_plan_file,
    write_plan_file,
)
from splitnet.plan._inputs import (
    CodecRow,
    HeadTiming,
    PointTiming,
    Profile,
    RateAccuracy,
    read_device_files,
    read_profile,
    read_rate_accuracy,
)
from splitnet.plan._plan import PLOT_RANGE_BPS, Plan, make_plan, plan_candidates
from splitnet.plan._units import format_bandwidth, parse_bandwidth, parse_duration

__all__ = [
    "OBJECTIVES",
    "PLOT_RANGE_BPS",
    "Bounds",
    "Candidate",
    "CodecRow",
    "Cost",
    "Crossover",
    "HeadTiming",
    "Link",
    "Pipeline",
    "Plan",
    "PlanCandidate",
    "PlanFile",
    "PlanError",
    "PointTiming",
    "Profile",
    "RateAccuracy",
    "build_candidates",
    "crossovers",
    "curves",
    "evaluate",
    "format_bandwidth",
    "make_plan",
    "parse_bandwidth",
    "parse_duration",
    "plan_candidates",
    "plan_file_from_plan",
    "plot_plan",
    "rank",
    "read_device_files",
    "read_plan_file",
    "read_profile",
    "read_rate_accuracy",
    "request_overhead_bytes",
    "write_plan_file",
]


def plot_plan(plan: Plan, path, *, title: str | None = None) -> None:
    """Writes the latency- and FPS-against-bandwidth figure (see ``_plot.plot_plan``)."""
    from splitnet.plan._plot import plot_plan as _plot

    _plot(plan, path, title=title)
