"""``splitnet demo``: a trained steel-defect model, split with its learned bottleneck, end to end.

Exports the packaged demo checkpoint (``unet-vgg16`` at width 0.25, trained on
synthetic steel frames of 3x64x384, with a learned bottleneck at a pool; how it
was made: experiments/results/steel_bottleneck) into a cache folder (once),
starts the server on a free loopback port and streams synthetic frames the model
never saw (another seed) through the head and the encoder (OpenVINO), the
learned codec and gRPC to the decoder and the tail. Then it scores the masks
against the frames' ground truth, writes a few overlay PNGs (ground truth
above, prediction below) and prints the bytes per frame beside what sending
the image as PNG or JPEG would cost.

``--untrained`` runs any model, split point and codec with random weights
instead: the pipeline and its rates, no masks worth looking at.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
from importlib import resources
from pathlib import Path

from splitnet._errors import ConfigError, SplitnetError
from splitnet.cli import _args

# the frames the demo streams: a seed the study's training and validation data
# (synthetic:seed=0) never drew from
DEMO_SEED = 20261202


def demo_checkpoint() -> Path:
    """The packaged demo checkpoint (a slim bottleneck checkpoint)."""
    return Path(str(resources.files("splitnet") / "assets" / "steel_demo.pt"))


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="a trained split model with its learned bottleneck, end to end on this machine",
        description=__doc__,
    )
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--overlays", type=int, default=4, help="overlay PNGs to write (default 4)")
    p.add_argument(
        "--out", default="splitnet-demo", help="results and overlays (default ./splitnet-demo)"
    )
    p.add_argument("--checkpoint", help="a bottleneck checkpoint (default: the packaged one)")
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument(
        "--workdir",
        default=os.environ.get("SPLITNET_CACHE", str(Path.home() / ".cache" / "splitnet")),
        help="where the demo bundle is kept (default ~/.cache/splitnet)",
    )
    g = p.add_argument_group("--untrained: random weights, any model, split and codec")
    g.add_argument("--untrained", action="store_true")
    g.add_argument("--model", default="unet-vgg16")
    g.add_argument("--split", default="encoder.block3.pool")
    g.add_argument("--input", type=_args.input_shape, default=(3, 256, 1600), metavar="CxHxW")
    g.add_argument("--codec", default="q4")
    p.set_defaults(func=run)


def _cached(path: Path, export) -> Path:
    from splitnet.bundle import BundleError, read_manifest

    try:
        read_manifest(path)
        print(f"bundle: {path} (cached)")
        return path
    except BundleError:
        pass
    export(path)
    return path


def _untrained_bundle(args: argparse.Namespace) -> Path:
    from splitnet.codec import get_codec
    from splitnet.export import export_bundle

    shape = "x".join(map(str, args.input))
    path = Path(args.workdir) / "demo" / f"{args.model}.{args.split}.{shape}.{args.codec}"

    def export(path: Path) -> None:
        print(f"exporting {args.model} split at {args.split}, input {shape}, codec {args.codec}")
        export_bundle(
            args.model,
            input_shape=args.input,
            split=args.split,
            out_dir=path,
            codec=args.codec,
            calibrate=4 if get_codec(args.codec).quantizes else 0,
            overwrite=True,
            progress=True,
        )

    return _cached(path, export)


def _trained_bundle(args: argparse.Namespace, checkpoint: Path) -> tuple[Path, dict]:
    from splitnet.bottleneck import read_bottleneck
    from splitnet.bundle import file_sha256
    from splitnet.export import export_bundle

    state = read_bottleneck(checkpoint)  # the export, if one is needed, builds the model
    path = Path(args.workdir) / "demo" / f"bottleneck-{file_sha256(checkpoint)[:12]}"

    def export(path: Path) -> None:
        print(
            f"exporting {state['model']} {'x'.join(map(str, state['input_shape']))} split at "
            f"{state['split']} with its learned bottleneck ({checkpoint.name})"
        )
        export_bundle(
            state["model"],
            input_shape=tuple(state["input_shape"]),
            split=state["split"],
            out_dir=path,
            model_args=state["model_kwargs"],
            num_classes=state["num_classes"],
            bottleneck=checkpoint,
            overwrite=True,
            progress=True,
        )

    return _cached(path, export), state


async def _run(bundle: Path, args: argparse.Namespace, out: Path | None, seed: int):
    from splitnet.device import DaemonConfig, DeviceDaemon
    from splitnet.server import InferenceServer, ServerConfig

    # a bundle folder is a repository of one
    server = InferenceServer(
        ServerConfig(repository=bundle, port=0, metrics_port=None, max_batch=args.max_batch)
    )
    await server.start()
    print(
        f"server: 127.0.0.1:{server.port} on {server.device}; streaming {args.frames} synthetic frames"
    )
    try:
        daemon = DeviceDaemon(
            DaemonConfig(
                bundle=bundle,
                servers=(f"127.0.0.1:{server.port}",),
                frames=args.frames,
                window=args.window,
                out=out,
                probabilities=out is not None,
                seed=seed,
            )
        )
        summary = await daemon.run()
    finally:
        await server.stop(1)
    compute_s, frames = server.metrics.totals(server.metrics.compute_seconds, daemon.manifest.name)
    return summary, compute_s, frames


def _score(results: Path, out: Path, frames: int, shape: tuple[int, int], overlays: int) -> dict:
    """Mean Dice of the streamed frames' masks, overlay PNGs, and the image baselines' bytes."""
    import numpy as np
    import torch
    from PIL import Image

    from splitnet._overlay import comparison
    from splitnet.profile._baseline import code_image
    from splitnet.synthetic import make_frame
    from splitnet.train._metrics import DiceMeter

    meter, written = DiceMeter(4), []
    sizes: dict[str, list[int]] = {"png": [], "jpeg95": []}
    for i in range(frames):
        probs_file = results / f"{i:08d}.npy"
        if not probs_file.is_file():
            continue  # a failed frame: the summary counts it
        gray, truth = make_frame(DEMO_SEED, i, *shape)
        predicted = np.load(probs_file) >= 0.5
        meter.update(torch.from_numpy(predicted[None]), torch.from_numpy(truth[None]))
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
        sizes["png"].append(len(code_image(rgb, "png")[1]))
        sizes["jpeg95"].append(len(code_image(rgb, "jpeg", 95)[1]))
        if len(written) < overlays and truth.any():
            path = out / f"overlay-{i:04d}.png"
            Image.fromarray(comparison(gray, truth, predicted)).save(path)
            written.append(path)
    scores = meter.compute()
    return {
        **scores,
        "overlays": written,
        **{k: float(np.mean(v)) for k, v in sizes.items() if v},
    }


def run(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}")
    if args.untrained:
        bundle = _untrained_bundle(args)
        summary, compute_s, frames_run = asyncio.run(_run(bundle, args, None, 0))
        return _report(summary, compute_s, frames_run)
    checkpoint = Path(args.checkpoint) if args.checkpoint else demo_checkpoint()
    if not checkpoint.is_file():
        raise ConfigError(
            f"no demo checkpoint at {checkpoint}: make one with experiments/train_bottleneck.py, "
            "or run `splitnet demo --untrained`"
        )
    bundle, state = _trained_bundle(args, checkpoint)
    out = Path(args.out)
    results = out / "results"
    # every demo streams its frames anew: the daemon would resume a finished run in
    # the same folder and send nothing
    shutil.rmtree(results, ignore_errors=True)
    summary, compute_s, frames_run = asyncio.run(_run(bundle, args, results, DEMO_SEED))
    _report(summary, compute_s, frames_run)
    scores = _score(results, out, args.frames, tuple(state["input_shape"][1:]), args.overlays)
    sent = summary.payload_bytes_mean
    print(
        f"\nmasks: mean Dice {100 * scores['mean_dice']:.1f}% over {summary.ok} frames never "
        f"seen in training (the checkpoint's validation score: "
        f"{100 * state['scores']['mean_dice']:.1f}%)"
    )
    print(
        f"bytes per frame: {sent:,.0f} sent by the split (learned bottleneck at {state['split']}); "
        f"the image itself: {scores['png']:,.0f} as PNG ({scores['png'] / sent:.1f}x), "
        f"{scores['jpeg95']:,.0f} as JPEG q95 ({scores['jpeg95'] / sent:.1f}x)"
    )
    if scores["overlays"]:
        print("overlays (ground truth above, prediction below):")
        for path in scores["overlays"]:
            print(f"  {path}")
    print(f"masks and probabilities of every frame: {results}/")
    return 0


def _report(summary, compute_s: float, frames_run: int) -> int:
    print()
    print(summary.format())
    if summary.fatal:
        raise SplitnetError(summary.fatal)
    head_fps = 1000 / summary.head_ms_mean if summary.head_ms_mean else float("nan")
    tail_fps = frames_run / compute_s if compute_s else float("nan")
    print(
        f"stages: head {head_fps:.2f} FPS (OpenVINO, this CPU), tail {tail_fps:.2f} FPS "
        f"(torch, batched), link: loopback; end to end {summary.fps:.2f} FPS"
    )
    return 0
