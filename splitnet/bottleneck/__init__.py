"""The learned bottleneck at the split point (torch; server and training side).

:class:`FactorizedPrior` is the entropy model of the latent that the device
sends; its integer tables drive the torch-free ``learned`` codec.
"""

from __future__ import annotations

from splitnet.bottleneck._entropy import FactorizedPrior

__all__ = ["FactorizedPrior"]
