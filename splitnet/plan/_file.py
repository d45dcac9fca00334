"""The plan file: the candidates a set of bundles realises, for a daemon that re-plans.

``splitnet plan ... --emit-plan plan.json --bundles DIR [DIR ...]`` matches each
bundle (its manifest's split point and codec) to a candidate of the plan and writes
each one's cost-model terms (device ms, bytes per frame, server ms, drop) with the
objective and the bounds. ``splitnet device --plan plan.json`` reads it and costs
the candidates again for any bandwidth and RTT it measures, without the profile or
rate-accuracy files. Torch-free: JSON and the bundles' manifests.

Example:
    >>> pf = read_plan_file("plan.json")
    >>> pf.best(bandwidth_bps=5e6, rtt_s=0.03).name
    'encoder.block3.pool q4'
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from splitnet.plan._cost import OBJECTIVES, Bounds, Candidate, Cost, Link, Pipeline, evaluate
from splitnet.plan._errors import PlanError

__all__ = [
    "PLAN_FORMAT",
    "PlanCandidate",
    "PlanFile",
    "plan_file_from_plan",
    "read_plan_file",
    "write_plan_file",
]

PLAN_FORMAT = "splitnet-plan/1"
CANDIDATE_KINDS = ("split", "image", "device")


@dataclass(frozen=True)
class PlanCandidate:
    """A candidate realised by a bundle, with the cost-model terms the daemon needs.

    Attributes:
        name: the planner's name (``"<split point> <codec>"``).
        bundle: the bundle folder (absolute).
        served_name: the model name the server registers the bundle under.
        split, codec: the bundle's split point and codec.
        device_ms: head + encode on the device.
        wire_bytes: bytes per frame over the link (payload + request framing).
        server_ms: decode + tail on the server.
        drop_points: the metric drop.
        device_memory_bytes: the head's memory on the device.
        meets_bounds: whether it meets the plan's bounds (the daemon runs only those).
        kind: ``split``; ``image`` (no head: the frame is sent as PNG/JPEG to the whole
            model); ``device`` (the whole model on the device, nothing sent).
    """

    name: str
    bundle: str
    served_name: str
    split: str
    codec: str
    device_ms: float
    wire_bytes: float
    server_ms: float
    drop_points: float
    device_memory_bytes: int = 0
    meets_bounds: bool = True
    kind: str = "split"

    @property
    def sends(self) -> bool:
        """Whether its frames go to the server (all but the device-only baseline)."""
        return self.kind != "device"

    def as_candidate(self) -> Candidate:
        """The cost model's view: the device and server terms as head and tail."""
        return Candidate(
            name=self.name,
            kind=self.kind,
            split=self.split,
            codec=self.codec,
            head_ms=self.device_ms,
            encode_ms=0.0,
            payload_bytes=self.wire_bytes,
            wire_bytes=self.wire_bytes,
            decode_ms=0.0,
            tail_ms=self.server_ms,
            drop_points=self.drop_points,
            device_memory_bytes=self.device_memory_bytes,
        )

    def cost(
        self, bandwidth_bps: float, rtt_s: float = 0.0, *, pipeline: Pipeline | None = None
    ) -> Cost:
        return evaluate(self.as_candidate(), Link(bandwidth_bps, rtt_s), pipeline=pipeline)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "bundle": self.bundle,
            "served_name": self.served_name,
            "split": self.split,
            "codec": self.codec,
            "device_ms": self.device_ms,
            "wire_bytes": self.wire_bytes,
            "server_ms": self.server_ms,
            "drop_points": self.drop_points,
            "device_memory_bytes": self.device_memory_bytes,
            "meets_bounds": self.meets_bounds,
            "kind": self.kind,
        }


@dataclass(frozen=True)
class PlanFile:
    """What ``--emit-plan`` writes: the model, the objective, the bounds, the candidates.

    Attributes:
        model, input: the model and its ``(C, H, W)`` input.
        objective: ``latency`` or ``fps``.
        bounds: the plan's bounds (the candidates say whether they meet them).
        link: the link the plan was made for (the daemon's first guess).
        candidates: one per bundle, in the order the bundles were given.
        pipeline: how the plan was costed (window, shared cores, source and batching
            times, head threads); the daemon costs its candidates again with it. A
            file written before it was recorded reads as the default pipeline.
    """

    model: str
    input: tuple[int, ...]
    objective: str
    bounds: Bounds
    link: Link
    candidates: tuple[PlanCandidate, ...]
    pipeline: Pipeline = Pipeline()

    @property
    def runnable(self) -> list[PlanCandidate]:
        """The candidates that meet the bounds."""
        return [c for c in self.candidates if c.meets_bounds]

    def score(self, c: PlanCandidate, bandwidth_bps: float, rtt_s: float = 0.0) -> float:
        """The objective of ``c`` on a link as a number where more is better:
        FPS, or ``1000 / latency_ms`` (frames per second of one frame at a time), as
        :attr:`pipeline` runs them."""
        k = c.cost(bandwidth_bps, rtt_s, pipeline=self.pipeline)
        if self.objective == "fps":
            return k.fps
        return 1000.0 / k.latency_ms if k.latency_ms > 0 else math.inf

    def best(self, bandwidth_bps: float, rtt_s: float = 0.0) -> PlanCandidate:
        """The runnable candidate with the best objective on the link (first on a tie)."""
        return max(self.runnable, key=lambda c: self.score(c, bandwidth_bps, rtt_s))

    def to_dict(self) -> dict:
        return {
            "format": PLAN_FORMAT,
            "model": self.model,
            "input": list(self.input),
            "objective": self.objective,
            "bounds": {
                "max_drop_points": self.bounds.max_drop_points,
                "max_device_memory_bytes": self.bounds.max_device_memory_bytes,
            },
            "link": {"bandwidth_bps": self.link.bandwidth_bps, "rtt_ms": 1000 * self.link.rtt_s},
            "pipeline": self.pipeline.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
        }

    @classmethod
    def from_dict(cls, doc: dict, *, where: str = "the plan") -> PlanFile:
        if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT:
            raise PlanError(
                f"{where} is not a plan file (format {PLAN_FORMAT!r}): write it with "
                "splitnet plan ... --emit-plan FILE --bundles DIR ..."
            )
        try:
            bounds = doc.get("bounds") or {}
            link = doc.get("link") or {}
            pf = cls(
                model=str(doc["model"]),
                input=tuple(int(v) for v in doc["input"]),
                objective=str(doc["objective"]),
                bounds=Bounds(bounds.get("max_drop_points"), bounds.get("max_device_memory_bytes")),
                link=Link(
                    float(link.get("bandwidth_bps", 1e7)), float(link.get("rtt_ms", 0)) / 1e3
                ),
                candidates=tuple(
                    PlanCandidate(
                        name=str(c["name"]),
                        bundle=str(c["bundle"]),
                        served_name=str(c["served_name"]),
                        split=str(c["split"]),
                        codec=str(c["codec"]),
                        device_ms=float(c["device_ms"]),
                        wire_bytes=float(c["wire_bytes"]),
                        server_ms=float(c["server_ms"]),
                        drop_points=float(c["drop_points"]),
                        device_memory_bytes=int(c.get("device_memory_bytes", 0)),
                        meets_bounds=bool(c.get("meets_bounds", True)),
                        kind=str(c.get("kind", "split")),
                    )
                    for c in doc["candidates"]
                ),
                pipeline=Pipeline.from_dict(doc.get("pipeline")),
            )
        except (KeyError, TypeError, ValueError, PlanError) as e:
            raise PlanError(f"{where}: malformed plan file ({type(e).__name__}: {e})") from None
        if pf.objective not in OBJECTIVES:
            raise PlanError(f"{where}: unknown objective {pf.objective!r}")
        kinds = {c.kind for c in pf.candidates} - set(CANDIDATE_KINDS)
        if kinds:
            raise PlanError(
                f"{where}: unknown candidate kind {sorted(kinds)[0]!r}; kinds: "
                f"{', '.join(CANDIDATE_KINDS)}"
            )
        if not pf.runnable:
            raise PlanError(f"{where}: no candidate meets the plan's bounds")
        names = [c.name for c in pf.candidates]
        if len(set(names)) != len(names):
            raise PlanError(f"{where}: two bundles realise the same candidate ({names})")
        return pf


def _bundle_key(manifest) -> tuple[str, tuple[int, ...]]:
    return manifest.model, tuple(manifest.input.shape)


def _candidate_key(manifest) -> tuple[str | None, str | None]:
    """The ``(split, codec)`` of the plan's candidate a bundle realises: a split bundle's
    point and codec; ``(None, "png")``/``(None, "jpeg95")`` for an image bundle
    (``export --whole --image-codec``); ``(None, None)`` for a device-only one."""
    if manifest.mode == "device-only":
        return None, None
    codec = str(manifest.codec.get("name"))
    if manifest.mode == "image":
        quality = (manifest.codec.get("options") or {}).get("quality")
        return None, codec if codec == "png" or quality is None else f"{codec}{quality}"
    return str(manifest.split.get("name")), codec


def _describe(key: tuple[str | None, str | None]) -> str:
    split, codec = key
    if split is None:
        return "device-only" if codec is None else f"image, codec {codec}"
    return f"split {split}, codec {codec}"


def plan_file_from_plan(plan, bundles: Sequence[str | os.PathLike]) -> PlanFile:
    """Matches each bundle to the plan's candidate of its split point and codec.

    Args:
        plan: a :class:`~splitnet.plan.Plan`.
        bundles: bundle folders (``splitnet export`` output), all of the plan's model.

    Raises:
        PlanError: no bundle; bundles of different models or inputs, or not of the
            plan's; a bundle that no candidate matches (named); two bundles of the
            same candidate.
    """
    from splitnet.bundle import read_manifest
    from splitnet.plan._cost import request_overhead_bytes

    if not bundles:
        raise PlanError("--emit-plan needs the bundles that realise the plan: --bundles DIR ...")
    manifests = [(Path(b), read_manifest(b, verify=False)) for b in bundles]
    first_dir, first = manifests[0]
    for d, m in manifests[1:]:
        if _bundle_key(m) != _bundle_key(first):
            raise PlanError(
                f"the plan's bundles are of different models: {first_dir} is {first.model} "
                f"{'x'.join(map(str, first.input.shape))}, {d} is {m.model} "
                f"{'x'.join(map(str, m.input.shape))}"
            )
    if _bundle_key(first) != (plan.model, tuple(plan.input)):
        raise PlanError(
            f"the bundles are of {first.model} {'x'.join(map(str, first.input.shape))}, "
            f"the plan of {plan.model} {'x'.join(map(str, plan.input))}"
        )
    costs = {(k.candidate.split, k.candidate.codec): (k, True) for k in plan.ranked}
    costs.update({(k.candidate.split, k.candidate.codec): (k, False) for k in plan.excluded})
    out: list[PlanCandidate] = []
    for d, m in manifests:
        key = _candidate_key(m)
        if key not in costs:
            raise PlanError(
                f"no candidate of the plan matches bundle {d} ({_describe(key)}): "
                "give the rate-accuracy and profile files that cover it"
            )
        k, meets = costs[key]
        c = k.candidate
        sends = c.kind != "device"
        out.append(
            PlanCandidate(
                name=c.name,
                bundle=str(d.resolve()),
                served_name=m.name,
                split=str(m.split.get("name")),
                codec=str(m.codec.get("name")) if key[1] is None else key[1],
                device_ms=c.device_ms,
                # the framing around the payload names the bundle's model
                wire_bytes=(
                    c.payload_bytes + request_overhead_bytes(m.name, c.payload_bytes)
                    if sends
                    else 0.0
                ),
                server_ms=c.server_ms if sends else 0.0,
                drop_points=c.drop_points,
                device_memory_bytes=c.device_memory_bytes,
                meets_bounds=meets,
                kind=c.kind,
            )
        )
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise PlanError(f"two bundles realise the same candidate {dup!r}: give one of them")
    if not any(c.meets_bounds for c in out):
        raise PlanError("none of the bundles' candidates meets the plan's bounds")
    return PlanFile(
        model=plan.model,
        input=tuple(plan.input),
        objective=plan.objective,
        bounds=plan.bounds,
        link=plan.link,
        candidates=tuple(out),
        pipeline=plan.pipeline,
    )


def write_plan_file(plan_file: PlanFile, path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(plan_file.to_dict(), indent=2) + "\n", encoding="utf-8")


def read_plan_file(path: str | os.PathLike) -> PlanFile:
    """Reads a plan file and checks that its bundles are one model's.

    Raises:
        PlanError: not a plan file, malformed, or bundles of different models.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PlanError(f"{path}: not JSON ({e})") from None
    pf = PlanFile.from_dict(doc, where=str(path))
    check_bundles(pf, where=str(path))
    return pf


def check_bundles(pf: PlanFile, *, where: str = "the plan") -> None:
    """Every bundle of ``pf`` exists and is of the plan's model and input."""
    from splitnet.bundle import read_manifest

    for c in pf.candidates:
        m = read_manifest(c.bundle, verify=False)
        if _bundle_key(m) != (pf.model, pf.input):
            raise PlanError(
                f"{where}: the plan's bundles are of different models: {c.bundle} is {m.model} "
                f"{'x'.join(map(str, m.input.shape))}, the plan is of {pf.model} "
                f"{'x'.join(map(str, pf.input))}"
            )
