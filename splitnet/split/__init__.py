"""Cut a model's graph at any operation and know exactly which tensors cross."""

from splitnet.split._graph import CrossingTensor, SplitError, SplitGraph, SplitPoint, trace
from splitnet.split._kinds import KINDS

__all__ = ["KINDS", "CrossingTensor", "SplitError", "SplitGraph", "SplitPoint", "trace"]
