"""Codec benchmark: coded size against the order-0 entropy, and q4+zstd throughput.

Prints markdown tables. Tensors: synthetic half-zero ReLU data and the
crossing tensors of ``unet-vgg16`` at its five pool points (random init, a
synthetic steel frame: the five skips after ReLU and the five pool outputs), or
any ``--tensors FILE.npz``. Throughput is measured on one core (thread variables
set to 1 before numpy is imported).

    python benchmarks/bench_codec.py --repeats 5
    python benchmarks/bench_codec.py --tensors crossing.npz --bits 4 8
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from splitnet.codec import decode, get_codec  # noqa: E402


def relu_tensor(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Half-zero ReLU data: max(0, N(0, 1)) with a per-channel scale."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 2.0, size=(1, shape[1], 1, 1)).astype(np.float32)
    return np.maximum(rng.standard_normal(shape, dtype=np.float32) * scale, 0)


def unet_crossings(height: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Every tensor that crosses a pool point of ``unet-vgg16`` (random init, a synthetic
    steel frame): the five skips (block outputs after ReLU) and the five pool outputs."""
    import torch

    from splitnet.models import create_model
    from splitnet.models._preprocess import Normalize
    from splitnet.split import trace
    from splitnet.synthetic import rgb_frames

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = create_model("unet-vgg16")
    info = model.splitnet_info
    frame = next(rgb_frames(height, width, seed=seed)).astype(np.float32) / 255
    x = Normalize(info)(torch.from_numpy(frame.transpose(2, 0, 1)[None].copy()))
    g = trace(model, x)
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for point in g.select(kind="pool"):
            head, _ = g.split(point)
            for spec, t in zip(point.tensors, head(x), strict=True):
                out.setdefault(spec.name, t.numpy().copy())
    return out


def entropy_table(tensors: dict[str, np.ndarray], bits: list[int]) -> str:
    """Coded stream (no header) against order-0 entropies of the quantized symbols.

    H0 uses one histogram per tensor, H0/ch one per channel. ``ans tensor`` codes
    with one model per tensor (target: <= 1.03 x H0); ``ans auto`` (the default)
    picks per-channel models when that is smaller with the tables counted, which
    can go below H0 (down to H0/ch); its header, ranges and model tables
    included, is in "ans auto header bytes".
    """
    rows = [
        "| tensor | shape | codec | H0 | H0/ch | zstd | zstd / H0 | ans tensor | / H0 "
        "| ans auto | / H0 | ans auto header bytes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    worst = {"zstd": 0.0, "ans": 0.0, "ans auto": 0.0}
    for name, x in tensors.items():
        for b in bits:
            z = get_codec(f"q{b}", entropy="zstd").stats([x])
            at = get_codec(f"q{b}", entropy="ans", ans_model="tensor").stats([x])
            aa = get_codec(f"q{b}", entropy="ans").stats([x])
            rz = z.stream_bits_per_element / z.entropy_bits
            rt = at.stream_bits_per_element / at.entropy_bits
            ra = aa.stream_bits_per_element / aa.entropy_bits
            worst["zstd"] = max(worst["zstd"], rz)
            worst["ans"] = max(worst["ans"], rt)
            worst["ans auto"] = max(worst["ans auto"], ra)
            rows.append(
                f"| {name} | {'x'.join(map(str, x.shape))} | q{b} | {z.entropy_bits:.3f} "
                f"| {z.channel_entropy_bits:.3f} | {z.stream_bits_per_element:.3f} | {rz:.3f} "
                f"| {at.stream_bits_per_element:.3f} | {rt:.4f} "
                f"| {aa.stream_bits_per_element:.3f} | {ra:.4f} "
                f"| {aa.payload_bytes - aa.stream_bytes} |"
            )
    rows.append(
        f"\nbits per element; worst ratios: zstd / H0 {worst['zstd']:.3f}, "
        f"ans tensor / H0 {worst['ans']:.4f}, ans auto / H0 {worst['ans auto']:.4f}"
    )
    return "\n".join(rows)


def throughput_table(x: np.ndarray, repeats: int) -> str:
    mb = x.nbytes / 1e6
    rows = [
        "| codec | ranges | encode MB/s | decode MB/s | encode+decode MB/s | bits/el |",
        "|---|---|---|---|---|---|",
    ]
    per_frame = get_codec("q4", entropy="zstd")
    calibrated = per_frame.calibrate([[x]])
    for label, codec in [
        ("per frame", per_frame),
        ("calibrated", calibrated),
        ("per frame", get_codec("q4", entropy="none")),
        ("per frame", get_codec("q4", entropy="ans")),
        ("per frame", get_codec("q8", entropy="zstd")),
    ]:
        enc = dec = float("inf")
        payload = codec.encode([x])
        for _ in range(repeats):
            t0 = time.perf_counter()
            payload = codec.encode([x])
            t1 = time.perf_counter()
            decode(payload)
            t2 = time.perf_counter()
            enc, dec = min(enc, t1 - t0), min(dec, t2 - t1)
        rows.append(
            f"| {codec.name} {codec.options.entropy} | {label} | {mb / enc:.0f} | {mb / dec:.0f} "
            f"| {mb / (enc + dec):.0f} | {8 * len(payload) / x.size:.3f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="timing repeats (best is kept)")
    p.add_argument("--bits", type=int, nargs="+", default=[4, 8])
    p.add_argument(
        "--tensors", type=Path, help="an .npz of crossing tensors instead of unet-vgg16's"
    )
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--skip-unet", action="store_true", help="synthetic data only")
    args = p.parse_args(argv)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    relu = relu_tensor((1, 64, 256, 400))
    print("\n## q4 throughput, one core, synthetic ReLU 1x64x256x400 float32 (26 MB)\n")
    print(throughput_table(relu, args.repeats))
    synthetic = {"relu 1x64x256x400": relu, "relu 8x256x32x50": relu_tensor((8, 256, 32, 50), 1)}
    print("\n## Coded stream vs order-0 entropy, synthetic half-zero ReLU\n")
    print(entropy_table(synthetic, args.bits))
    if args.tensors is not None:
        with np.load(args.tensors) as f:
            real = {k: f[k].astype(np.float32) for k in f.files}
        title = str(args.tensors)
    elif not args.skip_unet:
        real = unet_crossings(args.height, args.width)
        title = f"unet-vgg16 crossing tensors at its pool points (random init), 1x3x{args.height}x{args.width}"
    else:
        return
    print(f"\n## Coded stream vs order-0 entropy, {title}\n")
    print(entropy_table(real, args.bits))


if __name__ == "__main__":
    main()
