"""The model repository extension: which bundles a repository holds, by name and version;
loading and unloading them while the server runs.

Layouts (mixable): a bundle folder ``REPO/X/`` (version 1 of the model its manifest
names), Triton's ``REPO/NAME/VERSION/`` (VERSION a positive integer; the highest
version is served), or ``REPO`` itself a bundle.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from splitnet._errors import SplitnetError
from splitnet.bundle import MANIFEST_FILE, BundleError, read_manifest

__all__ = ["BundleEntry", "ModelRepository", "RepositoryError", "scan"]


class RepositoryError(Exception):
    """A repository request that failed, with the gRPC status it maps to."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class BundleEntry:
    name: str
    version: str
    path: Path
    error: str = ""  # why its manifest cannot be read ("" when it can)


def _candidates(root: Path) -> list[tuple[Path, str | None]]:
    """(bundle folder, version or None for "1 unless said") of each manifest in ``root``."""
    found: list[tuple[Path, str | None]] = []
    if (root / MANIFEST_FILE).is_file():
        found.append((root, None))
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if (d / MANIFEST_FILE).is_file():
            found.append((d, None))
            continue
        for v in sorted((p for p in d.iterdir() if p.is_dir() and p.name.isdigit()), key=_num):
            if int(v.name) > 0 and (v / MANIFEST_FILE).is_file():
                found.append((v, v.name))
    return found


def _num(p: Path) -> int:
    return int(p.name)


def scan(repository: str | os.PathLike) -> list[BundleEntry]:
    """Every bundle in ``repository`` (manifests read, weights not loaded)."""
    root = Path(repository)
    if not root.is_dir():
        raise FileNotFoundError(f"model repository not found: {root}")
    entries = []
    for path, version in _candidates(root):
        # REPO/NAME/VERSION/: NAME is the model's name even if the manifest cannot be read
        fallback = path.parent.name if version is not None else path.name
        try:
            name = read_manifest(path).name
            error = ""
        except (SplitnetError, OSError, ValueError) as e:
            name, error = fallback, str(e)
        entries.append(BundleEntry(name, version or "1", path, error))
    return entries


def latest(entries: list[BundleEntry], name: str) -> BundleEntry | None:
    mine = [e for e in entries if e.name == name]
    return max(mine, key=lambda e: int(e.version)) if mine else None


class ModelRepository:
    """Index, load and unload over a running server's :class:`InferenceCore`."""

    def __init__(self, root, core, *, device: str, precision: str, statistics=None) -> None:
        self.root = Path(root) if root is not None else None
        self.core = core
        self.device = device
        self.precision = precision
        self.statistics = statistics
        self._lock = asyncio.Lock()

    def _entries(self) -> list[BundleEntry]:
        if self.root is None or not self.root.is_dir():
            return []
        return scan(self.root)

    def index(self, *, ready_only: bool = False) -> list[tuple[str, str, str, str]]:
        """(name, version, state, reason) of each model in the repository or served."""
        rows = []
        seen = set()
        for e in self._entries():
            model = self.core.models.get(e.name)
            served = model is not None and getattr(model, "version", "1") == e.version
            seen.add((e.name, e.version))
            if ready_only and not served:
                continue
            state = "READY" if served else "UNAVAILABLE"
            rows.append((e.name, e.version, state, e.error if not served else ""))
        for name, model in self.core.models.items():
            version = getattr(model, "version", "1")
            if (name, version) not in seen:
                rows.append((name, version, "READY", ""))
        return sorted(rows)

    async def load(self, name: str) -> None:
        """Loads (or reloads) the latest version of ``name``; served models keep serving."""
        from splitnet.server._repository import TailModel

        async with self._lock:
            entry = latest(self._entries(), name)
            if entry is None:
                raise RepositoryError(
                    grpc.StatusCode.NOT_FOUND, f"no model {name!r} in repository {self.root}"
                )
            if entry.error:
                raise RepositoryError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"cannot load {name!r}: {entry.error}"
                )
            loop = asyncio.get_running_loop()
            try:
                model = await loop.run_in_executor(
                    None,
                    lambda: TailModel(entry.path, device=self.device, precision=self.precision),
                )
            except (SplitnetError, BundleError, OSError, ValueError, RuntimeError) as e:
                raise RepositoryError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"cannot load {name!r}: {e}"
                ) from None
            model.version = entry.version
            self.core.add_model(model)

    async def unload(self, name: str) -> None:
        """Stops serving ``name``; the requests already taken finish."""
        async with self._lock:
            if name not in self.core.models:
                raise RepositoryError(grpc.StatusCode.NOT_FOUND, f"model {name!r} is not loaded")
            await self.core.remove_model(name)
