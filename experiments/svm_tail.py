"""CNN features + SVM against a fine-tuned tail at the same cut (seed 001's protocol).

Usage:
    OMP_NUM_THREADS=1 python experiments/svm_tail.py experiments/configs/svm_tail.yaml [--out DIR]

For every backbone of the config (a model, a split point, random init or trained briefly
on a disjoint parts set), exports the split bundle and extracts the features the server
decodes (:func:`splitnet.svm.device_features`: OpenVINO head on the uint8 frame, the
bundle's codec there and back), once for the whole study set. Then, on each of
``splits`` repeated stratified random 70/30 splits: fits the SVM as ``splitnet fit-svm``
does (:func:`splitnet.svm.fit_svm`: standardised, C and gamma by stratified CV, Platt
probabilities) per kernel and pool, scores it with the served numpy tail
(:class:`splitnet.svm.SVMTail`), and trains the model's own tail from the cut on the
same 70% (head frozen: the cached features) and scores it on the same 30%. Writes
``table.md``, ``results.json`` and ``svm_tail.png`` (mean +- std accuracy) into
``experiments/results/<name>/``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn import functional as F
from tqdm import tqdm

from splitnet.data import open_dataset
from splitnet.export import export_bundle
from splitnet.export._tail import free_batch_in_reshapes
from splitnet.models import create_model
from splitnet.split import trace
from splitnet.svm import device_features, fit_svm, pool_features
from splitnet.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent


def _weights(b: dict, cfg: dict, work: Path, num_classes: int) -> tuple[Path, dict]:
    """A weights file for backbone ``b``: seeded random init, or trained on the
    config's ``pretrain`` data (other images than the study's)."""
    c, h, w = cfg["input"]
    path = work / f"{b['model']}-{'trained' if b['pretrained'] else 'random'}.pt"
    if not b["pretrained"]:
        torch.manual_seed(cfg["seed"])
        torch.save(create_model(b["model"], num_classes=num_classes).state_dict(), path)
        return path, {"weights": f"random init, torch seed {cfg['seed']}"}
    p = cfg["pretrain"]
    t0 = time.perf_counter()
    result = train(
        TrainConfig(
            model=b["model"],
            data=p["data"],
            out=str(path),
            epochs=p["epochs"],
            batch=p["batch"],
            lr=p["lr"],
            input_shape=(c, h, w),
            seed=p["seed"],
        )
    )
    return path, {
        "weights": f"trained on {p['data']} (subset=train), best of {p['epochs']} epochs",
        "pretrain_best_epoch": result.best_epoch,
        "pretrain_val_top1": result.best_metric,
        "pretrain_seconds": round(time.perf_counter() - t0, 1),
    }


def _tail(b: dict, weights: Path, shape, num_classes: int) -> torch.nn.Module:
    """The model's tail from the cut, with the weights of ``weights``, taking any batch:
    the eval-mode graph the bundle's ``tail.pt2`` holds (no dropout; it scores with the
    running statistics, :func:`training_graph` trains it on batch statistics)."""
    net = create_model(b["model"], num_classes=num_classes, weights=weights)
    _, tail = trace(net, torch.zeros(1, *shape)).split(b["split"])
    return free_batch_in_reshapes(tail)  # traced at batch 1: any batch


_BN_EVAL = "aten._native_batch_norm_legit_no_training.default"


def _batch_norm_on_batch(x, weight, bias, running_mean, running_var, momentum, eps):
    """Batch norm in training mode (batch statistics, running ones updated in place), with
    the ``(out, mean, rstd)`` tuple of the eval-mode op it replaces."""
    out = F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum, eps)
    return out, x.new_empty(0), x.new_empty(0)


def training_graph(tail: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``tail`` with its batch norms on the batch's statistics, sharing its parameters and
    buffers: the exported (eval-mode) graph would train a random-init tail with random
    running statistics, whose activations vanish through the blocks (logits ~0)."""
    graph = copy.deepcopy(tail.graph)
    for n in graph.nodes:
        if n.op == "call_function" and str(n.target) == _BN_EVAL:
            n.target = _batch_norm_on_batch
    return torch.fx.GraphModule(tail, graph)


def _train_tail(tail, xs, y, *, epochs: int, batch: int, lr: float, seed: int) -> None:
    """Adam on cross-entropy; batch norms on batch statistics (their running statistics
    are what the eval-mode ``tail`` then scores with)."""
    train_gm = training_graph(tail)
    params = [p for p in tail.parameters() if p.is_floating_point()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(batch):
            if len(idx) < 2:  # batch statistics of one sample
                continue
            loss = F.cross_entropy(train_gm(*(x[idx] for x in xs)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


@torch.no_grad()
def _tail_accuracy(tail, xs, y) -> float:
    return float((tail(*xs).argmax(1) == y).float().mean())


def _stack(tensors: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Per-frame lists of crossing tensors (batch 1) -> one ``N x ...`` array per tensor."""
    return [np.concatenate([t[i] for t in tensors]) for i in range(len(tensors[0]))]


def _summary(accs: list[float]) -> dict:
    a = np.asarray(accs)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)), "accuracy": a.tolist()}


def run_backbone(b: dict, cfg: dict, ds, splits, work: Path, bar) -> tuple[list[dict], dict]:
    c, h, w = cfg["input"]
    weights, info = _weights(b, cfg, work, ds.num_classes)
    bundle = work / f"bundle-{len(list(work.iterdir()))}"
    t0 = time.perf_counter()
    export_bundle(
        b["model"],
        input_shape=(c, h, w),
        split=b["split"],
        out_dir=bundle,
        weights=weights,
        num_classes=ds.num_classes,
        codec=cfg.get("codec", "f16"),
    )
    tensors, labels = device_features(bundle, ds)
    arrays = _stack(tensors)
    info["features_seconds"] = round(time.perf_counter() - t0, 1)
    info["crossing"] = ["x".join(map(str, a.shape[1:])) for a in arrays]
    s = cfg["svm"]
    accs: dict[tuple[str, str], list[float]] = {}
    dims: dict[str, int] = {}
    t0 = time.perf_counter()
    for i, (tr, te) in enumerate(splits):
        for pool in b["pools"]:
            x = pool_features(arrays, pool)
            dims[pool] = x.shape[1]
            for kernel in s["kernels"]:
                bar.set_description(f"{b['label']}: {kernel} SVM, {pool} pool, split {i + 1}")
                fit = fit_svm(x[tr], labels[tr], kernel=kernel, cv=s["cv"], seed=i)
                probs = fit.tail(pool)([a[te] for a in arrays])
                hit = probs.argmax(1) == labels[te]
                accs.setdefault((f"{kernel} SVM", pool), []).append(float(hit.mean()))
                bar.update()
    info["svm_seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    xs = [torch.from_numpy(a) for a in arrays]
    y = torch.from_numpy(labels)
    t = cfg["tail"]
    tail = _tail(b, weights, (c, h, w), ds.num_classes)
    start = {k: v.clone() for k, v in tail.state_dict().items()}
    for i, (tr, te) in enumerate(splits):
        bar.set_description(f"{b['label']}: tail, split {i + 1}")
        tail.load_state_dict(start)  # every split starts from the backbone's tail
        tr_t, te_t = torch.from_numpy(tr), torch.from_numpy(te)
        _train_tail(
            tail,
            [x[tr_t] for x in xs],
            y[tr_t],
            epochs=t["epochs"],
            batch=t["batch"],
            lr=t["lr"],
            seed=cfg["seed"] * 1000 + i,
        )
        accs.setdefault(("fine-tuned tail", "-"), []).append(
            _tail_accuracy(tail, [x[te_t] for x in xs], y[te_t])
        )
        bar.update()
    info["tail_seconds"] = round(time.perf_counter() - t0, 1)
    crossing_dims = int(sum(np.prod(a.shape[1:]) for a in arrays))
    rows = [
        {
            "backbone": b["label"],
            "model": b["model"],
            "split": b["split"],
            "method": method,
            "pool": pool,
            "features": dims.get(pool, crossing_dims),
            **_summary(a),
        }
        for (method, pool), a in accs.items()
    ]
    return rows, info


def _table(res: dict) -> str:
    lines = [
        f"{res['images']} images of `{res['data']}` ({res['num_classes']} classes) at "
        f"{res['input']}; {res['splits']} stratified random "
        f"{round(100 * (1 - res['test_fraction']))}/{round(100 * res['test_fraction'])} "
        f"splits, accuracy on the 30% (mean +- std over splits; chance "
        f"{100 / res['num_classes']:.1f}%). SVM: C (and gamma) by {res['cv']}-fold CV on "
        f"the 70%, as `splitnet fit-svm`; tail: the model's own layers after the cut, "
        f"trained {res['tail_epochs']} epochs on the 70%, head frozen.",
        "",
        "| backbone | cut | method | pool | features | accuracy (%) |",
        "|---|---|---|---|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['backbone']} | {r['split']} | {r['method']} | {r['pool']} | "
            f"{r['features']:,} | {100 * r['mean']:.1f} +- {100 * r['std']:.1f} |"
        )
    lines += ["", "Backbone weights:", ""]
    for label, info in res["backbones"].items():
        lines.append(f"- {label}: {info['weights']}")
    return "\n".join(lines) + "\n"


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    labels = [
        f"{r['backbone']}\n{r['method']}" + (f" ({r['pool']})" if r["pool"] != "-" else "")
        for r in rows
    ]
    colours = {"linear SVM": "tab:blue", "rbf SVM": "tab:orange", "fine-tuned tail": "tab:green"}
    fig, ax = plt.subplots(figsize=(7, 0.42 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    ax.barh(
        y,
        [100 * r["mean"] for r in rows],
        xerr=[100 * r["std"] for r in rows],
        color=[colours.get(r["method"], "grey") for r in rows],
        capsize=3,
    )
    ax.axvline(100 / res["num_classes"], color="k", ls="--", lw=1, label="chance")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel(f"accuracy on the 30% (%), mean +- std over {res['splits']} splits")
    ax.set_xlim(0, 100)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("CNN features + SVM vs a fine-tuned tail (parts set)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from sklearn.model_selection import StratifiedShuffleSplit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, help="default: experiments/results/<name>")
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(args.config.read_text())
    out = args.out or ROOT / "results" / cfg["name"]
    out.mkdir(parents=True, exist_ok=True)
    c, h, w = cfg["input"]
    t0 = time.perf_counter()
    ds = open_dataset(cfg["data"], subset="all", size=(h, w), channels=c)
    labels = np.asarray([int(ds[i][1]) for i in range(len(ds))])
    sss = StratifiedShuffleSplit(
        cfg["splits"], test_size=cfg["test_fraction"], random_state=cfg["seed"]
    )
    splits = list(sss.split(np.zeros(len(labels)), labels))
    per_split = sum(len(b["pools"]) * len(cfg["svm"]["kernels"]) + 1 for b in cfg["backbones"])
    rows, backbones = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        bar = tqdm(total=per_split * len(splits), unit="fit", file=sys.stderr)
        for b in cfg["backbones"]:
            r, info = run_backbone(b, cfg, ds, splits, Path(tmp), bar)
            rows += r
            backbones[b["label"]] = info
            print(json.dumps({"backbone": b["label"], **info}), file=sys.stderr)
        bar.close()
    res = {
        "data": cfg["data"],
        "images": len(ds),
        "num_classes": ds.num_classes,
        "input": f"{c}x{h}x{w}",
        "splits": cfg["splits"],
        "test_fraction": cfg["test_fraction"],
        "cv": cfg["svm"]["cv"],
        "codec": cfg.get("codec", "f16"),
        "tail_epochs": cfg["tail"]["epochs"],
        "tail": cfg["tail"],
        "pretrain": cfg.get("pretrain"),
        "rows": rows,
        "backbones": backbones,
        "total_seconds": round(time.perf_counter() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
    }
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "table.md").write_text(_table(res))
    _plot(res, out / "svm_tail.png")
    print(_table(res))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
