"""Representative search: precision@1 of every method and query time against 10,000 references.

The labelled set is the synthetic parts (``splitnet.data.parts``: six component classes
at random pose, scale, colour and lighting on textured backgrounds, 64x64). The
references are ``--refs`` images of seed 0, the held-out queries ``--queries`` images
of seed 1 (never indexed). Precision@1: the share of queries whose nearest reference
has the query's label (chance: 1/6). SSIM runs on the first ``--ssim-queries`` queries
only (it is a Python loop over references, about 0.3 ms a pair here).

Query time: an index of ``--timing-refs`` rows made by repeating the references'
features (a comparison's cost depends only on the array sizes, not on the pixels);
per method the median over ``--repeats`` queries of the whole query (the query's
feature, the scores against every reference, the top-5), one core (OpenCV and BLAS
threads 1). Target: hash methods < 50 ms.

Usage: python benchmarks/bench_index.py [--refs 1200] [--queries 120] [--timing-refs 10000]
Writes benchmarks/results/index/{bench_index.json,table.md,bench_index.png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "index"


def parts(n: int, seed: int, size: int):
    from splitnet.synthetic import PART_CLASSES, make_part_sample

    for i in range(n):
        rgb, label = make_part_sample(seed, i, size)
        yield f"parts-s{seed}/{i}", PART_CLASSES[label], rgb


def tiled(idx, n: int):
    """``idx`` with its rows repeated to ``n`` references (timing only)."""
    from splitnet.index import RepresentativeIndex

    rep = -(-n // len(idx))

    def t(a):
        return np.concatenate([a] * rep)[:n]

    return RepresentativeIndex(
        size=idx.size,
        colour_space=idx.colour_space,
        labels=idx.labels,
        ids=(idx.ids * rep)[:n],
        label_index=t(idx.label_index),
        hist=t(idx.hist),
        hashes={m: t(v) for m, v in idx.hashes.items()},
        thumbs=t(idx.thumbs),
        hist_bins=idx.hist_bins,
    )


def main(argv=None) -> int:
    import cv2
    from tqdm import tqdm

    from splitnet._table import format_table
    from splitnet.index import METHODS, build_index

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--refs", type=int, default=1200)
    p.add_argument("--queries", type=int, default=120)
    p.add_argument("--ssim-queries", type=int, default=40)
    p.add_argument("--timing-refs", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    cv2.setNumThreads(1)

    t0 = time.perf_counter()
    refs = list(tqdm(parts(args.refs, 0, args.size), total=args.refs, desc="references"))
    idx = build_index(refs, size=(args.size, args.size))
    build_s = time.perf_counter() - t0
    queries = list(parts(args.queries, 1, args.size))
    big = tiled(idx, args.timing_refs)

    rows = []
    for name, m in tqdm(METHODS.items(), desc="methods"):
        qs = queries[: args.ssim_queries] if name == "ssim" else queries
        hits = sum(idx.query(rgb, method=name, k=1)["all"][0].label == lab for _, lab, rgb in qs)
        times = []
        for _, _, rgb in (qs * args.repeats)[: 3 if name == "ssim" else args.repeats]:
            t = time.perf_counter()
            big.query(rgb, method=name, k=5)
            times.append(time.perf_counter() - t)
        rows.append(
            {
                "method": name,
                "kind": m.kind,
                "precision_at_1": hits / len(qs),
                "queries": len(qs),
                "query_ms": 1000 * statistics.median(times),
                "timing_refs": len(big),
            }
        )

    doc = {
        "benchmark": "bench_index",
        "data": f"parts {args.size}x{args.size}: {args.refs} references (seed 0), "
        f"{args.queries} held-out queries (seed 1); chance 1/6",
        "references": len(idx),
        "build_s": build_s,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, one thread, "
        "shared with other jobs",
        "hash_target_ms": 50,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_index.json").write_text(json.dumps(doc, indent=2) + "\n")
    header = ["method", "precision@1", "queries", f"query ms ({args.timing_refs:,} refs)"]
    cells = [
        [r["method"], f"{r['precision_at_1']:.3f}", str(r["queries"]), f"{r['query_ms']:.2f}"]
        for r in rows
    ]
    (args.out / "table.md").write_text(
        format_table(header, cells, align="lrrr", style="markdown") + "\n"
    )
    print(format_table(header, cells, align="lrrr"))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["method"] for r in rows]
    a1.barh(names, [r["precision_at_1"] for r in rows])
    a1.axvline(1 / 6, color="k", ls="--", lw=1, label="chance")
    a1.set_xlabel("precision@1 (held-out parts)")
    a1.legend()
    a2.barh(names, [r["query_ms"] for r in rows], color="tab:orange")
    a2.axvline(50, color="r", ls="--", lw=1, label="50 ms target (hashes)")
    a2.set_xscale("log")
    a2.set_xlabel(f"query ms against {args.timing_refs:,} references, one core")
    a2.legend()
    fig.tight_layout()
    fig.savefig(args.out / "bench_index.png", dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
