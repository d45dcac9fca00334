"""The planner's error."""

from __future__ import annotations

from splitnet._errors import SplitnetError

__all__ = ["PlanError"]


class PlanError(SplitnetError):
    """Input the planner cannot use: an unknown unit, files of different models or
    inputs, a measurement that is missing, or bounds that no candidate meets."""
