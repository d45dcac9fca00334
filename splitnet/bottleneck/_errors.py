"""The bottleneck's error."""

from __future__ import annotations

from splitnet._errors import SplitnetError

__all__ = ["BottleneckError"]


class BottleneckError(SplitnetError):
    """A bottleneck that cannot be built, trained or used: a bad option, or a checkpoint
    for another model, split point or input shape."""
