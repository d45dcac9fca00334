"""Head variants side by side (issue 14; seed 000's FP32 / FP16 / INT8 / INT8-calibrated table).

For each study of the config: the model (trained briefly here, or the trained teacher of
an asset), ``splitnet optimize``'s variants (fp32, fp16, int8-weights, int8 calibrated on
frames the training never saw), and ``splitnet variants``' report on held-out frames
through each bundle as deployed: head size, accuracy (top-1/top-5 or mean Dice),
latency and FPS at 1 and 2 threads on every OpenVINO device asked for (absent ones
marked). Writes ``results/<name>/<study>/`` (table.md, results.json, variants.png) and
``results/<name>/table.md`` (INT8 speed-up and accuracy drop per study).

    python experiments/optimize_variants.py experiments/configs/optimize_variants.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import yaml

from splitnet._table import format_table
from splitnet.export._optimize import optimize
from splitnet.profile._variants import plot_variants, report_variants

ROOT = Path(__file__).resolve().parent


def _weights(study: dict, work: Path) -> tuple[str | None, dict]:
    """The study's state-dict file, trained here when the study says ``train``."""
    if "train" in study:
        from splitnet.train import TrainConfig, train

        tc = study["train"]
        ckpt = work / f"{study['name']}.pt"
        done = work / f"{study['name']}.train.json"
        if ckpt.is_file() and done.is_file():  # trained by an earlier run with --work
            return str(ckpt), json.loads(done.read_text())
        t0 = time.perf_counter()
        result = train(
            TrainConfig(
                model=study["model"],
                data=tc["data"],
                out=str(ckpt),
                epochs=tc["epochs"],
                batch=tc["batch"],
                lr=tc["lr"],
                input_shape=tuple(study["input"]),
                model_kwargs=dict(study.get("model_kwargs", {})),
                seed=tc["seed"],
            )
        )
        info = {
            "trained_s": time.perf_counter() - t0,
            "val_best": result.best_metric,
            "best_epoch": result.best_epoch,
            **tc,
        }
        done.write_text(json.dumps(info))
        return str(ckpt), info
    weights = study.get("weights")
    if weights and weights.startswith("asset:"):
        from importlib import resources

        asset = torch.load(
            resources.files("splitnet") / "assets" / weights.removeprefix("asset:"),
            map_location="cpu",
            weights_only=False,
        )
        path = work / f"{study['name']}.teacher.pt"
        torch.save(asset["teacher_state"], path)
        return str(path), {"teacher_of": weights, "teacher_data": asset.get("data")}
    return weights, {}


def _classes(study: dict) -> int | None:
    """The classes of the data the model was trained on (None: the model's default)."""
    from splitnet.data import open_dataset

    data = study.get("train", {}).get("data") or study.get("heldout")
    if not data:
        return None
    c, h, w = study["input"]
    return open_dataset(data, subset="all", size=(h, w), channels=c).num_classes


def _summary(report) -> dict:
    rows = {r.variant: r for r in report.rows}
    out = {}
    base = rows.get("fp32")
    for v, r in rows.items():
        entry = {"size_mib": r.size_mib}
        if r.accuracy:
            entry[report.metric] = r.accuracy[report.metric]
        for key, s in r.speed.items():
            if base is not None and not s.get("absent"):
                entry[f"speedup_{key}"] = s["fps"] / base.speed[key]["fps"]
        if base is not None and r.accuracy:
            entry["drop_points"] = 100 * (base.accuracy[report.metric] - r.accuracy[report.metric])
        out[v] = entry
    return out


def _families(summary: dict) -> dict[str, list[tuple[str, dict]]]:
    """``prune``, ``lowrank``, ``distill`` -> their variants, largest head first."""
    out: dict[str, list] = {}
    for v, e in summary.items():
        if ":" in v:
            out.setdefault(v.split(":")[0], []).append((v, e))
    return {k: sorted(vs, key=lambda ve: -ve[1]["head_parameters"]) for k, vs in out.items()}


def _smallest_within(summary: dict, max_drop: float) -> dict[str, str | None]:
    """Per family, the smallest head whose drop is at most ``max_drop`` points."""
    best = {}
    for fam, vs in _families(summary).items():
        ok = [v for v, e in vs if e.get("drop_points", float("inf")) <= max_drop]
        best[fam] = ok[-1] if ok else None
    return best


def _plot_shrink(name: str, summary: dict, metric: str, path: Path) -> None:
    """Accuracy against head parameters per family, the fp32 head and the 0.5-point line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for fam, vs in _families(summary).items():
        xs = [e["head_parameters"] for _, e in vs]
        ys = [100 * e[metric] for _, e in vs]
        ax.plot(xs, ys, "o-", label=fam)
        for (v, _), x, y in zip(vs, xs, ys, strict=True):
            ax.annotate(v.split(":")[1], (x, y), textcoords="offset points", xytext=(4, 4))
    if "fp32" in summary:
        ref = summary["fp32"]
        ax.plot(ref["head_parameters"], 100 * ref[metric], "k*", ms=12, label="fp32 (unchanged)")
        ax.axhline(100 * ref[metric] - 0.5, color="k", ls="--", lw=0.8, label="fp32 - 0.5 points")
    ax.set_xscale("log")
    ax.set_xlabel("head parameters")
    ax.set_ylabel("top-1 (%)" if metric == "top1" else "mean Dice (%)")
    ax.set_title(f"{name}: accuracy against head size, as deployed", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, help="default: experiments/results/<name>")
    ap.add_argument("--only", help="run only the study of this name")
    ap.add_argument(
        "--table-only", action="store_true", help="rebuild table.md from the studies' results"
    )
    ap.add_argument("--work", type=Path, help="keep trained checkpoints here (a rerun reuses them)")
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(args.config.read_text())
    out = args.out or ROOT / "results" / cfg["name"]
    out.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "note": "2-core CPU, shared with other jobs",
        "load_before": os.getloadavg(),
    }
    summaries = {}
    for study in cfg["studies"]:
        if args.table_only or (args.only and study["name"] != args.only):
            continue
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            if args.work is not None:
                args.work.mkdir(parents=True, exist_ok=True)
            weights, training = _weights(study, args.work or work)
            results = optimize(
                study["model"],
                input_shape=tuple(study["input"]),
                out_dir=work / "variants",
                variants=study.get("variants", cfg["variants"]),
                split=None if study.get("device_only") else study["split"],
                data=study["calibration"],
                frames=study["calibration_frames"],
                # int8-acc tunes on the calibration frames' labels, never on the scored ones
                validation_data=study["calibration"],
                validation_frames=study["calibration_frames"],
                max_drop=cfg.get("max_drop", 0.5),
                # prune / lowrank / distill: retrained on the model's own training data
                finetune=study.get("finetune"),
                finetune_data=study.get("finetune_data") or study.get("train", {}).get("data"),
                distill_steps=study.get("distill_steps", 2000),
                weights=weights,
                num_classes=_classes(study),
                model_args=dict(study.get("model_kwargs", {})),
                **({} if study.get("device_only") else {"codec": study.get("codec", "f16")}),
            )
            report = report_variants(
                [r.bundle_dir for r in results],
                data=study["heldout"],
                frames=study.get("heldout_frames", 1),
                devices=cfg["devices"],
                threads=cfg["threads"],
                seconds=study.get("seconds", cfg["seconds"]),
            )
        d = out / study["name"]
        d.mkdir(parents=True, exist_ok=True)
        (d / "table.md").write_text(report.table() + "\n", encoding="utf-8")
        if any(r.accuracy for r in report.rows):
            plot_variants(report, d / "variants.png")
        summaries[study["name"]] = _summary(report)
        params = {
            r.manifest.head["variant"]["name"]: r.manifest.head["variant"]["parameters"]
            for r in results
        }
        for v, p in params.items():
            summaries[study["name"]][v]["head_parameters"] = p
        if any(":" in v for v in params) and any(r.accuracy for r in report.rows):
            _plot_shrink(study["name"], summaries[study["name"]], report.metric, d / "shrink.png")
        doc = {
            "study": study,
            "training": training,
            "report": report.to_dict(),
            "summary": summaries[study["name"]],
            "parity": {r.manifest.head["variant"]["name"]: r.manifest.parity for r in results},
            "variants": {
                r.manifest.head["variant"]["name"]: r.manifest.head["variant"] for r in results
            },
            "seconds": time.perf_counter() - t0,
            "machine": {**machine, "load_after": os.getloadavg()},
        }
        (d / "results.json").write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
        print(f"{study['name']}:\n{report.table()}\n")
    # the studies this run skipped (--only) keep the summaries of their last run
    for study in cfg["studies"]:
        done = out / study["name"] / "results.json"
        if study["name"] not in summaries and done.is_file():
            summaries[study["name"]] = json.loads(done.read_text())["summary"]
    summaries = {s["name"]: summaries[s["name"]] for s in cfg["studies"] if s["name"] in summaries}
    header = ["study", "variant", "head MiB", "head params", "accuracy", "drop (points)"]
    header += ["FPS vs fp32, 1 thread", "2 threads"]
    rows = []
    for name, s in summaries.items():
        for v, e in s.items():
            metric = next((k for k in ("top1", "mean_dice") if k in e), None)
            acc = f"{100 * e[metric]:.2f} ({metric})" if metric else "not scored"
            drop = f"{e['drop_points']:+.2f}" if "drop_points" in e else "-"
            speed = [f"{e.get(f'speedup_CPU/{t}', float('nan')):.2f}x" for t in (1, 2)]
            params = f"{e['head_parameters']:,}" if "head_parameters" in e else "-"
            rows.append([name, v, f"{e['size_mib']:.3f}", params, acc, drop, *speed])
    table = format_table(header, rows, style="markdown")
    smallest = {n: _smallest_within(s, 0.5) for n, s in summaries.items()}
    lines = [
        f"- {n}, {fam}: smallest head within 0.5 points: {v or 'none'}"
        for n, fams in smallest.items()
        for fam, v in fams.items()
    ]
    if lines:
        table += "\n\n" + "\n".join(lines)
    if len(summaries) == len(cfg["studies"]):
        (out / "table.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
