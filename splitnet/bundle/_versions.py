"""Versions of a bundle in Triton's layout, ``MODEL_DIR/VERSION/``, and how to publish one.

A model folder holds one bundle per version, each in a folder named by a
positive integer (``unet/1/``, ``unet/2/``). The server's repository
(``REPO/NAME/VERSION/``) and the device's bundle folder use the same layout, so
that one retrained bundle is published to both the same way.

Publishing rule: a version appears in one step. :func:`publish_version` copies
the bundle to a hidden temporary folder beside the versions (``.2.partial``, a
name no reader takes for a version) and renames it to ``2`` when the copy is
complete: ``rename`` is atomic within a filesystem, so a reader sees no version
or the whole one. A version copied in place (``cp -r``, ``rsync`` without
``--delay-updates``) can be seen half-written; readers also check it: a version
is *complete* only when its manifest reads and every file's sha256 matches
(:func:`complete_versions`), so a half-copied version is passed over until the
copy ends.

Only the standard library: the device and the server both use it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from splitnet.bundle._manifest import MANIFEST_FILE, BundleError, read_manifest

__all__ = ["complete_versions", "publish_version", "version_dirs"]


def version_dirs(model_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(version, folder)`` of each version folder of ``model_dir``, ascending.

    A folder counts when its name is a positive integer and it holds a manifest
    (complete or not: see :func:`complete_versions`).
    """
    root = Path(model_dir)
    found = []
    for d in root.iterdir() if root.is_dir() else ():
        if d.is_dir() and d.name.isdigit() and int(d.name) > 0 and (d / MANIFEST_FILE).is_file():
            found.append((int(d.name), d))
    return sorted(found)


def complete_versions(model_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The versions of ``model_dir`` whose manifest reads and whose files all verify."""
    out = []
    for version, path in version_dirs(model_dir):
        try:
            read_manifest(path)
        except BundleError:
            continue
        out.append((version, path))
    return out


def publish_version(
    bundle_dir: str | os.PathLike, model_dir: str | os.PathLike, *, version: int | None = None
) -> Path:
    """Copies the bundle ``bundle_dir`` into ``model_dir`` as a new version, atomically.

    Args:
        bundle_dir: a bundle (``splitnet export --out``); its checksums are verified first.
        model_dir: the model's folder (``REPO/NAME``; created when missing).
        version: the version number (default: one more than the highest present).

    Returns:
        The new version's folder.

    Raises:
        BundleError: the bundle does not verify, or the version exists already.
    """
    read_manifest(bundle_dir)  # a broken bundle is not published
    root = Path(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    if version is None:
        present = [int(d.name) for d in root.iterdir() if d.is_dir() and d.name.isdigit()]
        version = max(present, default=0) + 1
    if version < 1:
        raise BundleError(f"a version is a positive integer, got {version}")
    final = root / str(version)
    if final.exists():
        raise BundleError(f"{final} exists: versions are immutable, publish a new one")
    tmp = root / f".{version}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)  # a copy cut short earlier
    shutil.copytree(bundle_dir, tmp)
    os.rename(tmp, final)  # the whole version appears at once
    return final
