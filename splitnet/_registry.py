"""One registry per extension point (models, codecs, export targets).

Entries are filled by a decorator; a duplicate name raises, an unknown name
raises an error that lists the valid names. Families (e.g. every
segmentation-models-pytorch architecture x encoder) are registered as a
prefix with a resolver, so that thousands of combinations need not be
enumerated to be usable.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from splitnet._errors import SplitnetError

T = TypeVar("T")

__all__ = ["Registry", "UnknownNameError"]


class UnknownNameError(SplitnetError):
    """A name that is not in a registry. The message lists the valid ones."""


@dataclass(frozen=True)
class _Family(Generic[T]):
    prefix: str
    pattern: str  # how the names look, for messages: "smp-<arch>-<encoder>"
    resolve: Callable[[str], T | None]  # suffix -> entry, or None if not a member
    enumerate: Callable[[], Iterable[str]]  # suffixes to list (may be a subset)


class Registry(Generic[T]):
    """A name -> entry mapping filled by a decorator.

    Args:
        kind: what the entries are, for messages ("model", "codec", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._families: list[_Family[T]] = []

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``fn`` under ``name``; a duplicate raises."""

        def decorator(entry: T) -> T:
            self.add(name, entry)
            return entry

        return decorator

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry

    def add_family(
        self,
        prefix: str,
        *,
        pattern: str,
        resolve: Callable[[str], T | None],
        enumerate: Callable[[], Iterable[str]],
    ) -> None:
        """Registers every name ``prefix + suffix`` that ``resolve(suffix)`` accepts."""
        if any(f.prefix == prefix for f in self._families):
            raise ValueError(f"{self.kind} family {prefix!r} is already registered")
        self._families.append(_Family(prefix, pattern, resolve, enumerate))

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted names, optionally filtered by a shell-style ``pattern``."""
        names = list(self._entries)
        for fam in self._families:
            if pattern is None or _may_match(pattern, fam.prefix):
                names.extend(fam.prefix + s for s in fam.enumerate())
        if pattern is not None:
            names = fnmatch.filter(names, pattern)
        return sorted(set(names))

    def entries(self) -> list[T]:
        """The entries registered by name (not families), in registration order."""
        return list(self._entries.values())

    def get(self, name: str) -> T:
        """The entry registered as ``name``; raises :class:`UnknownNameError`."""
        entry = self._entries.get(name)
        if entry is not None:
            return entry
        for fam in self._families:
            if name.startswith(fam.prefix):
                entry = fam.resolve(name[len(fam.prefix) :])
                if entry is not None:
                    return entry
        raise UnknownNameError(self._unknown_message(name))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.get(name)
        except UnknownNameError:
            return False
        return True

    def _unknown_message(self, name: str) -> str:
        valid = sorted(self._entries)
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        families = "".join(f", {f.pattern}" for f in self._families)
        return f"unknown {self.kind} {name!r}.{hint} Valid: {', '.join(valid)}{families}"


def _may_match(pattern: str, prefix: str) -> bool:
    """Whether some name starting with ``prefix`` could match ``pattern``."""
    head = pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    return prefix.startswith(head) or head.startswith(prefix)
