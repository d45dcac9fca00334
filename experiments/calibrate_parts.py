"""Temperature scaling of an over-confident parts classifier: ECE and NLL before and after.

Usage:
    OMP_NUM_THREADS=1 python experiments/calibrate_parts.py \\
        experiments/configs/calibrate_parts.yaml [--out DIR] [--bundle DIR]

Trains the config's classifier on a small training set until it fits it (the
over-confidence temperature scaling corrects, Guo et al. 2017), exports it as a split
bundle, fits the temperature on the calibration split with ``splitnet calibrate``'s
:func:`~splitnet.train._calibrate.calibrate_bundle` (stored in the bundle's manifest),
then measures ECE (15 bins) and NLL before and after on a separate test split, through
the bundle as deployed (OpenVINO head, codec, tail). Writes ``table.md``,
``results.json`` and ``reliability.png`` (test split) into
``experiments/results/<name>/``; the checkpoint ``model.pt`` is not committed and the
bundle goes to a temporary folder unless ``--bundle`` keeps it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from splitnet.bundle import Confidence, expected_calibration_error
from splitnet.data import open_dataset
from splitnet.export import export_bundle
from splitnet.train import TrainConfig, evaluate, model_from_checkpoint, train
from splitnet.train._calibrate import (
    CalibrationResult,
    _nll,
    _probs,
    bundle_logits,
    calibrate_bundle,
    reliability_plot,
)

ROOT = Path(__file__).resolve().parent


def _scores(probs: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "ece": expected_calibration_error(probs, labels),
        "nll": _nll(probs, labels),
        "top1": float((probs.argmax(1) == labels).mean()),
        "mean_confidence": float(probs.max(1).mean()),
    }


def _table(res: dict) -> str:
    t = res["temperature"]
    lines = [
        f"Model `{res['model']}` at {res['input']}, trained on {res['train_images']} images "
        f"({res['train_epochs']} epochs, best epoch {res['best_epoch']}; train top-1 "
        f"{100 * res['train_top1']:.1f}%). Temperature T = {t:.3f} fitted on "
        f"{res['calibration']['images']} calibration images; ECE with "
        f"{res['bins']} equal-width bins.",
        "",
        "| split | images | T | top-1 (%) | mean confidence | ECE | NLL |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for split in ("calibration", "test"):
        r = res[split]
        for name, temp in (("before", 1.0), ("after", t)):
            s = r[name]
            lines.append(
                f"| {split} ({name}) | {r['images']} | {temp:.3f} | {100 * s['top1']:.2f} | "
                f"{s['mean_confidence']:.3f} | {s['ece']:.4f} | {s['nll']:.4f} |"
            )
    tg = res["target"]
    lines += [
        "",
        f"Target: test ECE after <= {tg['max_ece_ratio']:g} x before: "
        f"{res['test']['after']['ece']:.4f} <= {tg['max_ece_ratio']:g} x "
        f"{res['test']['before']['ece']:.4f} = {tg['bound']:.4f}: "
        f"**{'met' if tg['met'] else 'not met'}** (ratio {tg['ratio']:.3f}).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, help="default: experiments/results/<name>")
    ap.add_argument("--bundle", type=Path, help="keep the calibrated bundle here")
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(args.config.read_text())
    out = args.out or ROOT / "results" / cfg["name"]
    out.mkdir(parents=True, exist_ok=True)
    c, h, w = cfg["input"]
    tc = cfg["train"]
    t0 = time.perf_counter()

    ckpt = out / "model.pt"
    result = train(
        TrainConfig(
            model=cfg["model"],
            data=tc["data"],
            out=str(ckpt),
            epochs=tc["epochs"],
            batch=tc["batch"],
            lr=tc["lr"],
            input_shape=(c, h, w),
            model_kwargs=dict(cfg.get("model_kwargs", {})),
            seed=tc["seed"],
        )
    )
    train_seconds = time.perf_counter() - t0
    model, _ = model_from_checkpoint(cfg["model"], ckpt)
    train_ds = open_dataset(tc["data"], subset="train", size=(h, w), channels=c)
    train_top1 = evaluate(model, train_ds, batch=64)["top1"]

    calib = open_dataset(cfg["heldout"], subset="train", size=(h, w), channels=c)
    test = open_dataset(cfg["heldout"], subset="val", size=(h, w), channels=c)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or Path(tmp) / "bundle"
        export_bundle(
            cfg["model"],
            input_shape=(c, h, w),
            split=cfg["split"],
            out_dir=bundle,
            weights=ckpt,
            num_classes=train_ds.num_classes,
            model_args=dict(cfg.get("model_kwargs", {})),
            codec=cfg.get("codec", "f16"),
            overwrite=True,
        )
        fitted = calibrate_bundle(bundle, calib)
        t = fitted.confidence.temperature
        test_logits, test_labels = bundle_logits(bundle, test)

    test_before, test_after = _probs(test_logits, 1.0, False), _probs(test_logits, t, False)
    before, after = _scores(test_before, test_labels), _scores(test_after, test_labels)
    ratio = after["ece"] / before["ece"] if before["ece"] > 0 else float("inf")
    max_ratio = float(cfg.get("target", {}).get("max_ece_ratio", 0.5))
    res = {
        "model": cfg["model"],
        "input": f"{c}x{h}x{w}",
        "split": cfg["split"],
        "codec": cfg.get("codec", "f16"),
        "train_data": tc["data"],
        "heldout_data": cfg["heldout"],
        "train_images": len(train_ds),
        "train_epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "best_val_top1": result.best_metric,
        "train_top1": train_top1,
        "train_history": result.history,
        "temperature": t,
        "bins": fitted.confidence.report["bins"],
        "calibration": {
            "data": calib.spec + ",subset=train",
            "images": len(fitted.labels),
            "before": _scores(fitted.probs_before, fitted.labels),
            "after": _scores(fitted.probs_after, fitted.labels),
        },
        "test": {
            "data": test.spec + ",subset=val",
            "images": len(test_labels),
            "before": before,
            "after": after,
        },
        "target": {
            "max_ece_ratio": max_ratio,
            "bound": max_ratio * before["ece"],
            "ratio": ratio,
            "met": bool(ratio <= max_ratio),
        },
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
    }
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "table.md").write_text(_table(res))
    test_report = {"ece_before": before["ece"], "ece_after": after["ece"]}
    reliability_plot(
        CalibrationResult(
            Confidence(temperature=t, report=test_report), test_before, test_after, test_labels
        ),
        out / "reliability.png",
        title=f"{cfg['model']}, test split ({len(test_labels)} images)",
    )
    print(_table(res))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
