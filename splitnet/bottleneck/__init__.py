"""The learned bottleneck at the split point (torch; server and training side).

At a cut of a trained model, a small :class:`Encoder` (in the device's head)
maps every crossing tensor to one low-channel latent, :class:`FactorizedPrior`
is the latent's entropy model (its integer tables drive the torch-free
``learned`` codec), and a :class:`Decoder` (in the server's tail) gives the
tail the tensors it takes. :func:`train_bottleneck` trains it in two stages
(distillation + rate, then the task); ``splitnet export --bottleneck`` turns
the checkpoint into a bundle the stock device daemon and server run.

Example:
    >>> from splitnet.bottleneck import BottleneckTrainConfig, train_bottleneck
    >>> train_bottleneck(BottleneckTrainConfig(
    ...     "teacher.pt", "encoder.block2.pool", "bn.pt", beta=0.01))
"""

from __future__ import annotations

from splitnet.bottleneck._entropy import FactorizedPrior
from splitnet.bottleneck._errors import BottleneckError
from splitnet.bottleneck._module import (
    DECODERS,
    ENCODERS,
    LATENT_POINT,
    BottleneckConfig,
    BottleneckedModel,
    Decoder,
    Encoder,
    PyramidDecoder,
    PyramidEncoder,
    bottleneck_macs,
    plan_strides,
)
from splitnet.bottleneck._train import (
    BOTTLENECK_FORMAT,
    BottleneckTrainConfig,
    BottleneckTrainResult,
    build_bottleneck,
    load_bottleneck,
    read_bottleneck,
    slim_bottleneck,
    train_bottleneck,
)

__all__ = [
    "BOTTLENECK_FORMAT",
    "LATENT_POINT",
    "BottleneckConfig",
    "BottleneckError",
    "BottleneckTrainConfig",
    "BottleneckTrainResult",
    "BottleneckedModel",
    "DECODERS",
    "ENCODERS",
    "Decoder",
    "Encoder",
    "FactorizedPrior",
    "PyramidDecoder",
    "PyramidEncoder",
    "bottleneck_macs",
    "build_bottleneck",
    "load_bottleneck",
    "plan_strides",
    "read_bottleneck",
    "slim_bottleneck",
    "train_bottleneck",
]
