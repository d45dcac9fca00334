"""The data-source registry: ``--data SOURCE[:PATH][,key=value...]`` -> a dataset.

A source is one decorated function in its own module::

    @register_data_source("synthetic", options={"n", "size", "p"}, path=False)
    def _synthetic(request: DataRequest) -> Dataset: ...

The function gets a :class:`DataRequest` (the parsed spec and what the caller
asked for) and returns a torch ``Dataset`` of ``(image, target)`` with
``task``, ``num_classes`` and ``class_names`` attributes. :func:`open_dataset`
then draws the train/validation subset with a seeded permutation, unless the
source was registered with ``subsets=True`` and draws it itself (an image
folder with ``train/`` and ``val/`` sub-folders).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from splitnet._errors import SplitnetError
from splitnet._registry import Registry

__all__ = [
    "SUBSETS",
    "DataError",
    "DataRequest",
    "DataSource",
    "DataSpec",
    "list_data_sources",
    "parse_spec",
    "register_data_source",
]

SUBSETS = ("all", "train", "val")
# options every source takes, after its path
COMMON_OPTIONS = frozenset({"subset", "val", "seed", "limit"})


class DataError(SplitnetError):
    """A ``--data`` spec, dataset file or image that cannot be used; the message names it."""


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` string: ``source[:path][,key=value...]``."""

    source: str
    path: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [self.path] if self.path else []
        parts += [f"{k}={v}" for k, v in self.options.items()]
        return self.source + (":" + ",".join(parts) if parts else "")

    def number(self, key: str, kind: type, default: Any) -> Any:
        """Option ``key`` converted with ``kind`` (``int``, ``float``), or ``default``."""
        if key not in self.options:
            return default
        try:
            return kind(self.options[key])
        except ValueError:
            raise DataError(
                f"--data option {key}={self.options[key]!r} is not a {kind.__name__}"
            ) from None


@dataclass(frozen=True)
class DataRequest:
    """What a source function is asked for.

    Attributes:
        spec: the parsed ``--data`` string.
        subset: ``"all"``, ``"train"`` or ``"val"`` (sources registered with
            ``subsets=True`` draw it themselves; others may ignore it).
        val: the held-out fraction.
        seed: the spec's seed (of the subsets, and of generated samples).
        size: the ``(H, W)`` the caller will resize samples to, or ``None``.
        channels: image channels, 3 (RGB) or 1 (grayscale).
    """

    spec: DataSpec
    subset: str
    val: float
    seed: int
    size: tuple[int, int] | None
    channels: int


@dataclass(frozen=True)
class DataSource:
    """A registered source: its opener and what its spec accepts."""

    name: str
    open: Callable[[DataRequest], Any]
    options: frozenset[str]
    path: bool
    subsets: bool
    default_val: float
    example: str


DATA_SOURCES: Registry[DataSource] = Registry("data source")


def register_data_source(
    name: str,
    *,
    options: Iterable[str] = (),
    path: bool = True,
    subsets: bool = False,
    default_val: float = 0.2,
    example: str | None = None,
) -> Callable[[Callable[[DataRequest], Any]], Callable[[DataRequest], Any]]:
    """Registers ``fn(request) -> Dataset`` as ``--data name:...``.

    Args:
        name: the source name before the colon.
        options: the spec options it takes besides :data:`COMMON_OPTIONS`.
        path: whether the spec needs a path (``name:DIR``).
        subsets: whether ``fn`` draws the train/validation subset itself.
        default_val: the held-out fraction when the spec gives no ``val=``.
        example: a spec shown in messages (default ``name:/path/to/dir``).
    """

    def decorator(fn: Callable[[DataRequest], Any]) -> Callable[[DataRequest], Any]:
        DATA_SOURCES.add(
            name,
            DataSource(
                name,
                fn,
                COMMON_OPTIONS | frozenset(options),
                path,
                subsets,
                default_val,
                example or (f"{name}:/path/to/dir" if path else name),
            ),
        )
        return fn

    return decorator


def list_data_sources() -> list[str]:
    """The registered source names."""
    return DATA_SOURCES.names()


def parse_spec(spec: str) -> DataSpec:
    """Parses ``"synthetic:n=200,size=128x800"``, ``"severstal:/data/steel"``, ...

    Raises:
        DataError: unknown source or option, or a missing path.
    """
    name, _, rest = spec.strip().partition(":")
    try:
        source = DATA_SOURCES.get(name)
    except SplitnetError as e:
        raise DataError(f"--data {spec!r}: {e}") from None
    path, options = None, {}
    for i, token in enumerate(t for t in rest.split(",") if t.strip()) if rest else ():
        key, eq, value = token.partition("=")
        if not eq:
            if i != 0 or not source.path:
                raise DataError(f"expected key=value in --data {spec!r}, got {token!r}")
            path = token.strip()
            continue
        key = key.strip()
        if key not in source.options:
            hint = " (the train/val choice is subset=)" if key == "split" else ""
            raise DataError(
                f"{name} data has no option {key!r}{hint}; "
                f"options: {', '.join(sorted(source.options))}"
            )
        options[key] = value.strip()
    if source.path and not path:
        raise DataError(f"--data {name}: needs a path, e.g. {source.example}")
    return DataSpec(name, path, options)
