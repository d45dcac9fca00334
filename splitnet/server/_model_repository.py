"""The model repository extension: which bundles a repository holds, by name and version;
loading and unloading them while the server runs, and picking up new versions.

Layouts (mixable): a bundle folder ``REPO/X/`` (version 1 of the model its manifest
names), Triton's ``REPO/NAME/VERSION/`` (VERSION a positive integer), or ``REPO``
itself a bundle.

Which versions are loaded is the version policy (Triton's ``version_policy``):
``latest:N`` (the N highest versions, default 1), ``all`` or ``specific:1,3``. A
request without a version runs on the highest loaded version; a request naming
one runs on that version while it is loaded (NOT_FOUND otherwise). Unlike
Triton, only a version that loads counts towards ``latest:N``: a new version
that is incomplete (its manifest or a checksum does not verify: a copy still
under way) or broken (its tail does not load) is reported in the repository
index (UNAVAILABLE, with the reason), the log and the
``splitnet_repository_loads`` metric, and the versions before it keep serving.

:meth:`ModelRepository.poll` brings the loaded versions in line with the
repository (``splitnet serve --poll-interval S`` runs it every S seconds, like
Triton's ``--model-control-mode=poll``); ``RepositoryModelLoad`` does the same
for one model at once. A version leaves the policy (a newer one loaded, or its
folder removed) only after the requests it has taken are answered. A version is
published by copying it under a temporary name and renaming it
(:func:`splitnet.bundle.publish_version`); a folder that changes after it was
loaded is loaded again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from splitnet._errors import ConfigError, SplitnetError
from splitnet.bundle import MANIFEST_FILE, BundleError, read_manifest

__all__ = [
    "BundleEntry",
    "ModelRepository",
    "RepositoryError",
    "VersionPolicy",
    "parse_version_policy",
    "scan",
]

log = logging.getLogger("splitnet.server")


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


def scan(repository: str | os.PathLike, *, verify: bool = True) -> list[BundleEntry]:
    """Every bundle in ``repository`` (manifests read and, with ``verify``, their files'
    checksums checked; weights not loaded)."""
    root = Path(repository)
    if not root.is_dir():
        raise FileNotFoundError(f"model repository not found: {root}")
    entries = []
    for path, version in _candidates(root):
        # REPO/NAME/VERSION/: NAME is the model's name even if the manifest cannot be read
        fallback = path.parent.name if version is not None else path.name
        try:
            name = read_manifest(path, verify=verify).name
            error = ""
        except (SplitnetError, OSError, ValueError) as e:
            name, error = fallback, str(e)
        entries.append(BundleEntry(name, version or "1", path, error))
    return entries


def latest(entries: list[BundleEntry], name: str) -> BundleEntry | None:
    mine = [e for e in entries if e.name == name]
    return max(mine, key=lambda e: int(e.version)) if mine else None


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model are loaded (Triton's ``version_policy``).

    Attributes:
        kind: ``"latest"``, ``"all"`` or ``"specific"``.
        num_versions: with ``latest``, how many of the highest versions.
        versions: with ``specific``, which ones.
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def admits(self, version: str, taken: int) -> bool:
        """Whether ``version`` is loaded, ``taken`` higher versions having been loaded."""
        if self.kind == "latest":
            return taken < self.num_versions
        if self.kind == "specific":
            return int(version) in self.versions
        return True

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest:{self.num_versions}"
        if self.kind == "specific":
            return "specific:" + ",".join(map(str, self.versions))
        return "all"


def parse_version_policy(text: str) -> VersionPolicy:
    """``latest:N`` (``latest`` is ``latest:1``), ``all`` or ``specific:V[,V...]``."""
    kind, _, arg = text.strip().partition(":")
    try:
        if kind == "latest":
            n = int(arg) if arg else 1
            if n >= 1:
                return VersionPolicy("latest", num_versions=n)
        elif kind == "all" and not arg:
            return VersionPolicy("all")
        elif kind == "specific":
            versions = tuple(sorted({int(v) for v in arg.split(",")}))
            if versions and min(versions) >= 1:
                return VersionPolicy("specific", versions=versions)
    except ValueError:
        pass
    raise ConfigError(
        f"version policy must be latest[:N] (N >= 1), all or specific:V[,V...], got {text!r}"
    )


@dataclass
class _Seen:
    """What the repository made of one version folder with these contents."""

    signature: tuple
    model: object | None = None  # the TailModel loaded from it
    error: str = ""  # why it is not loaded


def _signature(path: Path) -> tuple:
    """The folder's files, sizes and modification times: what a change of its contents changes."""
    out = []
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                st = os.stat(os.path.join(dirpath, f))
            except OSError:  # removed while we looked: the next poll sees the rest
                continue
            out.append(
                (os.path.relpath(os.path.join(dirpath, f), path), st.st_size, st.st_mtime_ns)
            )
    return tuple(sorted(out))


class ModelRepository:
    """Index, load, unload and poll over a running server's :class:`InferenceCore`.

    Args:
        root: the repository folder (``None``: none; index empty, load NOT_FOUND).
        core: the server's inference core, whose models this changes.
        device, precision: where and how the tails run.
        policy: which versions are loaded (default ``latest:1``).
    """

    def __init__(
        self,
        root,
        core,
        *,
        device: str,
        precision: str,
        statistics=None,
        policy: VersionPolicy | None = None,
    ) -> None:
        self.root = Path(root) if root is not None else None
        self.core = core
        self.device = device
        self.precision = precision
        self.statistics = statistics
        self.policy = policy or VersionPolicy()
        self._lock = asyncio.Lock()
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._unloaded: set[str] = set()  # unloaded by request: polling leaves them alone

    def _entries(self, *, verify: bool = True) -> list[BundleEntry]:
        if self.root is None or not self.root.is_dir():
            return []
        return scan(self.root, verify=verify)

    def index(self, *, ready_only: bool = False) -> list[tuple[str, str, str, str]]:
        """(name, version, state, reason) of each model version in the repository or served."""
        rows = []
        seen = set()
        for e in self._entries(verify=False):
            model = self.core.versions.get(e.name, {}).get(e.version)
            served = model is not None
            seen.add((e.name, e.version))
            if ready_only and not served:
                continue
            state = "READY" if served else "UNAVAILABLE"
            known = self._seen.get((e.name, e.version))
            reason = "" if served else (e.error or (known.error if known else ""))
            rows.append((e.name, e.version, state, reason))
        for name, loaded in self.core.versions.items():
            for version in loaded:
                if (name, version) not in seen:
                    rows.append((name, version, "READY", ""))
        return sorted(rows)

    async def load(self, name: str) -> None:
        """Loads ``name``'s versions under the policy now (the newest one included:
        a version that failed before is tried again); served versions keep serving.

        Raises:
            RepositoryError: NOT_FOUND when the repository has no such model,
                INVALID_ARGUMENT when its newest version does not load (the
                versions that do are loaded all the same).
        """
        async with self._lock:
            entries = [e for e in self._entries(verify=False) if e.name == name]
            if not entries:
                raise RepositoryError(
                    grpc.StatusCode.NOT_FOUND, f"no model {name!r} in repository {self.root}"
                )
            self._unloaded.discard(name)
            failed = await self._sync(name, entries, retry=True)
            newest = max(entries, key=lambda e: int(e.version))
            if newest.version in failed:
                raise RepositoryError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"cannot load {name!r} version {newest.version}: {failed[newest.version]}",
                )

    async def unload(self, name: str) -> None:
        """Stops serving every version of ``name``; the requests already taken finish.
        Polling does not load it again until it is loaded by request."""
        async with self._lock:
            if name not in self.core.versions:
                raise RepositoryError(grpc.StatusCode.NOT_FOUND, f"model {name!r} is not loaded")
            self._unloaded.add(name)
            for key in [k for k in self._seen if k[0] == name]:
                del self._seen[key]
            await self.core.remove_model(name)

    async def poll(self) -> None:
        """One pass: every model's loaded versions brought in line with the repository
        and the policy (new versions loaded, versions out of the policy or removed from
        the repository unloaded once their requests are answered)."""
        async with self._lock:
            entries = self._entries(verify=False)
            names = dict.fromkeys([e.name for e in entries] + list(self.core.versions))
            for name in names:
                if name not in self._unloaded:
                    await self._sync(name, [e for e in entries if e.name == name])

    async def watch(self, interval_s: float) -> None:
        """Polls every ``interval_s`` seconds until cancelled; a failed pass is logged."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.poll()
            except Exception:  # a bug must not stop the polling (nor the server)
                log.exception("repository poll failed")

    async def _sync(
        self, name: str, entries: list[BundleEntry], *, retry: bool = False
    ) -> dict[str, str]:
        """Loads the versions of ``entries`` the policy wants, newest first, and unloads
        the others; returns why each version that should have loaded did not."""
        failed: dict[str, str] = {}
        wanted: list[str] = []
        loaded = self.core.versions.get(name, {})
        for e in sorted(entries, key=lambda e: int(e.version), reverse=True):
            if not self.policy.admits(e.version, len(wanted)):
                continue
            key = (name, e.version)
            signature = _signature(e.path)
            seen = self._seen.get(key)
            current = loaded.get(e.version)
            if seen is None and current is not None and Path(current.path) == e.path:
                seen = self._seen[key] = _Seen(signature, model=current)  # loaded at start
            if seen is not None and seen.signature == signature:
                if seen.model is not None and seen.model is current:
                    wanted.append(e.version)
                    continue
                if seen.error and not retry:
                    failed[e.version] = seen.error
                    continue
            model, error = await self._load_version(e)
            self._seen[key] = _Seen(signature, model=model, error=error)
            if model is None:
                failed[e.version] = error
                continue
            self.core.add_model(model)
            wanted.append(e.version)
            log.info("loaded %s version %s from %s", name, e.version, e.path)
            self._count(name, "ok")
        for version in list(self.core.versions.get(name, {})):
            if version not in wanted:
                log.info(
                    "unloading %s version %s (out of the %s policy)", name, version, self.policy
                )
                self._seen.pop((name, version), None)  # its weights are freed once unloaded
                await self.core.remove_model(name, version)
        return failed

    async def _load_version(self, e: BundleEntry):
        """``(TailModel, "")``, or ``(None, why)`` with the failure logged and counted."""
        from splitnet.server._repository import TailModel

        if e.error:
            return self._failed(e, "broken", e.error)
        try:
            manifest = read_manifest(e.path)
        except (BundleError, OSError, ValueError) as err:
            # a copy under way, or a corrupt file: tried again when the folder changes
            return self._failed(e, "incomplete", f"incomplete or corrupt: {err}")
        if not manifest.has_tail:
            return None, f"{manifest.mode} bundle: nothing to serve"
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(
                None, lambda: TailModel(e.path, device=self.device, precision=self.precision)
            )
        except Exception as err:  # whatever a broken tail raises, the others keep serving
            return self._failed(e, "broken", f"does not load: {type(err).__name__}: {err}")
        model.version = e.version
        return model, ""

    def _failed(self, e: BundleEntry, outcome: str, error: str):
        log.error("cannot load %s version %s (%s): %s", e.name, e.version, e.path, error)
        self._count(e.name, outcome)
        return None, error

    def _count(self, name: str, outcome: str) -> None:
        metrics = getattr(self.core, "metrics", None)
        if metrics is not None and metrics.repository_loads is not None:
            metrics.repository_loads.labels(name, outcome).inc()
