"""Hand-written inputs of ``splitnet plan``: a profile and a rate-accuracy document in the
layouts that ``splitnet profile --json`` and ``splitnet rate-accuracy`` write, with the
numbers chosen by the test (shared by tests/test_plan.py and benchmarks/bench_plan.py)."""

from __future__ import annotations

import json
from pathlib import Path


def profile_point(
    name: str,
    index: int,
    *,
    elements: int,
    head_ms: float | None,
    tail_ms: float | None,
    memory_bytes: int = 3_000_000,
    server_macs: int = 1,
) -> dict:
    """One point of ``splitnet profile --measure-fps --json`` (only what the planner reads
    is meaningful; ``memory_bytes`` is split between FP16 weights and peak activations)."""
    return {
        "index": index,
        "name": name,
        "kind": "pool",
        "op": "max_pool2d",
        "tensors": [],
        "elements": elements,
        "device_macs": 1,
        "server_macs": server_macs,
        "device_params": 1,
        "device_param_bytes": {"float32": memory_bytes, "float16": memory_bytes // 2},
        "peak_activation_bytes": memory_bytes - memory_bytes // 2,
        "bytes": {},
        "mbps": {},
        "device_fps": None if head_ms is None else 1000.0 / head_ms,
        "tail_latency_ms": tail_ms,
        "exported_head_bytes": None,
    }


def profile_doc(
    points: list[dict],
    *,
    model: str = "toy",
    input_shape: tuple[int, int, int] = (3, 64, 64),
    whole_ms: float | None = 500.0,
    whole_memory_bytes: int = 7_000_000,
    model_ms: float | None = 40.0,
    tail_device: str | None = "cpu",
) -> dict:
    doc = {
        "model": model,
        "input": list(input_shape),
        "bits": ["4"],
        "fps": ["10"],
        "total_macs": 2,
        "total_params": 2,
        "points": points,
        "baseline": {"image": "x", "raw_bytes": 1, "png_bytes": 1, "mbps": {}},
    }
    if tail_device is not None:
        doc["tail_device"] = tail_device
        doc["model_latency_ms"] = model_ms
    if whole_ms is not None:
        doc["whole_model"] = profile_point(
            "classifier",
            999,
            elements=10,
            head_ms=whole_ms,
            tail_ms=0.01,
            memory_bytes=whole_memory_bytes,
            server_macs=0,
        )
    return doc


def rate_row(
    codec: str, kb: float, drop: float, encode_ms: float | None, decode_ms: float | None
) -> dict:
    row = {
        "codec": codec,
        "mean_dice": 0.9 - drop / 100,
        "drop_points": drop,
        "kb_per_frame": kb,
        "bits_per_element": 1.0,
    }
    if encode_ms is not None:
        row["encode_ms"], row["decode_ms"] = encode_ms, decode_ms
    return row


def rate_doc(
    points: list[tuple[str, int, int, list[dict]]],
    baselines: list[tuple[str, float, float, float | None, float | None]],
    *,
    model: str = "toy",
    input_shape: tuple[int, int, int] = (3, 64, 64),
) -> dict:
    """``points``: ``(name, index, elements, [rate_row(...)])``; ``baselines``:
    ``(name, kB, drop, encode_ms, decode_ms)``."""
    base = []
    for name, kb, drop, enc, dec in baselines:
        row = rate_row(name, kb, drop, enc, dec)
        del row["codec"]
        fmt = "png" if name == "png" else "jpeg"
        quality = None if fmt == "png" else int(name[4:])
        base.append({"name": name, "format": fmt, "quality": quality, **row})
    return {
        "model": model,
        "input": list(input_shape),
        "frames": 10,
        "metric": "mean_dice",
        "threshold": 0.5,
        "codec_options": {},
        "calibrate": 0,
        "reference": {"mean_dice": 0.9, "kb_per_frame_float32": 49.152},
        "points": [
            {"index": i, "name": n, "kind": "pool", "elements": e, "tensors": [], "results": rows}
            for n, i, e, rows in points
        ],
        "baselines": base,
    }


def write(path: Path, doc: dict) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


def many_points(
    n: int = 72, codecs: tuple[str, ...] = ("q8", "q6", "q4", "q3", "q2")
) -> tuple[dict, dict]:
    """A profile and a rate-accuracy sweep of ``n`` points x ``codecs`` (the size of
    ``unet-vgg16``'s 72 points): deeper points cost more on the device, less on the server."""
    points, rows = [], []
    for i in range(n):
        name, elements = f"layer{i}.op", 100_000 + 5_000 * (i % 9)
        points.append(
            profile_point(name, i, elements=elements, head_ms=1.0 + i, tail_ms=1.0 + n - i)
        )
        coded = [
            rate_row(c, elements * (int(c[1:]) / 8) / 1000 / 6, 0.1 * (8 - int(c[1:])), 0.5, 0.2)
            for c in codecs
        ]
        rows.append((name, i, elements, coded))
    baselines = [("png", 16.0, 0.0, 7.0, 2.0), ("jpeg95", 11.0, 0.4, 0.4, 0.3)]
    return profile_doc(points), rate_doc(rows, baselines)
