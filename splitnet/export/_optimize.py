"""``splitnet optimize``: one model, several head variants, one bundle each (issue 14)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from splitnet._errors import ConfigError
from splitnet.export._variants import check_target, get_variant

__all__ = ["calibration_frames", "optimize"]


def calibration_frames(spec: str, shape: tuple[int, int, int], n: int) -> list[np.ndarray]:
    """``n`` frames (``H x W x 3`` uint8) of ``--data spec``'s train subset (unless the spec
    says ``subset=``), resized to the model input.

    Raises:
        ConfigError: ``n`` < 1, or the data is not RGB.
    """
    import torch

    from splitnet.data import open_dataset, parse_spec

    if n < 1:
        raise ConfigError(f"--frames must be >= 1, got {n}")
    parsed = parse_spec(spec)
    c, h, w = shape
    ds = open_dataset(parsed, subset=parsed.options.get("subset", "train"), size=(h, w), channels=c)
    if len(ds) == 0:
        raise ConfigError(f"--data {spec}: no frames in its subset")
    frames = []
    for i in range(min(n, len(ds))):
        x = ds[i][0]
        if tuple(x.shape) != (c, h, w):
            raise ConfigError(
                f"--data {spec}: frames of shape {tuple(x.shape)}, the model takes {(c, h, w)}"
            )
        frames.append((x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    return frames


def optimize(
    model,
    *,
    input_shape: tuple[int, int, int],
    out_dir: str | os.PathLike,
    variants: Sequence[str],
    split: int | str | None = None,
    data: str | None = None,
    frames: int = 300,
    name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **export_kw: Any,
) -> list:
    """Exports ``model`` once per head variant, into ``out_dir/<variant>/``.

    Args:
        model, input_shape: as :func:`splitnet.export.export_bundle`.
        variants: variant names (:func:`splitnet.export.list_variants`).
        split: the split point; None exports the whole model as a ``device-only`` bundle
            (the seed 000 case: everything on the device).
        data: the ``--data`` spec of the calibration frames (required by ``int8``).
        frames: how many calibration frames (NNCF's default subset is 300).
        name: the base of the names a server registers (default ``MODEL.POINT``);
            each variant's bundle is named ``BASE-VARIANT``, so one server serves all.
        export_kw: passed on (``weights``, ``target``, ``codec``, ``num_classes``, ...).

    Returns:
        One :class:`~splitnet.export.ExportResult` per variant, in order.

    Raises:
        ConfigError, UnknownNameError: an unknown or repeated variant, INT8 for the
            MYRIAD target, ``int8`` without ``data``; checked before any export.
    """
    from tqdm import tqdm

    from splitnet.export._bundle import export_bundle
    from splitnet.export._whole import export_whole

    if not variants:
        raise ConfigError("--variants needs at least one variant")
    if len(set(variants)) != len(variants):
        raise ConfigError(f"--variants repeats a variant: {','.join(variants)}")
    chosen = [get_variant(v) for v in variants]
    for v in chosen:
        check_target(v, export_kw.get("target", "cpu"))
    needs = [v.name for v in chosen if v.needs_data]
    if needs and data is None:
        raise ConfigError(f"variant {needs[0]} needs calibration frames: give --data SPEC")
    calib = calibration_frames(data, tuple(input_shape), frames) if needs else None
    out = Path(out_dir)
    results = []
    bar = tqdm(chosen, desc="variants", unit="variant", file=sys.stderr, disable=not progress)
    for v in bar:
        bar.set_postfix_str(v.name)
        kw = dict(
            input_shape=input_shape,
            out_dir=out / v.name,
            overwrite=overwrite,
            variant=v.name,
            calibration_frames=calib if v.needs_data else None,
            calibration_data=data if v.needs_data else None,
            **export_kw,
        )
        if split is None:
            r = export_whole(model, mode="device-only", **kw)
        else:
            r = export_bundle(model, split=split, **kw)
        base = name or r.manifest.name
        results.append(_rename(r, f"{base}-{v.name}"))
    return results


def _rename(result, new_name: str):
    """The bundle renamed (its manifest rewritten; the files and checksums unchanged)."""
    import dataclasses

    from splitnet.bundle import MANIFEST_FILE

    manifest = dataclasses.replace(result.manifest, name=new_name)
    path = result.bundle_dir / MANIFEST_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(tmp, path)
    return dataclasses.replace(result, manifest=manifest)
