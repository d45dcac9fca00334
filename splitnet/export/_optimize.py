"""``splitnet optimize``: one model, several head variants, one bundle each (issue 14)."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from splitnet._errors import ConfigError
from splitnet._registry import UnknownNameError
from splitnet.export._parity import DEFAULT_TOLERANCE
from splitnet.export._shrink import SHRINK_VARIANTS, FineTune, fine_tune, parse_shrink
from splitnet.export._variants import HEAD_VARIANTS, check_target, get_variant

# the parity bound of the FP16 head of a pruned, factorised or distilled network
SHRUNK_FP16_TOLERANCE = 0.05

__all__ = ["calibration_frames", "optimize", "resolve_variant", "validation_set"]


def resolve_variant(spec: str):
    """``(head variant, shrink)`` for one ``--variants`` entry: ``shrink`` is None for
    the IR variants (``fp16``, ``int8``, ...) and ``(ShrinkVariant, value)`` for
    ``prune:R``, ``lowrank:R``, ``distill:W``, whose heads are stored as FP16.

    Raises:
        UnknownNameError: an unknown name (the message lists the valid ones).
        ConfigError: a value out of range.
    """
    shrink = parse_shrink(spec)
    if shrink is not None:
        return get_variant("fp16"), shrink
    if spec in HEAD_VARIANTS:
        return get_variant(spec), None
    valid = HEAD_VARIANTS.names() + [f"{v.name}:{v.argument}" for v in SHRINK_VARIANTS.entries()]
    raise UnknownNameError(
        f"unknown head variant {spec!r}. Valid: {', '.join(valid)} (lowrank also takes energy=E)"
    )


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
    finetune: dict[str, Any] | None = None,
    finetune_data: str | None = None,
    distill_steps: int = 2000,
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
        finetune: for ``prune:R`` and ``lowrank:R``: :class:`FineTune` settings (``steps``,
            ``batch``, ``lr``, ``kd_weight``, ``seed``) of the retraining after the change.
        finetune_data: what they and ``distill:W`` train on (default ``data``; its
            ``train`` subset).
        distill_steps: ``distill:W``'s training steps (from scratch, so more).
        name: the base of the names a server registers (default ``MODEL.POINT``);
            each variant's bundle is named ``BASE-VARIANT`` (``:`` written ``-``), so one server serves all.
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
    chosen = [(spec, *resolve_variant(spec)) for spec in variants]
    for _, v, _ in chosen:
        check_target(v, export_kw.get("target", "cpu"))
    needs = [spec for spec, v, _ in chosen if v.needs_data]
    if needs and data is None:
        raise ConfigError(f"variant {needs[0]} needs calibration frames: give --data SPEC")
    retrain = None
    if distill_steps < 1:
        raise ConfigError(f"--distill-steps must be >= 1, got {distill_steps}")
    if any(shrink for _, _, shrink in chosen):
        retrain = FineTune(finetune_data or data, progress=progress, **dict(finetune or {}))
        for _, _, shrink in chosen:
            if shrink is not None and shrink[0].name == "distill":
                _check_student(model, shrink[1], export_kw)
    calib = calibration_frames(data, tuple(input_shape), frames) if needs else None
    held = None
    if "int8-acc" in variants:
        spec = validation_data or _val_of(data)
        held = validation_set(spec, tuple(input_shape), validation_frames, max_drop)
    out = Path(out_dir)
    results = []
    bar = tqdm(chosen, desc="variants", unit="variant", file=sys.stderr, disable=not progress)
    for spec, v, shrink in bar:
        bar.set_postfix_str(spec)
        label = spec.replace(":", "-").replace("=", "")  # prune:0.5 -> prune-0.5
        folder = out / label
        kw = dict(
            input_shape=input_shape,
            out_dir=folder,
            overwrite=overwrite,
            variant=v.name,
            calibration_frames=calib if v.needs_data else None,
            calibration_data=data if v.needs_data else None,
            validation=held if v.name == "int8-acc" else None,
            **export_kw,
        )
        record = None
        net = model
        if shrink is not None:
            net, kw, record = _shrunk(model, spec, shrink, split, retrain, kw, distill_steps)
        existed = folder.exists()
        try:
            if split is None:
                r = export_whole(net, mode="device-only", **kw)
            else:
                r = export_bundle(net, split=split, **kw)
        except BaseException:
            # the export staged its files and wrote nothing: leave no empty folder behind
            if not existed and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
            raise
        base = name or r.manifest.name
        results.append(_rewrite(r, f"{base}-{label}", spec, record))
    return results


def _check_student(model, width: float, kw: dict) -> None:
    """``ConfigError`` now, before any export, for a model ``distill`` cannot shrink."""
    from splitnet.export._shrink import distill_student

    if not isinstance(model, str):
        raise ConfigError("distill needs a registered model name (its width argument)")
    context = {
        "model_name": model,
        "model_args": kw.get("model_args"),
        "num_classes": kw.get("num_classes"),
    }
    distill_student(None, width, context)


def _shrunk(model, spec: str, shrink, split, retrain: FineTune, kw: dict, distill_steps: int):
    """The shrunk and retrained module, the export arguments for it and the manifest's
    record of what was done (``head.variant``)."""
    from splitnet.export._bundle import _resolve_model

    variant, value = shrink
    teacher, model_name, _ = _resolve_model(
        model,
        weights=kw.pop("weights", None),
        num_classes=kw.get("num_classes"),
        model_args=kw.get("model_args"),
    )
    context = {
        "input_shape": tuple(kw["input_shape"]),
        "split": split,
        "model_name": model_name,
        "model_args": kw.get("model_args"),
        "num_classes": kw.get("num_classes"),
    }
    net, transform = variant.apply(teacher, value, context)
    # a retrained network's FP16 head differs from its float self a little more than the
    # original's (fewer channels average less rounding away); its bound is recorded
    kw["tolerance"] = max(kw.get("tolerance", DEFAULT_TOLERANCE), SHRUNK_FP16_TOLERANCE)
    if variant.name == "distill":
        kw["model_args"] = transform["model_args"]
        retrain = dataclasses.replace(retrain, steps=distill_steps)
    trained = fine_tune(net, teacher, retrain, context["input_shape"], desc=spec)
    record = {"transform": {"kind": variant.name, **transform}, "retrain": trained}
    return net, kw, record


def _val_of(data: str) -> str:
    """``data``'s ``val`` subset, unless it names a subset (then give the held-out data)."""
    from splitnet.data import parse_spec

    if "subset" in parse_spec(data).options:
        raise ConfigError(
            f"--data {data} names a subset: give int8-acc's held-out frames (--validation-data)"
        )
    return f"{data},subset=val" if ":" in data else f"{data}:subset=val"


def _rewrite(result, new_name: str, spec: str, record: dict | None):
    """The bundle renamed, and where the network was shrunk, the record of it in
    ``head.variant`` (its manifest rewritten; the files and checksums unchanged)."""
    from splitnet.bundle import MANIFEST_FILE

    changes: dict[str, Any] = {"name": new_name}
    if record is not None:
        variant = {**result.manifest.head["variant"], "name": spec}
        changes["head"] = {**result.manifest.head, "variant": {**variant, **record}}
    manifest = dataclasses.replace(result.manifest, **changes)
    path = result.bundle_dir / MANIFEST_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(tmp, path)
    return dataclasses.replace(result, manifest=manifest)
