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

__all__ = ["calibration_frames", "optimize", "validation_set"]


def _frames(spec: str, shape: tuple[int, int, int], n: int, subset: str):
    """``(frames H x W x 3 uint8, targets, dataset)``: the first ``n`` samples of ``spec``'s
    ``subset`` (unless the spec names one), resized to the model input."""
    import torch

    from splitnet.data import open_dataset, parse_spec, sample_frame

    parsed = parse_spec(spec)
    c, h, w = shape
    ds = open_dataset(parsed, subset=parsed.options.get("subset", subset), size=(h, w), channels=c)
    if len(ds) == 0:
        raise ConfigError(f"--data {spec}: no frames in its {subset} subset")
    frames, targets = [], []
    for i in range(min(n, len(ds))):
        x, y = ds[i]
        if tuple(x.shape) != (c, h, w):
            raise ConfigError(
                f"--data {spec}: frames of shape {tuple(x.shape)}, the model takes {(c, h, w)}"
            )
        frames.append(sample_frame(x))
        targets.append(y.numpy() if torch.is_tensor(y) else int(y))
    return frames, targets, ds


def calibration_frames(spec: str, shape: tuple[int, int, int], n: int) -> list[np.ndarray]:
    """``n`` frames (``H x W x 3`` uint8) of ``--data spec``'s train subset (unless the spec
    says ``subset=``), resized to the model input.

    Raises:
        ConfigError: ``n`` < 1, or no frames.
    """
    if n < 1:
        raise ConfigError(f"--frames must be >= 1, got {n}")
    return _frames(spec, shape, n, "train")[0]


def validation_set(spec: str, shape: tuple[int, int, int], n: int, max_drop_points: float):
    """A :class:`~splitnet.export.Validation` of ``n`` labelled frames of ``spec``'s ``val``
    subset (unless the spec says ``subset=``) and the largest drop in points."""
    from splitnet.export._variants import Validation

    if not 0 < max_drop_points < 100:
        raise ConfigError(f"--max-drop must be in (0, 100) points, got {max_drop_points}")
    frames, targets, ds = _frames(spec, shape, n, "val")
    return Validation(frames, targets, ds.task, ds.num_classes, max_drop=max_drop_points / 100)


def optimize(
    model,
    *,
    input_shape: tuple[int, int, int],
    out_dir: str | os.PathLike,
    variants: Sequence[str],
    split: int | str | None = None,
    data: str | None = None,
    frames: int = 300,
    validation_data: str | None = None,
    validation_frames: int = 300,
    max_drop: float = 0.5,
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
        validation_data, validation_frames, max_drop: for ``int8-acc``: the held-out
            labelled frames (default: ``data``'s ``val`` subset, where ``data`` does not
            name a subset) and the largest drop of top-1 / mean Dice, in points.
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
    held = None
    if "int8-acc" in variants:
        spec = validation_data or _val_of(data)
        held = validation_set(spec, tuple(input_shape), validation_frames, max_drop)
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
            validation=held if v.name == "int8-acc" else None,
            **export_kw,
        )
        existed = (out / v.name).exists()
        try:
            if split is None:
                r = export_whole(model, mode="device-only", **kw)
            else:
                r = export_bundle(model, split=split, **kw)
        except BaseException:
            # the export staged its files and wrote nothing: leave no empty folder behind
            if not existed and (out / v.name).is_dir() and not any((out / v.name).iterdir()):
                (out / v.name).rmdir()
            raise
        base = name or r.manifest.name
        results.append(_rename(r, f"{base}-{v.name}"))
    return results


def _val_of(data: str) -> str:
    """``data``'s ``val`` subset, unless it names a subset (then give the held-out data)."""
    from splitnet.data import parse_spec

    if "subset" in parse_spec(data).options:
        raise ConfigError(
            f"--data {data} names a subset: give int8-acc's held-out frames (--validation-data)"
        )
    return f"{data},subset=val" if ":" in data else f"{data}:subset=val"


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
