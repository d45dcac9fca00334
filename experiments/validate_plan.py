"""Validate ``splitnet plan`` against the real daemon and server through the link emulator.

Usage:
    .venv/bin/python experiments/validate_plan.py experiments/configs/validate_plan.yaml \
        [--out DIR] [--work DIR] [--reuse]

1. a random-weight checkpoint of the config's model (only times and bytes matter);
2. ``splitnet profile --measure-fps`` (heads in OpenVINO, tails and the whole model in
   torch) and ``splitnet rate-accuracy`` (bytes per frame and codec times);
3. ``splitnet plan`` at each bandwidth, with the config's pipeline (window, batching
   delay, shared cores) and the frame source's measured time;
4. for the plan's choice and the two baselines at each bandwidth, ``splitnet serve``
   and ``splitnet device --emulate-link BW,RTT/2`` in their own processes on loopback;
   the daemon's summary gives the measured FPS and mean latency.

Writes ``table.md`` and ``results.json`` into ``--out``: predicted against measured,
the error in %, by the cost model with the pipeline and by the model without it (the
phase-1 model: 1 / slowest stage, a frame's latency), and ``os.getloadavg()`` at each
run (the machine is shared). ``--reuse`` keeps the work folder's checkpoint, profile,
sweep and bundles.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from splitnet._table import format_table  # noqa: E402
from splitnet.plan import Link, Pipeline, evaluate, make_plan  # noqa: E402

CLI = "import sys; from splitnet.cli import main; sys.exit(main())"
PIN: set[int] | None = None  # the cores every measured process is pinned to (the config's)


def _pin() -> None:
    if PIN:
        os.sched_setaffinity(0, PIN)  # OpenVINO and torch then use these cores only


def splitnet(*args: str, capture: bool = False, timeout: float = 900) -> str:
    """Runs ``splitnet ARGS`` in its own process (this tree's splitnet, one OMP thread,
    on the pinned cores)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", CLI, *map(str, args)]
    res = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=_pin
    )
    if res.returncode != 0:
        raise RuntimeError(f"splitnet {' '.join(map(str, args[:2]))} failed:\n{res.stderr[-3000:]}")
    return res.stdout if capture else ""


def shape_text(shape) -> str:
    return "x".join(map(str, shape))


def head_threads_args(cfg: dict) -> list[str]:
    """``--head-threads N`` for the profile and the daemon: the config's
    ``pipeline.head_threads`` (none: OpenVINO's choice)."""
    n = (cfg.get("pipeline") or {}).get("head_threads")
    return [] if n is None else ["--head-threads", str(int(n))]


def model_args(cfg: dict) -> list[str]:
    out = []
    for k, v in (cfg.get("model_args") or {}).items():
        out += ["--model-arg", f"{k}={v}"]
    return out


# -- measurements ---------------------------------------------------------------------------


def make_checkpoint(cfg: dict, path: Path) -> None:
    import torch

    from splitnet.models import create_model
    from splitnet.train._checkpoint import CHECKPOINT_FORMAT

    torch.manual_seed(cfg["seed"])
    model = create_model(cfg["model"], **(cfg.get("model_args") or {}))
    info = model.splitnet_info
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "model": cfg["model"],
            "model_kwargs": dict(cfg.get("model_args") or {}),
            "num_classes": info.num_classes,
            "class_names": list(info.class_names),
            "task": info.task,
            "input_shape": list(cfg["input"]),
            "state_dict": model.state_dict(),
        },
        path,
    )


def measure_inputs(cfg: dict, work: Path, reuse: bool) -> dict[str, Path]:
    ckpt, profile, ra = work / "random.pt", work / "profile.json", work / "ra"
    if not (reuse and ckpt.is_file()):
        make_checkpoint(cfg, ckpt)
    if not (reuse and profile.is_file()):
        t0 = time.perf_counter()
        p = cfg["profile"]
        splitnet(
            "profile", cfg["model"], "--input", shape_text(cfg["input"]), *model_args(cfg),
            "--kind", p["kind"], "--measure-fps", "--measure-seconds", p["measure_seconds"],
            *head_threads_args(cfg), "--json", profile,
        )  # fmt: skip
        print(f"profile: {time.perf_counter() - t0:.0f} s", flush=True)
    if not (reuse and (ra / "results.json").is_file()):
        t0 = time.perf_counter()
        r = cfg["rate_accuracy"]
        splitnet(
            "rate-accuracy", cfg["model"], "--weights", ckpt, "--data", r["data"],
            "--input", shape_text(cfg["input"]), "--codecs", ",".join(r["codecs"]),
            "--jpeg", ",".join(map(str, r["jpeg_qualities"])), "--max-drop", "100",
            "--out", ra, "--quiet",
        )  # fmt: skip
        print(f"rate-accuracy: {time.perf_counter() - t0:.0f} s", flush=True)
    return {"checkpoint": ckpt, "profile": profile, "rate_accuracy": ra / "results.json"}


def source_ms(cfg: dict, frames: int = 60) -> float:
    """The daemon's synthetic source: ms per frame (it runs in the daemon's loop)."""
    from splitnet.synthetic import rgb_frames

    _, h, w = cfg["input"]
    it = rgb_frames(h, w, seed=0)
    next(it)
    t0 = time.perf_counter()
    for _ in range(frames):
        next(it)
    return 1000 * (time.perf_counter() - t0) / frames


# -- plans and bundles ----------------------------------------------------------------------


def plans(cfg: dict, files: dict, pipeline: Pipeline) -> list[dict]:
    """Per bandwidth: the plan, and the candidates to run (its choice and the baselines)."""
    p = cfg["plan"]
    out = []
    for mbps in p["bandwidths_mbps"]:
        plan = make_plan(
            files["profile"],
            files["rate_accuracy"],
            bandwidth_bps=mbps * 1e6,
            rtt_s=p["rtt_ms"] / 1000,
            objective=p["objective"],
            max_device_memory_mb=p.get("max_device_memory_mb"),
            pipeline=pipeline,
        )
        every = [*plan.ranked, *plan.excluded]
        chosen = {plan.best.candidate.name: "plan's choice"}
        device = next(k for k in every if k.candidate.kind == "device")
        image = next(k for k in every if k.candidate.kind == "image")  # the best image
        chosen.setdefault(device.candidate.name, "baseline: device-only")
        chosen.setdefault(image.candidate.name, "baseline: image")
        split = next((k for k in plan.ranked if k.candidate.kind == "split"), None)
        if split is not None:  # where the choice is a baseline, the best split too
            chosen.setdefault(split.candidate.name, "best split")
        runs = [
            {"bandwidth_mbps": mbps, "candidate": k.candidate, "role": chosen[k.candidate.name]}
            for k in every
            if k.candidate.name in chosen
        ]
        out.append({"bandwidth_mbps": mbps, "plan": plan, "runs": runs})
    return out


def bundle_dir(work: Path, c) -> Path:
    if c.kind == "device":
        return work / "device-only"
    return work / "repo" / c.name.replace(" ", "_")


def export(cfg: dict, files: dict, work: Path, c, reuse: bool) -> Path:
    out = bundle_dir(work, c)
    if reuse and (out / "manifest.json").is_file():
        return out
    args = ["export", cfg["model"], "--input", shape_text(cfg["input"]), *model_args(cfg)]
    args += ["--weights", files["checkpoint"], "--out", out, "--overwrite"]
    if c.kind == "device":
        args += ["--device-only"]
    elif c.kind == "image":
        codec = "png" if c.codec == "png" else f"jpeg:{c.codec.removeprefix('jpeg')}"
        args += ["--whole", "--image-codec", codec]
    else:
        # one bundle per point x codec: a server may serve two codecs of one point
        args += [
            "--split",
            c.split,
            "--codec",
            c.codec,
            "--name",
            f"{cfg['model']}.{c.split}.{c.codec}",
        ]
    splitnet(*args)
    return out


# -- runs -----------------------------------------------------------------------------------


def start_server(work: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", CLI, "serve", "--repository", str(work / "repo")]
    cmd += ["--port", str(port), "--metrics-port", "-1"]
    server = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_pin
    )
    line = server.stdout.readline()  # "serving ... on host:port" once it listens
    if not line.startswith("serving"):
        server.kill()
        raise RuntimeError(f"the server did not start: {line}{server.stdout.read()[-2000:]}")
    print(line.strip(), flush=True)
    return server


def run_daemon(
    bundle: Path,
    port: int,
    mbps: float,
    rtt_ms: float,
    frames: int,
    window: int,
    head_threads: list[str] = (),
):
    args = ["device", "--bundle", bundle, "--frames", frames, "--window", window, "--json"]
    args += list(head_threads)
    from splitnet.bundle import read_manifest

    if read_manifest(bundle, verify=False).has_tail:  # device-only: no server, no link
        args += [
            "--server",
            f"127.0.0.1:{port}",
            "--emulate-link",
            f"{mbps:g}Mbit/s,{rtt_ms / 2:g}ms",
        ]
    load = os.getloadavg()
    summary = json.loads(splitnet(*args, capture=True))
    return summary, load, os.getloadavg()


def run_mean_latency(k, frames: int, window: int, loop_ms: float) -> float:
    """The predicted mean latency over a run of ``frames`` from an empty window: the
    first ``window`` frames find a free slot (frame ``i`` waits ``i`` periods less the
    producer's ``i`` loops), the rest the steady state of :attr:`Cost.stream_latency_ms`."""
    steady = k.stream_latency_ms
    if steady <= k.latency_ms or frames <= 0:
        return steady  # no queue: every frame alone
    period = 1000.0 / k.fps
    first = [min(steady, k.latency_ms + i * (period - loop_ms)) for i in range(min(window, frames))]
    return (sum(first) + (frames - len(first)) * steady) / frames


def median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def error(predicted: float, measured: float) -> float:
    return 100.0 * (predicted - measured) / measured if measured else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, help="default experiments/results/<name>")
    ap.add_argument("--work", type=Path, help="bundles and inputs (default: a temp folder)")
    ap.add_argument("--reuse", action="store_true", help="keep what --work already holds")
    ap.add_argument("--port", type=int, default=18931)
    a = ap.parse_args()
    cfg = yaml.safe_load(a.config.read_text())
    out = a.out or ROOT / "experiments" / "results" / cfg["name"]
    work = a.work or Path(tempfile.gettempdir()) / f"splitnet-{cfg['name']}"
    out.mkdir(parents=True, exist_ok=True)
    (work / "repo").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    global PIN
    pc = cfg["pipeline"]
    PIN = set(pc["pin_cores"]) if pc.get("pin_cores") else None
    files = measure_inputs(cfg, work, a.reuse)
    _pin()
    src = source_ms(cfg)  # on the pinned cores, as in the daemon
    pipeline = Pipeline(
        window=pc["window"],
        shared_cores=len(PIN) if PIN else pc.get("shared_cores"),
        source_ms=src,
        server_delay_ms=pc["server_delay_ms"],
        head_threads=pc.get("head_threads"),
    )
    phase1 = Pipeline()  # the model before: 1 / slowest stage; one frame's latency
    print(f"source {src:.2f} ms/frame; {pipeline}", flush=True)
    studies = plans(cfg, files, pipeline)
    bundles = {}
    for s in studies:
        for r in s["runs"]:
            c = r["candidate"]
            if c.name not in bundles:
                bundles[c.name] = export(cfg, files, work, c, a.reuse)

    rtt_ms = cfg["plan"]["rtt_ms"]
    rc = cfg["run"]
    threads = head_threads_args(cfg)
    rows, records = [], []
    server = start_server(work, a.port)
    try:
        top = max(cfg["plan"]["bandwidths_mbps"])
        for b in bundles.values():  # warm-up: the server's first call of each tail
            run_daemon(b, a.port, top, rtt_ms, rc["warmup_frames"], pc["window"], threads)
        plan_runs = []
        for s in studies:
            mbps = s["bandwidth_mbps"]
            link = Link(mbps * 1e6, rtt_ms / 1000)
            for r in s["runs"]:
                c = r["candidate"]
                new, old = evaluate(c, link, pipeline=pipeline), evaluate(c, link, pipeline=phase1)
                frames = int(min(rc["max_frames"], max(rc["min_frames"], rc["seconds"] * new.fps)))
                plan_runs.append((mbps, r, c, new, old, frames, []))
        for rep in range(rc["repeats"]):  # interleaved: a change of load hits every row alike
            for mbps, _, c, _, _, frames, got in plan_runs:
                summary, load0, load1 = run_daemon(
                    bundles[c.name], a.port, mbps, rtt_ms, frames, pc["window"], threads
                )
                got.append({"summary": summary, "loadavg_before": load0, "loadavg_after": load1})
                print(f"repeat {rep + 1}: {mbps:g} Mbit/s {c.name}: {summary['fps']:.1f} FPS, "
                      f"{summary['latency_mean_ms']:.0f} ms, load {load0[0]:.2f}", flush=True)  # fmt: skip
        for mbps, r, c, new, old, frames, got in plan_runs:
            fps = median([g["summary"]["fps"] for g in got])
            lat = median([g["summary"]["latency_mean_ms"] for g in got])
            loop = c.device_ms + pipeline.source_ms
            pred_lat = run_mean_latency(new, frames, pc["window"], loop)
            rec = {
                "bandwidth_mbps": mbps,
                "candidate": c.name,
                "role": r["role"],
                "frames": frames,
                "predicted": {"fps": new.fps, "latency_ms": pred_lat,
                              "stream_latency_ms": new.stream_latency_ms,
                              "one_frame_latency_ms": new.latency_ms, "bottleneck": new.bottleneck},
                "predicted_phase1": {"fps": old.fps, "latency_ms": old.latency_ms,
                                     "bottleneck": old.bottleneck},
                "measured": {"fps": fps, "latency_ms": lat,
                             "fps_runs": [g["summary"]["fps"] for g in got],
                             "latency_ms_runs": [g["summary"]["latency_mean_ms"] for g in got]},
                "error_pct": {"fps": error(new.fps, fps), "latency_ms": error(pred_lat, lat)},
                "error_pct_phase1": {"fps": error(old.fps, fps), "latency_ms": error(old.latency_ms, lat)},
                "loadavg_before": [g["loadavg_before"] for g in got],
                "loadavg_after": [g["loadavg_after"] for g in got],
                "runs": got,
            }  # fmt: skip
            records.append(rec)
            rows.append(_row(rec))
            print(" | ".join(rows[-1]), flush=True)
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()

    doc = {
        "config": cfg,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "source_ms": src,
        "pipeline": pipeline.to_dict(),
        "plans": [s["plan"].to_dict() for s in studies],
        "runs": records,
        "seconds": time.perf_counter() - t_start,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "table.md").write_text(markdown(cfg, doc, rows))
    print(f"wrote {out / 'table.md'} in {doc['seconds']:.0f} s")
    return 0


HEADER = [
    "Mbit/s", "candidate", "role", "pred. FPS", "meas. FPS", "err", "pred. ms", "meas. ms",
    "err", "slowest", "phase-1 FPS (err)", "phase-1 ms (err)", "load 1 min",
]  # fmt: skip


def _row(r: dict) -> list[str]:
    p, m, e, q, eq = (
        r[k] for k in ("predicted", "measured", "error_pct", "predicted_phase1", "error_pct_phase1")
    )
    return [
        f"{r['bandwidth_mbps']:g}", r["candidate"], r["role"],
        f"{p['fps']:.1f}", f"{m['fps']:.1f}", f"{e['fps']:+.0f}%",
        f"{p['latency_ms']:.0f}", f"{m['latency_ms']:.0f}", f"{e['latency_ms']:+.0f}%",
        p["bottleneck"],
        f"{q['fps']:.1f} ({eq['fps']:+.0f}%)", f"{q['latency_ms']:.0f} ({eq['latency_ms']:+.0f}%)",
        "-".join(f"{x:.1f}" for x in (min(v[0] for v in r["loadavg_before"]), max(v[0] for v in r["loadavg_after"]))),
    ]  # fmt: skip


def markdown(cfg: dict, doc: dict, rows: list[list[str]]) -> str:
    runs = doc["runs"]
    within = [
        abs(r["error_pct"]["fps"]) <= 15 and abs(r["error_pct"]["latency_ms"]) <= 15 for r in runs
    ]
    worst_fps = max(abs(r["error_pct"]["fps"]) for r in runs)
    worst_lat = max(abs(r["error_pct"]["latency_ms"]) for r in runs)
    old_fps = max(abs(r["error_pct_phase1"]["fps"]) for r in runs)
    old_lat = max(abs(r["error_pct_phase1"]["latency_ms"]) for r in runs)
    p = doc["pipeline"]
    lines = [
        f"# {cfg['name']}: predicted against measured, {cfg['model']} "
        f"{shape_text(cfg['input'])} {cfg.get('model_args') or ''}",
        "",
        f"Generated by `experiments/validate_plan.py experiments/configs/{cfg['name']}.yaml` in "
        f"{doc['seconds']:.0f} s on {doc['machine']}. Each row: `splitnet serve` and "
        f"`splitnet device --emulate-link BW,{cfg['plan']['rtt_ms'] / 2:g}ms --window {p['window']}"
        f"{' ' + ' '.join(head_threads_args(cfg)) if head_threads_args(cfg) else ''}` "
        "in their own processes on loopback (the device-only row: no server), the median "
        f"over {cfg['run']['repeats']} interleaved runs of the daemon's summary FPS and mean "
        "latency (captured to answered) against `splitnet plan "
        f"--objective {cfg['plan']['objective']}` at RTT {cfg['plan']['rtt_ms']} ms with "
        f"--window {p['window']} --server-delay {p['server_delay_ms']:g}ms "
        f"--source-ms {p['source_ms']:.2f} (the synthetic source, measured) "
        f"{'(heads profiled with ' + ' '.join(head_threads_args(cfg)) + ') ' if head_threads_args(cfg) else ''}"
        f"--shared-cores {p['shared_cores']} (every process pinned to core(s) "
        f"{cfg['pipeline'].get('pin_cores')}: the profile, the sweep, the server and the daemon). pred. ms: the stream's latency over the run's "
        "frames (the first `--window` frames find a free slot; the steady state is in "
        "results.json). err = (predicted - measured) / measured. "
        "phase-1: the model without the pipeline (FPS = 1 / slowest stage, a stream's "
        "latency = one frame's). load: `os.getloadavg()` before and after each run (a "
        "training job and other sessions share the 2 cores).",
        "",
        format_table(HEADER, rows, align="rll" + "r" * (len(HEADER) - 3))
        .replace("\n", "\n    ")
        .join(["    ", ""]),
        "",
        f"Within 15% (FPS and latency): {sum(within)} of {len(runs)} runs; worst error "
        f"{worst_fps:.0f}% (FPS), {worst_lat:.0f}% (latency); the phase-1 model's worst: "
        f"{old_fps:.0f}% (FPS), {old_lat:.0f}% (latency).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
