"""A link emulator for experiments and tests: a bandwidth and a delay on the daemon's uplink.

:class:`LinkEmulator` is a token bucket in its virtual-clock form: a message of
``n`` bytes occupies the link for ``8 n / bandwidth`` seconds after the previous
one has left (``burst_bytes`` lets that many bytes go at once after an idle
spell), then takes ``delay_s`` more to arrive. The daemon asks it when each
request arrives at the server and writes the request then, so frames keep their
order, none is dropped, and the delay is pipelined (a window of frames in flight
is in the link at once, as on a real one). The daemon also holds each answer back
by ``delay_s``, so the round trip gains ``2 * delay_s``. :meth:`LinkEmulator.set`
changes the limits while a run goes on; requests already in the link keep the
times they were given (a router's queue drains at the rate it was filled at).

Only the uplink's bandwidth is limited: answers (a mask, the top-k) are small
and downlinks are usually the faster direction.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from splitnet._errors import ConfigError

__all__ = ["LinkEmulator", "parse_link"]


class LinkEmulator:
    """The uplink's bandwidth (bit/s) and one-way delay (s), changeable at run time.

    Example:
        >>> link = LinkEmulator(20e6, 0.015)
        >>> arrives = link.reserve(25_000)   # the clock time the request reaches the server
        >>> link.set(bandwidth_bps=5e6)      # from now on
    """

    def __init__(
        self,
        bandwidth_bps: float,
        delay_s: float = 0.0,
        *,
        burst_bytes: int = 0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._free_at = -math.inf  # when the link has sent everything reserved so far
        self.bytes_sent = 0
        self.messages = 0
        self.burst_bytes = int(burst_bytes)
        if self.burst_bytes < 0:
            raise ConfigError(f"burst_bytes must be >= 0, got {burst_bytes}")
        self.bandwidth_bps = self.delay_s = 0.0
        self.set(bandwidth_bps, delay_s)

    def set(self, bandwidth_bps: float | None = None, delay_s: float | None = None) -> None:
        """Changes the bandwidth and/or the one-way delay for the requests sent from now on."""
        if bandwidth_bps is not None and not 0 < bandwidth_bps < math.inf:
            raise ConfigError(f"the link's bandwidth must be > 0 bit/s, got {bandwidth_bps}")
        if delay_s is not None and not 0 <= delay_s < math.inf:
            raise ConfigError(f"the link's delay must be >= 0 s, got {delay_s}")
        with self._lock:
            if bandwidth_bps is not None:
                self.bandwidth_bps = float(bandwidth_bps)
            if delay_s is not None:
                self.delay_s = float(delay_s)

    def reserve(self, nbytes: int) -> float:
        """Puts ``nbytes`` on the link; returns the clock time they have all arrived."""
        with self._lock:
            now = self._clock()
            seconds = 8.0 * nbytes / self.bandwidth_bps
            credit = 8.0 * self.burst_bytes / self.bandwidth_bps  # an idle link's tokens
            start = max(self._free_at, now - credit)
            self._free_at = start + seconds
            self.bytes_sent += nbytes
            self.messages += 1
            return max(self._free_at, now) + self.delay_s

    def __repr__(self) -> str:
        return (
            f"LinkEmulator({self.bandwidth_bps / 1e6:g} Mbit/s, {1000 * self.delay_s:g} ms one way)"
        )


def parse_link(text: str) -> LinkEmulator:
    """``"20Mbit/s"`` or ``"20Mbit/s,15ms"`` (bandwidth, one-way delay) -> a :class:`LinkEmulator`.

    Raises:
        splitnet.plan.PlanError: a unit the planner's parsers do not take.
    """
    from splitnet.plan._units import parse_bandwidth, parse_duration

    bandwidth, _, delay = str(text).partition(",")
    return LinkEmulator(parse_bandwidth(bandwidth), parse_duration(delay) if delay.strip() else 0.0)
