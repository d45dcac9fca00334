"""Triton's perf_analyzer, unmodified, against ``splitnet serve`` of a unet-vgg16 tail.

Exports the tail bundle (random init), encodes one frame with the bundle's codec into
perf_analyzer's ``--input-data`` JSON, starts ``splitnet serve`` (gRPC and REST),
runs perf_analyzer in each mode (``grpc``: unary ModelInfer, ``grpc-stream``:
ModelStreamInfer, ``http``: REST v2 with the binary tensor extension) at each
concurrency, interleaved over ``--repeats`` rounds, parses its CSV reports (``-f``) and
writes a Markdown table and a JSON file of throughput and p50/p95/p99 latency.

Started by ``benchmarks/perf_analyzer.sh``, which fetches the binary and the loader it
runs under; by hand::

    python benchmarks/perf_analyzer_run.py --binary PA [--loader LD --library-path LIBS]
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "grpc": ["-i", "grpc"],
    "grpc-stream": ["-i", "grpc", "--streaming"],
    "http": ["-i", "http"],
}
MODEL = "unet"
LATENCY_PARTS = (
    "Client Send",
    "Network+Server Send/Recv",
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
    "Client Recv",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export(repository: Path, input_shape: str, split: str, width: float) -> Path:
    """``repository/unet``: the unet-vgg16 tail bundle (q4 codec, random init)."""
    from splitnet.cli._args import input_shape as parse_shape
    from splitnet.export import export_bundle

    bundle = repository / MODEL
    export_bundle(
        "unet-vgg16",
        input_shape=parse_shape(input_shape),
        split=split,
        out_dir=bundle,
        codec="q4",
        name=MODEL,
        model_args={"width": width} if width != 1.0 else None,
        parity_frames=1,
    )
    return bundle


def input_data(bundle: Path, path: Path, frames: int = 4) -> int:
    """Writes perf_analyzer's ``--input-data`` JSON: ``frames`` encoded payloads as the
    UINT8 input ``payload`` (base64, shape [bytes]); returns the mean payload size."""
    from splitnet.bundle import read_manifest
    from splitnet.wire import PAYLOAD_INPUT

    manifest = read_manifest(bundle)
    rng = np.random.default_rng(0)
    data, sizes = [], []
    for _ in range(frames):
        # ReLU-like activations: half zeros, as a real head's crossing tensors are
        tensors = [
            np.maximum(rng.normal(size=t.shape), 0).astype(np.float32) for t in manifest.crossing
        ]
        payload = manifest.make_codec().encode(tensors)
        sizes.append(len(payload))
        data.append(
            {PAYLOAD_INPUT: {"b64": base64.b64encode(payload).decode(), "shape": [len(payload)]}}
        )
    path.write_text(json.dumps({"data": data}))
    return int(statistics.mean(sizes))


def serve(repository: Path, port: int, http_port: int, extra: list[str], log: Path):
    """``splitnet serve`` of ``repository``, returned once REST says ready."""
    start = "import sys; from splitnet.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", start, "serve", "--repository", str(repository)]
    cmd += ["--port", str(port), "--http-port", str(http_port), "--metrics-port", "-1"]
    cmd += ["--device", "cpu", *extra]
    env = os.environ | {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"splitnet serve exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            url = f"http://127.0.0.1:{http_port}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("splitnet serve did not come up in 180 s")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def perf_analyzer_command(args, mode: str, concurrency: int, url: str, data: Path, csv_path: Path):
    prefix = [args.binary]
    if args.loader:
        prefix = [args.loader, "--library-path", args.library_path, args.binary]
    return [
        *prefix,
        "-m",
        MODEL,
        "-u",
        url,
        *MODES[mode],
        "--concurrency-range",
        str(concurrency),
        "--input-data",
        str(data),
        # a few requests a second: one window of a fixed request count (perf_analyzer's
        # --request-count: no stability search, which rarely settles on a shared 2-core
        # machine); the interleaved repeats show the spread instead. At least 8 a client,
        # and enough that the window lasts well over perf_analyzer's whole-second steps
        "--request-count",
        str(max(args.requests, 8 * concurrency)),
        "--warmup-request-count",
        str(max(2, concurrency)),
        "-f",
        str(csv_path),
    ]


def read_csv(path: Path) -> dict:
    """perf_analyzer's CSV report (one row per concurrency): infer/s and latencies in ms,
    and every column as written (``csv``)."""
    with path.open() as f:
        (row,) = list(csv.DictReader(f))
    us = {k: float(v) for k, v in row.items() if k and v not in (None, "")}
    if "p95 latency" not in us:
        raise SystemExit(f"{path}: no 'p95 latency' column in {sorted(us)}")
    # the mean latency is the sum of perf_analyzer's parts of it; by Little's law a
    # closed loop of C clients then runs C / mean latency requests a second. Beside
    # perf_analyzer's own figure, which comes in whole-second steps of its window
    mean_us = sum(us.get(k, 0) for k in LATENCY_PARTS)
    return {
        "infer_per_s": us["Inferences/Second"],
        "little_infer_per_s": us["Concurrency"] / (mean_us / 1e6) if mean_us else 0.0,
        "mean_ms": mean_us / 1000,
        "p50_ms": us["p50 latency"] / 1000,
        "p95_ms": us["p95 latency"] / 1000,
        "p99_ms": us["p99 latency"] / 1000,
        "client_send_ms": us.get("Client Send", 0) / 1000,
        "network_ms": us.get("Network+Server Send/Recv", 0) / 1000,
        "server_queue_ms": us.get("Server Queue", 0) / 1000,
        "server_compute_infer_ms": us.get("Server Compute Infer", 0) / 1000,
        "csv": us,
    }


def summarise(runs: list[dict[str, float]]) -> dict:
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "csv"}
    out["runs"] = runs
    return out


def table(results: dict, meta: dict) -> str:
    lines = [
        f"perf_analyzer {meta['perf_analyzer']} against `splitnet serve` (unet-vgg16 tail at "
        f"{meta['split']}, input {meta['input']}, width {meta['width']}, q4 payload "
        f"{meta['payload_bytes']:,} bytes); median of {meta['repeats']} interleaved rounds, "
        f"{meta['requests']} requests measured (at least 8 a client); 'C / mean latency' is "
        "the concurrency over the mean of perf_analyzer's latency parts; 'server cores' the "
        "CPU time the server process used over the run's wall time. "
        f"Machine: {meta['machine']}. "
        f"Load average before / after: {meta['load_before']} / {meta['load_after']}.",
        "",
        "| mode | concurrency | infer/s | C / mean latency | p50 ms | p95 ms | p99 ms "
        "| server cores | infer/s per round |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, by_c in results.items():
        for c, r in by_c.items():
            rounds = ", ".join(f"{x['infer_per_s']:.2f}" for x in r["runs"])
            lines.append(
                f"| {mode} | {c} | {r['infer_per_s']:.2f} | {r['little_infer_per_s']:.2f} "
                f"| {r['p50_ms']:.0f} | "
                f"{r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r.get('server_cores', 0):.2f} "
                f"| {rounds} |"
            )
    lines.append("")
    for mode, by_c in results.items():
        cs = sorted(by_c, key=int)
        if len(cs) > 1:
            lo, hi = by_c[cs[0]], by_c[cs[-1]]
            gain = hi["infer_per_s"] / lo["infer_per_s"]
            little = hi["little_infer_per_s"] / lo["little_infer_per_s"]
            lines.append(
                f"- {mode}: concurrency {cs[-1]} / {cs[0]} throughput **{gain:.2f}x** "
                f"(C / mean latency: {little:.2f}x)"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--binary", required=True, help="the perf_analyzer executable")
    p.add_argument("--loader", help="a dynamic loader to start it with (ld-linux-x86-64.so.2)")
    p.add_argument("--library-path", default="", help="the loader's --library-path")
    p.add_argument("--pa-version", default="2.60.0", help="for the report")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8])
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds (median reported)")
    p.add_argument(
        "--requests",
        type=int,
        default=96,
        help="requests measured per mode and concurrency (at least 8 a client)",
    )
    p.add_argument("--input", default="3x64x384")
    p.add_argument("--split", default="encoder.block3.pool")
    p.add_argument("--width", type=float, default=1.0, help="unet-vgg16 channel width")
    p.add_argument("--serve-args", default="", help="extra `splitnet serve` options")
    p.add_argument("--bundle", type=Path, help="a repository folder instead of a fresh export")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--name", default="perf_analyzer", help="results file stem")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="splitnet-pa-") as tmp:
        tmp = Path(tmp)
        repository = args.bundle
        if repository is None:
            repository = tmp / "repo"
            print(f"exporting unet-vgg16 at {args.split}, input {args.input}", file=sys.stderr)
            export(repository, args.input, args.split, args.width)
        data = tmp / "input.json"
        payload_bytes = input_data(repository / MODEL, data)
        port, http_port = free_port(), free_port()
        log = tmp / "serve.log"
        load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
        server = serve(repository, port, http_port, shlex.split(args.serve_args), log)
        urls = {"grpc": f"127.0.0.1:{port}", "grpc-stream": f"127.0.0.1:{port}"}
        urls["http"] = f"127.0.0.1:{http_port}"
        runs: dict[str, dict[str, list]] = {
            m: {str(c): [] for c in args.concurrency} for m in args.modes
        }
        cases = [(m, c) for m in args.modes for c in args.concurrency]
        try:
            with tqdm(total=len(cases) * args.repeats, desc="perf_analyzer runs") as bar:
                for r in range(args.repeats):
                    # interleaved: the machine's drifting load falls on every case alike
                    for mode, c in cases:
                        csv_path = tmp / f"{mode}-c{c}-{r}.csv"
                        cmd = perf_analyzer_command(args, mode, c, urls[mode], data, csv_path)
                        cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
                        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
                        # the cores the server used meanwhile (warm-up included): on a
                        # shared machine its share of the CPU, whatever its threads
                        cores = (cpu_seconds(server.pid) - cpu0) / (time.perf_counter() - t0)
                        if done.returncode != 0 or not csv_path.exists():
                            raise SystemExit(
                                f"perf_analyzer {mode} c{c} exited {done.returncode}:\n"
                                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n"
                                f"server log: {log.read_text()[-2000:]}"
                            )
                        runs[mode][str(c)].append(read_csv(csv_path) | {"server_cores": cores})
                        bar.update()
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())

    results = {m: {c: summarise(v) for c, v in by_c.items()} for m, by_c in runs.items()}
    meta = {
        "perf_analyzer": args.pa_version,
        "input": args.input,
        "split": args.split,
        "width": args.width,
        "payload_bytes": payload_bytes,
        "repeats": args.repeats,
        "requests": args.requests,
        "serve_args": args.serve_args,
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, shared with other jobs",
        "load_before": load_before,
        "load_after": load_after,
    }
    text = table(results, meta)
    (args.out / f"{args.name}.md").write_text(text)
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=1)
    )
    print(text)


if __name__ == "__main__":
    main()
