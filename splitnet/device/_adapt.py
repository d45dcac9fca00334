"""Runtime adaptation: estimate the link from the daemon's own answers; choose a candidate.

:class:`LinkEstimator` keeps, per candidate, an EWMA of each frame's time on the
link: ``answered - max(sent, the previous answer)`` less the server's queue and
compute time (which each answer reports). That is the frame's own round trip when
the pipeline is not backed up, its service time at the bottleneck when it is (the
wait behind earlier frames is left out, so a full window does not read as a slow
link; a backed-up server reads as a fast link, which it is not the limit of).
Against each candidate's bytes per frame that time is a
line, ``t = 8 bytes / bandwidth + RTT``: the bandwidth is the inverse of its slope
between candidates of different sizes (the daemon sends occasional probe frames
with another candidate for this), the RTT its intercept. The EWMA weighs a sample
by the time since that candidate's previous one (a time constant, not a count), so
a probe every 0.25 s counts as much as 0.25 s of frames.

:class:`SwitchPolicy` moves to another candidate only when the plan predicts it
better than the current one by more than a hysteresis, for a dwell time: one
noisy estimate does not make the daemon flap.

Torch-free, and no I/O: the daemon feeds them times and asks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from splitnet._errors import ConfigError

__all__ = ["LinkEstimate", "LinkEstimator", "SwitchPolicy"]

MAX_BANDWIDTH_BPS = 1e11  # a slope at or below zero: the link is not what limits
MIN_BANDWIDTH_BPS = 1e3


@dataclass(frozen=True)
class LinkEstimate:
    """``bandwidth_bps`` and ``rtt_s`` as estimated; ``samples`` frames behind them."""

    bandwidth_bps: float
    rtt_s: float
    samples: int


class _Ewma:
    __slots__ = ("at", "n", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.at = -math.inf
        self.n = 0

    def add(self, x: float, now: float, tau_s: float) -> None:
        if self.n == 0:
            self.value = x
        else:
            w = 1.0 - math.exp(-max(now - self.at, 0.0) / tau_s)
            self.value += w * (x - self.value)
        self.at = now
        self.n += 1


class LinkEstimator:
    """Bandwidth and RTT from per-frame times of candidates of different sizes.

    Args:
        tau_s: the EWMA's time constant.
        max_age_s: a candidate not sampled for this long is left out of the fit.

    Example:
        >>> est = LinkEstimator()
        >>> est.add("f16", wire_bytes=40_000, seconds=0.0164, now=0.0)
        >>> est.add("q4", wire_bytes=10_000, seconds=0.0052, now=0.1)
        >>> round(est.estimate(now=0.1).bandwidth_bps / 1e6)
        21
    """

    def __init__(self, *, tau_s: float = 0.3, max_age_s: float = 3.0) -> None:
        if tau_s <= 0:
            raise ConfigError(f"tau_s must be > 0, got {tau_s}")
        self.tau_s = tau_s
        self.max_age_s = max_age_s
        self._by: dict[str, tuple[float, _Ewma]] = {}

    def add(self, candidate: str, *, wire_bytes: float, seconds: float, now: float) -> None:
        """One answered frame of ``candidate``: ``seconds`` on the link and the server."""
        entry = self._by.get(candidate)
        if entry is None:
            entry = self._by[candidate] = (float(wire_bytes), _Ewma())
        entry[1].add(float(seconds), now, self.tau_s)

    def samples(self, candidate: str) -> int:
        entry = self._by.get(candidate)
        return entry[1].n if entry else 0

    def estimate(self, now: float) -> LinkEstimate | None:
        """The least-squares line through the candidates' EWMAs, ``None`` until two
        candidates of different sizes have been sampled recently."""
        points = [(b, e.value, e.n) for b, e in self._by.values() if now - e.at <= self.max_age_s]
        if len({b for b, _, _ in points}) < 2:
            return None
        xs = [8.0 * b for b, _, _ in points]
        ys = [t for _, t, _ in points]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        bandwidth = MAX_BANDWIDTH_BPS if slope <= 1 / MAX_BANDWIDTH_BPS else 1.0 / slope
        bandwidth = max(bandwidth, MIN_BANDWIDTH_BPS)
        rtt = max(0.0, my - mx / bandwidth)
        return LinkEstimate(bandwidth, rtt, sum(n for _, _, n in points))

    def probe_target(self, current: str, sizes: dict[str, float]) -> str | None:
        """The candidate to probe next: of those sized unlike ``current``, the one
        sampled longest ago (never sampled first)."""
        mine = sizes[current]
        others = [n for n, b in sizes.items() if n != current and b != mine]
        if not others:
            return None
        return min(others, key=lambda n: self._by[n][1].at if n in self._by else -math.inf)


class SwitchPolicy:
    """Moves to the best-scoring candidate once it beats the current one by more than
    ``hysteresis`` (a fraction) for ``dwell_s`` seconds without a break.

    Args:
        candidates: the names to choose among.
        score: ``score(name, estimate) -> float``, more is better (the plan's objective
            on the estimated link).
        current: where to start.
        hysteresis: 0.15: the other candidate must score 15% more.
        dwell_s: how long it must stay so.

    Example:
        >>> policy = SwitchPolicy(["a", "b"], score, current="a")
        >>> policy.update(estimate, now)   # the name to run from now on
        'a'
    """

    def __init__(
        self,
        candidates: Sequence[str],
        score: Callable[[str, LinkEstimate], float],
        *,
        current: str,
        hysteresis: float = 0.15,
        dwell_s: float = 0.5,
    ) -> None:
        if hysteresis < 0:
            raise ConfigError(f"hysteresis must be >= 0, got {hysteresis}")
        if dwell_s < 0:
            raise ConfigError(f"dwell must be >= 0 s, got {dwell_s}")
        if current not in candidates:
            raise ConfigError(f"{current!r} is not one of the candidates {list(candidates)}")
        self.candidates = list(candidates)
        self.score = score
        self.current = current
        self.hysteresis = hysteresis
        self.dwell_s = dwell_s
        self._challenger: str | None = None
        self._since = 0.0

    def update(self, estimate: LinkEstimate | None, now: float) -> str:
        """The candidate to run after this estimate (the current one, or a new one)."""
        if estimate is None:
            self._challenger = None
            return self.current
        scores = {n: self.score(n, estimate) for n in self.candidates}
        best = max(self.candidates, key=scores.__getitem__)
        if best == self.current or not scores[best] > scores[self.current] * (1 + self.hysteresis):
            self._challenger = None
            return self.current
        if best != self._challenger:
            self._challenger, self._since = best, now
        if now - self._since >= self.dwell_s:
            self.current, self._challenger = best, None
        return self.current
