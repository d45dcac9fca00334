"""The cost model: every way of running the model over a link, and what each costs.

A candidate is a split point x codec of the rate-accuracy sweep, the whole model on
the device (nothing sent), or the image sent as PNG/JPEG to the whole model on the
server. Its stages, each from a measurement:

* device: the head (profile ``--measure-fps`` or ``bench-head``) + the codec's encode;
* link: ``bytes * 8 / bandwidth`` (the transfer) ``+ RTT``; ``bytes`` are the codec's
  measured payload plus the request's framing (the serialized KServe request the
  daemon writes, without the payload);
* server: the codec's decode + the tail (profile, or ``--server-profile``).

Objectives: ``latency`` (one frame end to end: the sum of the stages) or ``fps``
(pipelined, a window of frames in flight: ``1000 / max(device, transfer, server)``
ms, the RTT overlapped). Bounds: the metric drop and the device memory.

A :class:`Pipeline` says how the daemon and the server run the stages, and with it
the model follows what a stream does (checked against the real daemon and server
through the link emulator, ``experiments/validate_plan.py``):

* the daemon holds at most ``window`` frames in flight, each from the start of its
  encode to its answer, so the FPS is also bounded by ``window / latency``;
* with the window full (any bottleneck but the device) every frame waits in it:
  by Little's law a frame is answered ``window / FPS`` after it got its slot, and
  since a non-live source's frame is captured before it waits for a slot, the mean
  latency of the stream is ``(window + 1) / FPS - (source + device)``;
* the frame source (a camera's capture, the synthetic frames) takes ``source_ms`` of
  the device's loop, and a frame arriving alone at the server waits for its batch
  (``serve --max-delay-ms``);
* where the device and the server compute on the same ``shared_cores`` (a test bench
  on one machine), their compute adds up: ``(source + device + server) / cores`` is a
  stage too; pipelining overlaps only stages on separate resources. There a queue
  (and the full window's wait) forms only where the server's share is the larger; where
  the device's is, the producer itself is slowed and each frame's compute is stretched
  by the other side's (processor sharing: ``+ min(device, server)``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from splitnet.plan._errors import PlanError
from splitnet.plan._inputs import (
    CodecRow,
    HeadTiming,
    Profile,
    RateAccuracy,
    check_same_model,
)

__all__ = [
    "ESTIMATED_MBPS",
    "OBJECTIVES",
    "Bounds",
    "Candidate",
    "Cost",
    "Crossover",
    "Link",
    "Pipeline",
    "build_candidates",
    "crossovers",
    "evaluate",
    "rank",
    "request_overhead_bytes",
]

OBJECTIVES = ("latency", "fps")

# Only for rate-accuracy files written before the codec's times were recorded: MB/s of
# the codec's input (float32 tensors; image samples), encode and decode, measured with
# one thread on the 2-core x86_64 VM of the README (q4+zstd on half-zero ReLU data;
# Pillow on a synthetic 256x1600 steel frame). A candidate using them says so.
ESTIMATED_MBPS = {"tensor": (800.0, 2000.0), "png": (10.0, 90.0), "jpeg": (200.0, 80.0)}


@dataclass(frozen=True)
class Link:
    """A link: ``bandwidth_bps`` (bit/s) one way, and the round-trip time ``rtt_s``."""

    bandwidth_bps: float
    rtt_s: float = 0.0


@dataclass(frozen=True)
class Pipeline:
    """How frames flow through the stages (see the module's docstring).

    Attributes:
        window: frames in flight at most (``splitnet device --window``); ``None``: no
            bound, the FPS is the slowest stage's and a stream's latency a frame's.
        shared_cores: the device and the server compute on the same cores, this many
            (one machine); ``None``: separate machines.
        source_ms: the frame source's time per frame on the device.
        server_delay_ms: the server's batching delay (``serve --max-delay-ms``), which a
            frame arriving alone waits.
        head_threads: the OpenVINO threads the heads were timed with and the daemon
            runs them with (``--head-threads``; ``None``: OpenVINO's choice). Not a term
            of the model: a record of what the device times mean.
    """

    window: int | None = None
    shared_cores: float | None = None
    source_ms: float = 0.0
    server_delay_ms: float = 0.0
    head_threads: int | None = None

    def __post_init__(self) -> None:
        if self.window is not None and self.window < 1:
            raise PlanError(f"the window must be >= 1 frame, got {self.window}")
        if self.shared_cores is not None and not self.shared_cores > 0:
            raise PlanError(f"shared cores must be > 0, got {self.shared_cores:g}")
        if self.source_ms < 0 or self.server_delay_ms < 0:
            raise PlanError("the source time and the server's delay must be >= 0 ms")
        if self.head_threads is not None and (
            isinstance(self.head_threads, bool)
            or not isinstance(self.head_threads, int)
            or self.head_threads < 1
        ):
            raise PlanError(f"head threads must be a positive integer, got {self.head_threads!r}")

    def to_dict(self) -> dict:
        return {
            "window": self.window,
            "shared_cores": self.shared_cores,
            "source_ms": self.source_ms,
            "server_delay_ms": self.server_delay_ms,
            "head_threads": self.head_threads,
        }

    @classmethod
    def from_dict(cls, doc: dict | None) -> Pipeline:
        """The inverse of :meth:`to_dict`; missing keys (an older file) take the defaults."""
        doc = doc or {}
        window, cores, threads = (doc.get(k) for k in ("window", "shared_cores", "head_threads"))
        return cls(
            window=None if window is None else int(window),
            shared_cores=None if cores is None else float(cores),
            source_ms=float(doc.get("source_ms", 0.0)),
            server_delay_ms=float(doc.get("server_delay_ms", 0.0)),
            head_threads=None if threads is None else int(threads),
        )


@dataclass(frozen=True)
class Bounds:
    """``max_drop_points``: metric drop in points; ``max_device_memory_bytes``: device memory."""

    max_drop_points: float | None = None
    max_device_memory_bytes: float | None = None

    def misses(self, c: Candidate) -> dict[str, float]:
        """How far ``c`` is over each bound it misses: ``{"drop_points": 0.12}``."""
        out = {}
        if self.max_drop_points is not None and c.drop_points > self.max_drop_points:
            out["drop_points"] = c.drop_points - self.max_drop_points
        limit = self.max_device_memory_bytes
        if limit is not None and c.device_memory_bytes > limit:
            out["device_memory_bytes"] = c.device_memory_bytes - limit
        return out

    def shortfall(self, c: Candidate) -> float:
        """The misses as fractions of their bounds, summed: how close ``c`` comes (0: meets)."""
        m = self.misses(c)
        drop = m.get("drop_points", 0.0) / max(self.max_drop_points or 0.0, 0.1)
        mem = m.get("device_memory_bytes", 0.0) / max(self.max_device_memory_bytes or 0.0, 1e6)
        return drop + mem


@dataclass(frozen=True)
class Candidate:
    """One way of running the model, with each stage's measured cost.

    Attributes:
        name: ``"<split point> <codec>"``, ``"device-only"`` or ``"image <format>"``.
        kind: ``split``, ``device`` (the whole model on the device) or ``image``.
        split, codec: the split point and codec (``None`` where they do not apply).
        head_ms: the head on the device (the whole model for ``device``; 0 for ``image``).
        encode_ms: the codec's encode on the device.
        payload_bytes: the codec's bytes per frame (measured by the rate-accuracy sweep).
        wire_bytes: what crosses the link per frame: payload + request framing (0: none).
        decode_ms: the codec's decode on the server.
        tail_ms: the tail on the server (the whole model for ``image``).
        drop_points: the metric's drop against the uncompressed model.
        device_memory_bytes: the model's part on the device: FP16 weights + peak activations.
        estimated: the terms not measured (estimated; see the notes).
    """

    name: str
    kind: str
    split: str | None
    codec: str | None
    head_ms: float
    encode_ms: float
    payload_bytes: float
    wire_bytes: float
    decode_ms: float
    tail_ms: float
    drop_points: float
    device_memory_bytes: int
    estimated: tuple[str, ...] = ()

    @property
    def device_ms(self) -> float:
        return self.head_ms + self.encode_ms

    @property
    def server_ms(self) -> float:
        return self.decode_ms + self.tail_ms

    def transfer_ms(self, link: Link) -> float:
        return 1000.0 * self.wire_bytes * 8 / link.bandwidth_bps

    def link_ms(self, link: Link) -> float:
        """Transfer + RTT; 0 when nothing is sent."""
        return self.transfer_ms(link) + 1000.0 * link.rtt_s if self.wire_bytes else 0.0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "split": self.split,
            "codec": self.codec,
            "head_ms": self.head_ms,
            "encode_ms": self.encode_ms,
            "device_ms": self.device_ms,
            "payload_bytes": self.payload_bytes,
            "wire_bytes": self.wire_bytes,
            "decode_ms": self.decode_ms,
            "tail_ms": self.tail_ms,
            "server_ms": self.server_ms,
            "drop_points": self.drop_points,
            "device_memory_bytes": self.device_memory_bytes,
            "estimated": list(self.estimated),
        }


@dataclass(frozen=True)
class Cost:
    """A candidate on a link.

    Attributes:
        candidate: what is costed.
        transfer_ms: ``wire_bytes * 8 / bandwidth``.
        link_ms: transfer + RTT (0 when nothing is sent).
        latency_ms: device + link + server (+ the server's batching delay): one frame
            alone, captured to answered.
        fps: frames per second of a stream: ``1000 / max(stages)`` ms, the stages being
            device (+ source), transfer, server and, with shared cores, their compute;
            at most ``window / latency`` (see :class:`Pipeline`).
        bottleneck: what bounds the FPS (``device``, ``link``, ``server``, ``compute``:
            the shared cores, or ``window``).
        misses: the bounds the candidate misses, and by how much.
        stream_latency_ms: the mean latency of a stream at that FPS (captured to
            answered; the wait in a full window included).
    """

    candidate: Candidate
    transfer_ms: float
    link_ms: float
    latency_ms: float
    fps: float
    bottleneck: str
    misses: dict[str, float] = field(default_factory=dict)
    stream_latency_ms: float = 0.0

    def to_dict(self) -> dict:
        return {
            **self.candidate.to_dict(),
            "transfer_ms": self.transfer_ms,
            "link_ms": self.link_ms,
            "latency_ms": self.latency_ms,
            "fps": self.fps if math.isfinite(self.fps) else None,  # JSON has no infinity
            "stream_latency_ms": self.stream_latency_ms,
            "bottleneck": self.bottleneck,
            "meets_bounds": not self.misses,
            "misses": dict(self.misses),
        }


STAGES = ("device", "link", "server", "compute", "window")


def _stream(device, server, bits, bandwidth_bps, rtt_s: float, p: Pipeline):
    """The model on arrays (broadcast): ``(latency_ms, fps, stream_latency_ms, periods)``,
    ``periods`` the ms per frame of each of :data:`STAGES` (the largest bounds the FPS)."""
    sends = bits > 0
    transfer = 1000.0 * bits / bandwidth_bps
    server = np.where(sends, server, 0.0)
    wait = np.where(sends, p.server_delay_ms, 0.0)
    latency = device + np.where(sends, transfer + 1000.0 * rtt_s, 0.0) + server + wait
    loop = device + p.source_ms  # the daemon's producer, frame after frame
    compute = (loop + server) / p.shared_cores if p.shared_cores else np.zeros_like(loop)
    # a window of frames is held from the start of each encode to its answer
    held = np.where(sends, latency, 0.0)
    window = held / p.window if p.window else np.zeros_like(held)
    periods = np.broadcast_arrays(loop, transfer, server, compute, window)
    period = np.maximum.reduce(periods)
    with np.errstate(divide="ignore", invalid="ignore"):
        fps = np.where(period > 0, 1000.0 / period, np.inf)
    # sharing the cores, each frame's compute is slowed by the other side's (processor
    # sharing: the smaller of the two runs beside the larger)
    shared = np.minimum(loop, server) if p.shared_cores else np.zeros_like(loop)
    if p.window:
        # the window fills unless the device's own loop is what bounds the stream (or, on
        # shared cores, the device's loop is the larger share: no queue forms before the
        # server, the producer itself is slowed)
        full = sends & (period > loop)
        if p.shared_cores:
            full &= ~((compute >= np.maximum(transfer, window)) & (loop >= server))
        queued = (p.window + 1) * period - loop
        stream = np.where(full, np.maximum(latency, queued), latency + np.where(sends, shared, 0.0))
    else:
        stream = latency
    return latency, fps, stream, periods


def evaluate(
    c: Candidate, link: Link, bounds: Bounds | None = None, *, pipeline: Pipeline | None = None
) -> Cost:
    """The cost of ``c`` on ``link``, its frames flowing as ``pipeline`` says (default: no
    window, separate machines, no source time or batching delay)."""
    p = pipeline or Pipeline()
    latency, fps, stream, periods = _stream(
        np.float64(c.device_ms),
        np.float64(c.server_ms),
        np.float64(8.0 * c.wire_bytes),
        link.bandwidth_bps,
        link.rtt_s,
        p,
    )
    values = [float(v) for v in periods]
    slowest = STAGES[int(np.argmax(values))]  # the first on a tie: device before link ...
    return Cost(
        candidate=c,
        transfer_ms=c.transfer_ms(link),
        link_ms=c.link_ms(link),
        latency_ms=float(latency),
        fps=float(fps),
        bottleneck=slowest,
        misses=(bounds or Bounds()).misses(c),
        stream_latency_ms=float(stream),
    )


def _key(cost: Cost, objective: str) -> tuple:
    c = cost.candidate
    if objective == "fps":
        return (-cost.fps, cost.latency_ms, c.drop_points, c.wire_bytes, c.name)
    return (cost.latency_ms, -cost.fps, c.drop_points, c.wire_bytes, c.name)


def rank(
    candidates: Sequence[Candidate],
    link: Link,
    *,
    objective: str,
    bounds: Bounds,
    pipeline: Pipeline | None = None,
) -> tuple[list[Cost], list[Cost]]:
    """``(ranked, excluded)``: the candidates that meet ``bounds``, best first, and the others.

    Raises:
        PlanError: an unknown objective; no candidate meets the bounds (the message names
            the closest candidate and by how much it misses).
    """
    if objective not in OBJECTIVES:
        raise PlanError(f"unknown objective {objective!r}; objectives: {', '.join(OBJECTIVES)}")
    costs = sorted(
        (evaluate(c, link, bounds, pipeline=pipeline) for c in candidates),
        key=lambda k: _key(k, objective),
    )
    ranked = [k for k in costs if not k.misses]
    excluded = [k for k in costs if k.misses]
    if not ranked:
        raise PlanError(_no_candidate(excluded, bounds))
    return ranked, excluded


def _no_candidate(excluded: list[Cost], bounds: Bounds) -> str:
    closest = min(excluded, key=lambda k: (bounds.shortfall(k.candidate), k.candidate.name))
    c, m = closest.candidate, closest.misses
    asked = []
    if bounds.max_drop_points is not None:
        asked.append(f"--max-drop {bounds.max_drop_points:g}")
    if bounds.max_device_memory_bytes is not None:
        asked.append(f"--max-device-memory {bounds.max_device_memory_bytes / 1e6:g}")
    why = []
    if "drop_points" in m:
        why.append(f"drop {c.drop_points:.2f} points, {m['drop_points']:.2f} over")
    if "device_memory_bytes" in m:
        why.append(
            f"device memory {c.device_memory_bytes / 1e6:.1f} MB, "
            f"{m['device_memory_bytes'] / 1e6:.1f} MB over"
        )
    return f"no candidate meets {' and '.join(asked)}; the closest is {c.name} ({'; '.join(why)})"


# -- crossovers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Crossover:
    """Where the best candidate changes: ``below`` is best just under ``bandwidth_bps``,
    ``above`` just over it."""

    bandwidth_bps: float
    below: str
    above: str

    def to_dict(self) -> dict:
        return {"bandwidth_bps": self.bandwidth_bps, "below": self.below, "above": self.above}


def _stage_arrays(candidates: Sequence[Candidate]) -> tuple[np.ndarray, ...]:
    device = np.array([c.device_ms for c in candidates])
    server = np.array([c.server_ms for c in candidates])
    bits = np.array([8.0 * c.wire_bytes for c in candidates])
    return device, server, bits


def curves(
    candidates: Sequence[Candidate],
    bandwidths_bps: np.ndarray,
    rtt_s: float,
    objective: str,
    pipeline: Pipeline | None = None,
) -> np.ndarray:
    """``objective`` (latency in ms, or FPS) of each candidate (rows) at each bandwidth
    (columns), as :func:`evaluate` computes it."""
    device, server, bits = _stage_arrays(candidates)
    bw = np.asarray(bandwidths_bps, float)[None, :]
    latency, fps, _, _ = _stream(
        device[:, None], server[:, None], bits[:, None], bw, rtt_s, pipeline or Pipeline()
    )
    return np.broadcast_to(latency if objective == "latency" else fps, (len(candidates), bw.size))


def _best(values: np.ndarray, objective: str) -> np.ndarray:
    """Index of the best row in each column (the first on a tie)."""
    return np.argmax(values, axis=0) if objective == "fps" else np.argmin(values, axis=0)


def crossovers(
    candidates: Sequence[Candidate],
    *,
    rtt_s: float,
    objective: str,
    low_bps: float = 1e5,
    high_bps: float = 1e9,
    samples: int = 400,
    pipeline: Pipeline | None = None,
) -> list[Crossover]:
    """The bandwidths in ``[low_bps, high_bps]`` where the best candidate changes.

    Found on a log grid of ``samples`` bandwidths, each refined by bisection to a
    relative 1e-9; ties go to the earlier candidate of ``candidates``.
    """
    if not candidates:
        return []
    grid = np.geomspace(low_bps, high_bps, samples)
    best = _best(curves(candidates, grid, rtt_s, objective, pipeline), objective)
    out = []
    for i in np.flatnonzero(best[1:] != best[:-1]):
        lo, hi = math.log(grid[i]), math.log(grid[i + 1])
        a = best[i]
        while hi - lo > 1e-9:
            mid = 0.5 * (lo + hi)
            at = _best(
                curves(candidates, np.array([math.exp(mid)]), rtt_s, objective, pipeline),
                objective,
            )[0]
            lo, hi = (mid, hi) if at == a else (lo, mid)
        above = _best(
            curves(candidates, np.array([math.exp(hi)]), rtt_s, objective, pipeline), objective
        )[0]
        out.append(Crossover(math.exp(0.5 * (lo + hi)), candidates[a].name, candidates[above].name))
    return out


# -- candidates -----------------------------------------------------------------------------


@functools.cache
def _framing(model_name: str, varint_bytes: int) -> int:
    n = 0 if varint_bytes == 1 else 128 ** (varint_bytes - 1)  # a payload of that length's size
    from splitnet.wire import encode_infer_request

    device_id = "devicehost-0123abcd"  # the daemon's default form: host name + 8 hex digits
    frame_id = 123456
    request = encode_infer_request(
        model_name,
        bytes(n),
        request_id=f"{device_id}/{frame_id}",
        parameters={"device_id": device_id, "frame_id": frame_id},
    )
    return len(request) - n


def request_overhead_bytes(model_name: str, payload_bytes: float) -> int:
    """Bytes of the request the daemon writes around a payload (model name, frame and
    device ids, the input's metadata): the serialized KServe request less its payload.

    It depends on the payload only through the length of its varint size fields.
    """
    n = max(0, math.ceil(payload_bytes))
    return _framing(model_name, max(1, -(-n.bit_length() // 7)))


def _codec_times(row: CodecRow, kind: str) -> tuple[float, float, bool]:
    """``(encode_ms, decode_ms, estimated)``: measured, or from :data:`ESTIMATED_MBPS`."""
    if row.encode_ms is not None and row.decode_ms is not None:
        return row.encode_ms, row.decode_ms, False
    nbytes = row.elements * (4 if kind == "tensor" else 1)
    enc, dec = ESTIMATED_MBPS[kind]
    return nbytes / enc / 1e3, nbytes / dec / 1e3, True


def _coded(
    row: CodecRow,
    *,
    bundle: str,
    head_ms: float,
    tail_ms: float,
    device_memory_bytes: int,
    untimed: tuple[str, ...] = (),
) -> Candidate:
    """A candidate that sends ``row``'s payload (a split point's tensors, or the image
    when ``row.split`` is ``None``) in a request for ``bundle``."""
    if row.split is not None:
        kind, name, coded = "split", f"{row.split} {row.codec}", "tensor"
    else:
        kind, name = "image", f"image {row.codec}"
        coded = "png" if row.codec.startswith("png") else "jpeg"
    enc, dec, estimated = _codec_times(row, coded)
    return Candidate(
        name=name,
        kind=kind,
        split=row.split,
        codec=row.codec,
        head_ms=head_ms,
        encode_ms=enc,
        payload_bytes=row.payload_bytes,
        wire_bytes=row.payload_bytes + request_overhead_bytes(bundle, row.payload_bytes),
        decode_ms=dec,
        tail_ms=tail_ms,
        drop_points=row.drop_points,
        device_memory_bytes=device_memory_bytes,
        estimated=(("encode_ms", "decode_ms") if estimated else ()) + untimed,
    )


def _check_inputs(profile: Profile, rate: RateAccuracy, heads, server: Profile | None) -> None:
    check_same_model(profile.path, profile.model, profile.input, rate.path, rate.model, rate.input)
    if server is not None:
        check_same_model(
            profile.path, profile.model, profile.input, server.path, server.model, server.input
        )
    for name, n in rate.elements.items():
        p = profile.points.get(name)
        if p is not None and p.elements != n:
            raise PlanError(
                f"{rate.path} sends {n:,} elements at {name} but {profile.path} {p.elements:,}: "
                "not the same model (different model arguments, e.g. width?)"
            )
    if not any(p.head_ms is not None for p in profile.points.values()) and not heads:
        raise PlanError(
            f"{profile.path} has no measured head times: write it with "
            "splitnet profile --measure-fps --json"
        )


def _split_candidates(
    profile: Profile, rate: RateAccuracy, heads: Sequence[HeadTiming], srv: Profile
) -> tuple[list[Candidate], dict[str, str]]:
    """Every split point x codec row that both files time; ``skipped``: point -> why not."""
    out, skipped = [], {}
    for row in rate.rows:
        point, tail = profile.points.get(row.split), srv.points.get(row.split)
        learned = row.codec.startswith("learned")
        # a bench-head of a learned codec's bundle times its head with the encoder in it
        bench = [h for h in heads if h.split == row.split and (h.codec == "learned") == learned]
        head_ms = bench[-1].head_ms if bench else (point.head_ms if point else None)
        if point is None or head_ms is None:
            skipped[row.split] = f"no head time in {profile.path}"
            continue
        if tail is None or tail.tail_ms is None:
            skipped[row.split] = f"no tail time in {srv.path}"
            continue
        untimed = (("tail_ms",) if bench else ("head_ms", "tail_ms")) if learned else ()
        out.append(
            _coded(
                row,
                bundle=f"{rate.model}.{row.split}",
                head_ms=head_ms,
                tail_ms=tail.tail_ms,
                device_memory_bytes=point.device_memory_bytes,
                untimed=untimed,
            )
        )
    return out, skipped


def build_candidates(
    profile: Profile,
    rate: RateAccuracy,
    *,
    heads: Sequence[HeadTiming] = (),
    server: Profile | None = None,
) -> tuple[list[Candidate], list[str]]:
    """Every candidate the files can cost, and notes on what was estimated or skipped.

    Args:
        profile: the device profile (head times, memory; tail times unless ``server``).
        rate: the rate-accuracy sweep (bytes, drop, codec times).
        heads: bench-head timings that replace the profile's head time at their point.
        server: a profile run on the server (tail and whole-model times).

    Raises:
        PlanError: files of different models or inputs; a sweep whose crossing tensors
            differ from the profile's (other model arguments); no head times; no
            whole-model timing for either baseline; no split point that both files cover.
    """
    _check_inputs(profile, rate, heads, server)
    srv = server or profile
    out, skipped = _split_candidates(profile, rate, heads, srv)
    if not out and rate.rows:
        raise PlanError(
            f"no split point of {rate.path} is timed in {profile.path}"
            f"{' and ' + server.path if server else ''}: profile the same points with --measure-fps"
        )
    out.append(_device_only(profile))
    if srv.model_ms is None:
        raise PlanError(
            f"{srv.path} has no whole-model time for the image baselines: profile with "
            "--measure-fps (or, on the server, --measure-tail cpu|cuda)"
        )
    out += [
        _coded(
            row,
            bundle=f"{rate.model}.image-{row.codec}",  # export --whole names it so
            head_ms=0.0,
            tail_ms=srv.model_ms,
            device_memory_bytes=0,
        )
        for row in rate.images
    ]
    notes = []
    if skipped:
        notes.append(
            "skipped (not timed): "
            + ", ".join(f"{name} ({why})" for name, why in sorted(skipped.items()))
        )
    if any("encode_ms" in c.estimated for c in out):
        mbps = ", ".join(f"{k} {e:g}/{d:g}" for k, (e, d) in ESTIMATED_MBPS.items())
        notes.append(
            f"{rate.path} records no codec times: encode/decode estimated from MB/s measured "
            f"on a 2-core x86_64 VM ({mbps} MB/s of input); run rate-accuracy again to measure them"
        )
    if any(c.kind == "split" and c.codec.startswith("learned") for c in out):
        notes.append(
            "learned-* rows: the bottleneck's decoder is not timed (the point's tail is), nor its "
            "encoder unless a bench-head --json of its bundle is given with --profile"
        )
    notes.append(
        "device-only: the whole model on the device, nothing sent; its drop is taken as 0 "
        "(FP16 weights, parity checked at export)"
    )
    source = "--server-profile" if server else "the device profile"
    notes.append(
        f"server times: tails and whole model timed in torch on {srv.tail_device or 'cpu'} ({source})"
    )
    framing = sorted({round(c.wire_bytes - c.payload_bytes) for c in out if c.wire_bytes})
    notes.append(
        f"bytes per frame: the measured payload + {framing[0]}-{framing[-1]} bytes of the "
        "request around it (gRPC, HTTP/2, TCP/IP headers not counted)"
    )
    return out, notes


def _device_only(profile: Profile) -> Candidate:
    w = profile.whole
    if w is None or w.head_ms is None:
        raise PlanError(
            f"{profile.path} has no timing of the whole model on the device (the device-only "
            "baseline): profile with --measure-fps, which times it"
        )
    return Candidate(
        name="device-only",
        kind="device",
        split=None,
        codec=None,
        head_ms=w.head_ms,
        encode_ms=0.0,
        payload_bytes=0.0,
        wire_bytes=0.0,
        decode_ms=0.0,
        tail_ms=0.0,
        drop_points=0.0,
        device_memory_bytes=w.device_memory_bytes,
        estimated=("drop_points",),
    )
