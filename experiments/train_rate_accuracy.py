"""Train a split model on synthetic steel defects and measure rate-accuracy per pool point.

Usage:
    OMP_NUM_THREADS=2 python experiments/train_rate_accuracy.py \\
        experiments/configs/steel_synthetic.yaml [--out DIR] [--epochs N] [--n N]

Writes into ``experiments/results/<name>/`` (or ``--out``): ``model.pt`` (best
checkpoint; not committed), ``train.json`` (history, wall time), and per sweep
``table.md``, ``results.json`` and ``rate_accuracy.png`` (sweeps after the
first are prefixed with their name).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch
import yaml

from splitnet.data import open_dataset, parse_spec
from splitnet.profile import RateAccuracyConfig, rate_accuracy
from splitnet.train import TrainConfig, model_from_checkpoint, train

ROOT = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, help="default: experiments/results/<name>")
    ap.add_argument("--epochs", type=int, help="override train.epochs (for a quick pilot)")
    ap.add_argument("--n", type=int, help="override the synthetic frame count (pilot)")
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(args.config.read_text())
    out = args.out or ROOT / "results" / cfg["name"]
    out.mkdir(parents=True, exist_ok=True)
    data = cfg["data"]
    if args.n:
        data = data.replace(f"n={parse_spec(data).options['n']}", f"n={args.n}")
    tc = cfg["train"]
    c, h, w = cfg["input"]

    t0 = time.perf_counter()
    result = train(
        TrainConfig(
            model=cfg["model"],
            data=data,
            out=str(out / "model.pt"),
            epochs=args.epochs or tc["epochs"],
            batch=tc["batch"],
            lr=tc["lr"],
            input_shape=(c, h, w),
            model_kwargs=dict(cfg.get("model_kwargs", {})),
            seed=tc["seed"],
            max_seconds=60 * tc["max_minutes"] if tc.get("max_minutes") else None,
        )
    )
    train_s = time.perf_counter() - t0
    summary = {
        "model": cfg["model"],
        "model_kwargs": cfg.get("model_kwargs", {}),
        "input": [c, h, w],
        "data": data,
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "best_val_" + result.metric_name: result.best_metric,
        "history": result.history,
        "train_seconds": round(train_s, 1),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
    }
    print(f"trained in {train_s:.0f} s; best val {result.metric_name} {result.best_metric:.4f}")

    model, _ = model_from_checkpoint(cfg["model"], out / "model.pt")
    val = open_dataset(data, subset="val", size=(h, w), channels=c)
    ra = cfg["rate_accuracy"]
    tgt = cfg.get("target", {})
    summary["rate_accuracy_seconds"] = {}
    for k, sweep in enumerate(ra["sweeps"]):
        t1 = time.perf_counter()
        report = rate_accuracy(
            model,
            val,
            RateAccuracyConfig(
                codecs=tuple(ra["codecs"]),
                codec_options=dict(sweep.get("options") or {}),
                jpeg_qualities=tuple(ra["jpeg_qualities"]),
                batch=ra["batch"],
            ),
        )
        provenance = {"weights": "model.pt", "data": val.spec, "subset": "val"}
        report = dataclasses.replace(report, provenance=provenance)
        stem = "" if k == 0 else f"{sweep['name']}_"
        report.write(
            out,
            stem=stem,
            max_drop_points=tgt.get("max_drop_points", 0.5),
            max_bits=tgt.get("max_bits", 2.0),
        )
        summary["rate_accuracy_seconds"][sweep["name"]] = round(time.perf_counter() - t1, 1)
        for t in report.check_target(**tgt):
            print(f"[{sweep['name']}] {t.to_dict()}")
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    (out / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
