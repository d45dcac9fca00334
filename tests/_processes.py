"""Real ``splitnet serve`` and ``splitnet device`` processes for the fault tests (this
tree's code, one torch thread), and what they leave behind."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GRPC_VERBOSITY": "ERROR"}


def export_small_unet(root: Path) -> Path:
    """``root/unet``: the small U-Net bundle (q4, width 1/8, 3x32x64) of the server and
    daemon tests and the flood and soak benchmarks; returns ``root``."""
    from splitnet.export import export_bundle

    export_bundle(
        "unet-vgg16",
        input_shape=(3, 32, 64),
        split="encoder.block3.pool",
        out_dir=root / "unet",
        codec="q4",
        model_args={"width": 0.125},
        parity_frames=1,
    )
    return root


def rss_mb(pid: int) -> float:
    """The resident set of process ``pid`` in MiB (/proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sink(log):
    # a long run's output goes to a file: a pipe nobody reads would block the process
    return open(log, "w") if log is not None else subprocess.PIPE  # noqa: SIM115


def daemon_process(
    bundle, server: str, out, frames: int, *extra: str, log=None
) -> subprocess.Popen:
    """``splitnet device --bundle B --server S --frames N --out OUT extra...`` (output:
    pipes, or the file ``log``)."""
    cmd = [sys.executable, "-m", "splitnet.cli.main", "device", "--bundle", str(bundle)]
    cmd += ["--server", server, "--frames", str(frames), "--out", str(out), *extra]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def serve_process(
    repository, port: int, metrics_port: int, *extra: str, ready_s: float = 180, log=None
) -> subprocess.Popen:
    """``splitnet serve`` on ``port``, returned once it answers (a hang guard of ``ready_s``)."""
    import grpc

    cmd = [sys.executable, "-m", "splitnet.cli.main", "serve", "--repository", str(repository)]
    cmd += ["--port", str(port), "--metrics-port", str(metrics_port), "--device", "cpu", *extra]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=_sink(log), text=True)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else f"see {log}"
                raise RuntimeError(f"splitnet serve exited {proc.returncode}: {err}")
            try:
                grpc.channel_ready_future(channel).result(timeout=0.5)
                return proc
            except grpc.FutureTimeoutError:
                continue
        proc.kill()
        raise TimeoutError("splitnet serve did not come up")
    finally:
        channel.close()


def tail_runs(metrics_port: int, model: str) -> int:
    """Frames the server's tail ran for ``model`` (its Prometheus compute-seconds count)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(
        r'^splitnet_compute_seconds_count\{model="' + re.escape(model) + r'"\} (\S+)$',
        text,
        re.M,
    )
    return int(float(m.group(1))) if m else 0


def results(out: Path, suffix: str = ".png") -> dict[str, int]:
    """The result files under ``out``: name -> mtime (ns)."""
    return {p.name: p.stat().st_mtime_ns for p in Path(out).glob(f"*{suffix}")}


def summary(out: Path) -> dict:
    return json.loads((Path(out) / "summary.json").read_text())


def stop(*procs: subprocess.Popen) -> None:
    """Kills what is still running (a test's cleanup)."""
    for p in procs:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(30)
