"""Learned bottlenecks at the steel U-Net's pools against the codecs and the image.

Usage:
    OMP_NUM_THREADS=2 python experiments/train_bottleneck.py \\
        experiments/configs/steel_bottleneck.yaml [--out DIR] [--teacher CKPT]

Trains the teacher to a validation plateau (or takes ``--teacher``), one
bottleneck per split point and beta (``bn-<point>-beta<B>.pt``), then one
rate-accuracy sweep with every bottleneck as a row beside the quantizing codecs
and the PNG/JPEG baselines. Writes ``table.md``, ``results.json``,
``rate_accuracy.png`` and ``summary.json`` (times, histories, encoder MACs)
into ``experiments/results/<name>/`` (checkpoints are not committed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
import yaml

from splitnet.bottleneck import (
    BottleneckConfig,
    BottleneckError,
    BottleneckTrainConfig,
    BottleneckTrainResult,
    bottleneck_macs,
    load_bottleneck,
    read_bottleneck,
    train_bottleneck,
)
from splitnet.bundle import file_sha256
from splitnet.data import open_dataset
from splitnet.profile import RateAccuracyConfig, rate_accuracy
from splitnet.train import TrainConfig, model_from_checkpoint, train
from splitnet.train._checkpoint import last_path, load_checkpoint

ROOT = Path(__file__).resolve().parent


def _teacher(cfg: dict, out: Path, given: Path | None) -> tuple[Path, dict]:
    path = out / "teacher.pt"
    if given is not None:  # trained earlier by `splitnet train`: report its run
        if not path.is_file() or file_sha256(path) != file_sha256(given):
            tmp = path.with_suffix(".tmp")  # parallel --only runs share it: never half-written
            shutil.copy(given, tmp)
            tmp.replace(path)
        last = last_path(given)
        ckpt = load_checkpoint(last if last.is_file() else given)
        return path, {
            "teacher": str(given),
            "teacher_config": ckpt["config"],
            "teacher_epochs_run": len(ckpt["history"]),
            "teacher_best_epoch": ckpt["best_epoch"],
            "teacher_best_" + ckpt["metric_name"]: ckpt["best_metric"],
            "teacher_history": ckpt["history"],
        }
    t = cfg["teacher"]
    t0 = time.perf_counter()
    result = train(
        TrainConfig(
            model=cfg["model"],
            data=cfg["data"],
            out=str(path),
            epochs=t["epochs"],
            batch=t["batch"],
            lr=t["lr"],
            input_shape=tuple(cfg["input"]),
            model_kwargs=dict(cfg.get("model_kwargs", {})),
            seed=t["seed"],
            patience=t.get("patience"),
            min_epochs=t.get("min_epochs", 0),
        )
    )
    return path, {
        "teacher_epochs_run": len(result.history),
        "teacher_best_epoch": result.best_epoch,
        "teacher_best_" + result.metric_name: result.best_metric,
        "teacher_history": result.history,
        "teacher_seconds": round(time.perf_counter() - t0, 1),
    }


def _reuse(config: BottleneckTrainConfig) -> BottleneckTrainResult | None:
    """The finished checkpoint at ``config.out`` if it was trained with this very config."""
    try:
        state = read_bottleneck(config.out)
    except (OSError, BottleneckError):
        return None
    if not state.get("final") or state["config"] != config.to_dict():
        return None
    print(f"{config.out}: trained with this config already, reused", file=sys.stderr)
    return BottleneckTrainResult(config.out, state["history"], state["scores"], 0.0)


def _bottlenecks(
    cfg: dict,
    teacher: Path,
    out: Path,
    only: str | None = None,
    only_beta: float | None = None,
    *,
    trained_only: bool = False,
) -> tuple[list[str], list[dict]]:
    paths, rows = [], []
    for point in cfg["bottleneck"]["points"]:
        if only is not None and point != only:
            continue
        # per-point settings (``per_point: {POINT: {hidden: 16}}``) over the shared ones
        b = {**cfg["bottleneck"], **cfg["bottleneck"].get("per_point", {}).get(point, {})}
        shape = BottleneckConfig(
            b["latent_channels"],
            b.get("latent_stride"),
            b["hidden"],
            b.get("decoder_hidden"),
            b.get("decoder", "pyramid"),
            b.get("encoder", "pyramid"),
        )
        for beta in b["betas"] if only_beta is None else [only_beta]:
            t0 = time.perf_counter()
            config = BottleneckTrainConfig(
                teacher=str(teacher),
                split=point,
                out=str(out / f"bn-{point}-beta{beta:g}.pt"),
                beta=beta,
                kd_weight=b.get("kd_weight", 1.0),
                bottleneck=shape,
                epochs=b["epochs"],
                finetune_epochs=b["finetune_epochs"],
                batch=b["batch"],
                lr=b["lr"],
            )
            result = _reuse(config)
            if result is None and trained_only:
                print(f"{config.out}: not trained (--trained-only), left out", file=sys.stderr)
                continue
            result = result or train_bottleneck(config)
            bn, _ = load_bottleneck(result.path)
            macs = bottleneck_macs(bn, tuple(cfg["input"]))
            paths.append(result.path)
            rows.append(
                {
                    "point": point,
                    "beta": beta,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "val": result.scores,
                    "history": result.history,
                    **macs,
                }
            )
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "history"}))
    return paths, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, help="default: experiments/results/<name>")
    ap.add_argument("--teacher", type=Path, help="a splitnet train checkpoint to use as is")
    ap.add_argument(
        "--only",
        metavar="POINT[:BETA]",
        help="train this point's bottlenecks (at one beta) and stop: to run points in "
        "parallel processes; a later full run reuses them",
    )
    ap.add_argument(
        "--trained-only",
        action="store_true",
        help="train nothing: report the bottlenecks already trained with this config",
    )
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(args.config.read_text())
    out = args.out or ROOT / "results" / cfg["name"]
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    teacher, summary = _teacher(cfg, out, args.teacher)
    if args.only:
        point, _, beta = args.only.partition(":")
        _bottlenecks(cfg, teacher, out, point, float(beta) if beta else None)
        return 0
    paths, rows = _bottlenecks(cfg, teacher, out, trained_only=args.trained_only)
    c, h, w = cfg["input"]
    model, _ = model_from_checkpoint(cfg["model"], teacher)
    val = open_dataset(cfg["data"], subset="val", size=(h, w), channels=c)
    ra = cfg["rate_accuracy"]
    report = rate_accuracy(
        model,
        val,
        RateAccuracyConfig(
            points=tuple(cfg["bottleneck"]["points"]),
            codecs=tuple(ra["codecs"]),
            jpeg_qualities=tuple(ra["jpeg_qualities"]),
            batch=ra["batch"],
            bottlenecks=tuple(paths),
        ),
    )
    provenance = {"weights": "teacher.pt", "data": val.spec, "subset": "val"}
    report = dataclasses.replace(report, provenance=provenance)
    report.write(out, **cfg.get("target", {}))
    summary.update(
        {
            "bottlenecks": rows,
            "total_seconds": round(time.perf_counter() - t0, 1),
            "torch_threads": torch.get_num_threads(),
            "machine": f"{platform.machine()}, Python {platform.python_version()}",
        }
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(report.format_table())
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
