"""Bandwidths and durations written the way people write them: ``20Mbit/s``, ``30ms``.

Bandwidths are in bit/s (decimal prefixes: 1 Mbit/s = 10^6 bit/s, as link rates are
quoted); ``B`` is a byte (8 bits), so ``1 MB/s`` is 8 Mbit/s.

Example:
    >>> parse_bandwidth("20Mbit/s"), parse_bandwidth("2.5 MB/s"), parse_duration("30ms")
    (20000000.0, 20000000.0, 0.03)
"""

from __future__ import annotations

import math
import re

from splitnet.plan._errors import PlanError

__all__ = ["format_bandwidth", "format_duration", "parse_bandwidth", "parse_duration"]

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_BANDWIDTH = re.compile(rf"^\s*{_NUMBER}\s*([kKmMgG]?)(bit/s|b/s|bps|B/s)\s*$")
_PREFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
BANDWIDTH_UNITS = "bit/s, kbit/s, Mbit/s, Gbit/s (or bps, kbps, Mbps, Gbps), B/s, kB/s, MB/s, GB/s"

_DURATION = re.compile(rf"^\s*{_NUMBER}\s*(us|µs|ms|s)\s*$")
_SECONDS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
DURATION_UNITS = "us, ms, s"


def parse_bandwidth(text: str) -> float:
    """``"20Mbit/s"``, ``"20 Mbps"``, ``"2.5MB/s"`` -> bit/s (a float > 0).

    Raises:
        PlanError: no number, a number <= 0, or a unit other than :data:`BANDWIDTH_UNITS`.
    """
    m = _BANDWIDTH.match(str(text))
    if m is None:
        raise PlanError(
            f"cannot read the bandwidth {text!r}: give a number and one of {BANDWIDTH_UNITS}, "
            "e.g. 20Mbit/s"
        )
    value = float(m.group(1)) * _PREFIX[m.group(2).lower()] * (8 if m.group(3) == "B/s" else 1)
    if not 0 < value < math.inf:
        raise PlanError(f"the bandwidth must be > 0, got {text!r}")
    return value


def parse_duration(text: str) -> float:
    """``"30ms"``, ``"250 us"``, ``"0.1s"`` -> seconds (a float >= 0).

    Raises:
        PlanError: no number, or a unit other than :data:`DURATION_UNITS`.
    """
    m = _DURATION.match(str(text))
    if m is None:
        raise PlanError(
            f"cannot read the duration {text!r}: give a number and one of {DURATION_UNITS}, "
            "e.g. 30ms"
        )
    value = float(m.group(1)) * _SECONDS[m.group(2)]
    if not value < math.inf:
        raise PlanError(f"the duration must be finite, got {text!r}")
    return value


def format_bandwidth(bps: float) -> str:
    """``2e7 -> "20 Mbit/s"``, ``1.5e5 -> "150 kbit/s"``."""
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.3g} bit/s"


def format_duration(seconds: float) -> str:
    """``0.03 -> "30 ms"``."""
    return f"{seconds * 1e3:.3g} ms"
