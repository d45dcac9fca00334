"""benchmarks/perf_analyzer_run.py without the binary: the --input-data JSON it writes,
the CSV report it reads, the table it writes."""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# perf_analyzer 2.60.0's -f report: one header line, one row per concurrency (µs)
HEADER = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
    "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
    "p50 latency,p90 latency,p95 latency,p99 latency"
)


@pytest.fixture(scope="module")
def pa():
    spec = importlib.util.spec_from_file_location(
        "perf_analyzer_run", ROOT / "benchmarks" / "perf_analyzer_run.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_input_data_holds_payloads_the_bundle_decodes(pa, repository, tmp_path):
    from splitnet.bundle import read_manifest

    bundle = repository / "unet"
    path = tmp_path / "input.json"
    size = pa.input_data(bundle, path, frames=2)
    doc = json.loads(path.read_text())
    assert len(doc["data"]) == 2 and list(doc["data"][0]) == ["payload"]
    entry = doc["data"][0]["payload"]
    payload = base64.b64decode(entry["b64"])
    assert entry["shape"] == [len(payload)] and abs(size - len(payload)) < len(payload)
    manifest = read_manifest(bundle)
    tensors = manifest.make_codec().decode(payload)
    assert [t.shape for t in tensors] == [tuple(t.shape) for t in manifest.crossing]
    assert all(np.isfinite(t).all() for t in tensors)


def test_read_csv_gives_milliseconds_and_littles_law(pa, tmp_path):
    path = tmp_path / "r.csv"
    parts = [100, 4000, 100000, 20000, 270000, 200, 5]  # µs, 394.305 ms in all
    row = [8, 6.4, *parts, 900000, 1700000, 2000000, 2100000]
    path.write_text(HEADER + "\n" + ",".join(map(str, row)) + "\n")
    r = pa.read_csv(path)
    assert r["infer_per_s"] == 6.4
    assert (r["p50_ms"], r["p95_ms"], r["p99_ms"]) == (900, 2000, 2100)
    assert r["mean_ms"] == pytest.approx(394.305)
    assert r["little_infer_per_s"] == pytest.approx(8 / 0.394305)
    assert r["server_queue_ms"] == 100


def test_read_csv_refuses_a_report_without_percentiles(pa, tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("Concurrency,Inferences/Second\n1,2.0\n")
    with pytest.raises(SystemExit, match="p95 latency"):
        pa.read_csv(path)


def test_table_has_a_row_per_case_and_the_gain(pa):
    def run(rate, little):
        return {"infer_per_s": rate, "little_infer_per_s": little, "p50_ms": 100.0,
                "p95_ms": 200.0, "p99_ms": 300.0, "server_cores": 0.6}  # fmt: skip

    results = {
        "grpc": {
            "1": pa.summarise([run(4.0, 5.0), run(2.0, 3.0)]),
            "8": pa.summarise([run(6.0, 8.0)]),
        }
    }
    meta = {"perf_analyzer": "2.60.0", "input": "3x64x384", "split": "s", "width": 1.0,
            "payload_bytes": 1000, "repeats": 2, "requests": 96, "machine": "m",
            "load_before": "1", "load_after": "2"}  # fmt: skip
    text = pa.table(results, meta)
    assert "| grpc | 1 | 3.00 | 4.00 |" in text  # medians of the rounds
    assert "| grpc | 8 | 6.00 | 8.00 |" in text
    assert "**2.00x** (C / mean latency: 2.00x)" in text
