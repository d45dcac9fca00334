"""One parser for the shapes users type: ``3x256x1600``, ``128x800`` (torch-free)."""

from __future__ import annotations

import re

from splitnet._errors import SplitnetError

__all__ = ["ShapeError", "parse_shape"]

_SEP = r"\s*[xX×,]\s*"


class ShapeError(SplitnetError):
    """A shape string that is not ``N1xN2x...`` with the expected count and sizes."""


def parse_shape(
    text: str, *, dims: int, minimum: int = 1, example: str, labels: str
) -> tuple[int, ...]:
    """Parses ``dims`` positive integers separated by ``x``, ``X``, ``×`` or ``,``.

    Args:
        text: what the user typed, e.g. ``"3x256x1600"``; blanks around the parts are allowed.
        dims: how many sizes the shape must have.
        minimum: the smallest size allowed.
        example, labels: for the message, e.g. ``"3x256x1600"`` and ``"C x H x W"``.

    Returns:
        The sizes, e.g. ``(3, 256, 1600)``.

    Raises:
        ShapeError: ``"must look like EXAMPLE (LABELS), got TEXT"``; callers put
            the option's name in front.

    Example:
        >>> parse_shape("128x800", dims=2, example="128x800", labels="H x W")
        (128, 800)
    """
    m = re.fullmatch(r"\s*" + _SEP.join([r"(\d+)"] * dims) + r"\s*", text)
    if not m or min(int(g) for g in m.groups()) < minimum:
        bound = f" >= {minimum}" if minimum > 1 else ""
        raise ShapeError(f"must look like {example} ({labels}{bound}), got {text!r}")
    return tuple(int(g) for g in m.groups())
