"""The device daemon on a plan: several bundles of one model, and a move between them
when the link changes.

Every runnable bundle of the plan file has its head loaded; each frame is encoded
with the current candidate and sent to that candidate's model on the server (which
serves all the plan's bundles). A switch changes only the frames encoded after it:
the frames in flight keep their request, so the old model answers them, and every
frame is still answered exactly once. Each result says which candidate produced it
(a ``candidate`` PNG text chunk or JSON field, ``frames.jsonl``), and
``summary.json`` counts the answers per candidate and lists the switches.

The plan's two baselines may be candidates too: an image bundle (no head: the frame
itself is coded as PNG/JPEG and sent to the whole model) and a device-only bundle (the
whole model here: the frame's answer is computed and written at once, nothing is sent,
and ``frames.jsonl`` gives it 0 bytes). Probes go only to candidates that send: while
the daemon runs device-only, they are all it learns the link from, so a plan needs two
sending candidates of different sizes to move back from it.

The candidates are costed as the plan was (its :class:`~splitnet.plan.Pipeline`:
source time, batching delay, shared cores), with the window this daemon runs; the
heads run with the plan's ``head_threads`` unless ``DaemonConfig.head_threads`` says.

Now and then (every ``probe_interval_s`` at most, and so that probes take at most
:data:`PROBE_SHARE` of the link's time) one frame is sent with another candidate of a
different size, so that :class:`~splitnet.device._adapt.LinkEstimator` sees two
sizes and can tell bandwidth from RTT.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import replace

from splitnet._errors import ConfigError
from splitnet.device._adapt import LinkEstimate, LinkEstimator, SwitchPolicy
from splitnet.device._daemon import DaemonConfig, DeviceDaemon, Head, LocalResult
from splitnet.device._modes import open_head, postprocess
from splitnet.wire import get_parameter

__all__ = ["AdaptiveDaemon"]

log = logging.getLogger("splitnet.device")

PROBE_SHARE = 0.1  # of the link's time that probe frames may take (at the estimated bandwidth)


class _StoppableSource:
    """The daemon's source, ended early by :meth:`AdaptiveDaemon.request_stop`."""

    def __init__(self, source, stop: threading.Event) -> None:
        self._source, self._stop = source, stop
        self.live = source.live

    def __iter__(self):
        for frame in self._source:
            if self._stop.is_set():
                return
            yield frame


class AdaptiveDaemon(DeviceDaemon):
    """:class:`DeviceDaemon` on ``config.plan``: re-plans from its own answers.

    Attributes:
        plan: the :class:`~splitnet.plan.PlanFile`.
        estimator: the :class:`LinkEstimator` fed by the answers.
        policy: the :class:`SwitchPolicy` that picks the current candidate.
    """

    def __init__(self, config: DaemonConfig) -> None:
        from splitnet.device._runner import HeadRunner
        from splitnet.plan._file import read_plan_file

        if config.plan is None:
            raise ConfigError("AdaptiveDaemon needs a plan file")
        if config.bundle is not None:
            raise ConfigError("give a plan or a bundle, not both")
        if config.probe_interval_s <= 0:
            raise ConfigError(f"probe interval must be > 0 s, got {config.probe_interval_s}")
        plan = read_plan_file(config.plan)
        # the candidates are costed again as the plan was: its source, batching delay,
        # shared cores; the window is the one this daemon runs
        if plan.pipeline.window is not None and plan.pipeline.window != config.window:
            log.info(
                "the plan was costed with a window of %d, the daemon runs %d: costing with %d",
                plan.pipeline.window,
                config.window,
                config.window,
            )
            plan = replace(plan, pipeline=replace(plan.pipeline, window=config.window))
        if config.head_threads is None and plan.pipeline.head_threads is not None:
            # the heads run with the threads their times were measured with
            config = replace(config, head_threads=plan.pipeline.head_threads)
        start = plan.best(plan.link.bandwidth_bps, plan.link.rtt_s)
        sent = [c for c in plan.runnable if c.sends]
        if not sent:
            raise ConfigError(
                f"{config.plan}: every runnable candidate is device-only: run its bundle "
                "with splitnet device --bundle DIR (no server)"
            )
        # the base daemon's head, manifest and results: a candidate that sends
        first = start if start.sends else sent[0]
        super().__init__(replace(config, bundle=first.bundle))
        self.plan = plan
        self.summary.model = plan.model
        self._cands = {c.name: c for c in plan.runnable}
        self._heads = {first.name: replace(self.head, model_name=first.served_name)}
        for c in plan.runnable:
            if c.name in self._heads:
                continue
            if c.sends:  # a split bundle's head, or an image bundle's frame (no head)
                runner = open_head(c.bundle, device=config.device, threads=config.head_threads)
                codec = runner.manifest.make_codec()
            else:  # device-only: the whole model, its answer computed here
                runner = HeadRunner(c.bundle, device=config.device, threads=config.head_threads)
                codec = None
            if tuple(runner.manifest.input.frame_shape) != tuple(self.manifest.input.frame_shape):
                raise ConfigError(
                    f"{c.bundle} takes frames of {runner.manifest.input.frame_shape}, "
                    f"{first.bundle} of {self.manifest.input.frame_shape}"
                )
            self._heads[c.name] = Head(runner, codec, runner.manifest, c.served_name)
        self.estimator = LinkEstimator()
        self.policy = SwitchPolicy(
            list(self._cands),
            self._score,
            current=start.name,
            hysteresis=config.hysteresis,
            dwell_s=config.dwell_s,
        )
        self._lock = threading.Lock()  # the estimator: answers on the loop, probes in a worker
        # the candidates probes can go to: those that send (a device-only frame says
        # nothing about the link)
        self._sizes = {n: c.wire_bytes for n, c in self._cands.items() if c.sends}
        self._frame_candidate: dict[int, str] = {}
        self._last_answer: dict[int, float] = {}
        self._last_probe = -math.inf
        self._estimate: LinkEstimate | None = None
        self._t0: float | None = None
        self._counts: dict[str, int] = dict.fromkeys(self._cands, 0)
        self._switches: list[dict] = []
        self._stop = threading.Event()
        self.source = _StoppableSource(self.source, self._stop)
        self._frames_log = open(self.out / "frames.jsonl", "w") if self.out else None  # noqa: SIM115

    def request_stop(self) -> None:
        """Ends the source: the frames sent are answered, then ``run()`` returns."""
        self._stop.set()

    @property
    def current(self) -> str:
        return self.policy.current

    @property
    def switches(self) -> list[dict]:
        return list(self._switches)

    def _score(self, name: str, est: LinkEstimate) -> float:
        return self.plan.score(self._cands[name], est.bandwidth_bps, est.rtt_s)

    # -- hooks of DeviceDaemon ------------------------------------------------------------------

    def _encode(self, frame, frame_id: int) -> bytes:
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        name = self.policy.current
        if now - self._last_probe >= self.config.probe_interval_s:
            sizes = self._sizes if name in self._sizes else {**self._sizes, name: 0.0}
            with self._lock:
                target = self.estimator.probe_target(name, sizes)
                est = self._estimate
            # probes take at most PROBE_SHARE of the link: a big probe on a slow link waits
            bandwidth = est.bandwidth_bps if est else self.plan.link.bandwidth_bps
            if target is not None and now - self._last_probe >= (
                8 * self._sizes[target] / bandwidth / PROBE_SHARE
            ):
                name, self._last_probe = target, now
        if (
            name == self.policy.current
            and self._switches
            and self._switches[-1]["first_frame"] is None
        ):
            s = self._switches[-1]
            if name == s["to"]:
                s["first_frame"], s["first_frame_clock"] = frame_id, now
                s["first_frame_s"] = round(now - self._t0, 4)
        self._frame_candidate[frame_id] = name
        head = self._heads[name]
        if head.codec is None:  # device-only: the whole model here, its answer at once
            t0 = time.perf_counter()
            (logits,) = head.runner(frame)
            self._head_s.append(time.perf_counter() - t0)
            return LocalResult(
                postprocess(head.manifest, logits, probabilities=self.config.probabilities)
            )
        return self._encode_with(frame, frame_id, head)

    def _local_answer(self, frame_id: int, outputs, captured: float) -> None:
        super()._local_answer(frame_id, outputs, captured)  # the result, named by candidate
        name = self._frame_candidate.pop(frame_id)
        self._counts[name] += 1
        self._log_frame(frame_id, name, ok=True, captured=captured, wire_bytes=0)

    def _result_tags(self, frame_id: int) -> dict[str, str]:
        return {"candidate": self._frame_candidate.get(frame_id, "")}

    def _answer(self, response) -> None:
        params = response.infer_response.parameters
        frame_id = get_parameter(params, "frame_id")
        mine = get_parameter(params, "device_id") == self.device_id and frame_id is not None
        p = self._pending.get(int(frame_id)) if mine else None
        super()._answer(response)
        if p is None or p.frame_id in self._pending:
            return  # not ours, or a duplicate answer to a re-sent frame
        now = time.perf_counter()
        name = self._frame_candidate.pop(p.frame_id)
        prev = self._last_answer.get(p.stream, -math.inf)
        self._last_answer[p.stream] = now
        ok = not response.error_message
        self._counts[name] += 1
        self._log_frame(p.frame_id, name, ok=ok, captured=p.captured, wire_bytes=len(p.request))
        if not ok:
            return
        # the frame's own time (not its wait behind earlier answers) less the server's
        # time, which the answer reports: what is left is the link's
        # the server sends them as decimal strings (KServe v2 has no double parameter)
        server_ms = sum(float(get_parameter(params, k, 0.0)) for k in ("queue_ms", "compute_ms"))
        seconds = max(0.0, now - max(p.sent_at, prev) - server_ms / 1000)
        with self._lock:
            self.estimator.add(name, wire_bytes=len(p.request), seconds=seconds, now=now)
            est = self._estimate = self.estimator.estimate(now)
        old = self.policy.current
        new = self.policy.update(est, now)
        if new != old:
            assert est is not None
            self._switches.append(
                {
                    "at_s": round(now - (self._t0 or now), 4),
                    "clock": now,
                    "from": old,
                    "to": new,
                    "after_frame": p.frame_id,
                    "bandwidth_bps": est.bandwidth_bps,
                    "rtt_ms": 1000 * est.rtt_s,
                    "first_frame": None,
                    "first_frame_s": None,
                    "first_frame_clock": None,
                }
            )

    def _log_frame(
        self, frame_id: int, name: str, *, ok: bool, captured: float, wire_bytes: int
    ) -> None:
        if self._frames_log is None:
            return
        now = time.perf_counter()
        doc = {
            "frame_id": frame_id,
            "candidate": name,
            "ok": ok,
            "latency_ms": round(1000 * (now - captured), 3),
            "answered_s": round(now - (self._t0 or now), 4),
            "bytes": wire_bytes,
        }
        self._frames_log.write(json.dumps(doc) + "\n")

    def _finish(self, elapsed: float) -> None:
        self.summary.candidates = dict(self._counts)
        self.summary.switches = [
            {k: v for k, v in s.items() if not k.endswith("clock")} for s in self._switches
        ]
        if self._frames_log is not None:
            self._frames_log.close()
        super()._finish(elapsed)
