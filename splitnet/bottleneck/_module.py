"""The bottleneck at a cut: an encoder on the device, a decoder on the server.

At a cut of a traced model, the crossing tensors (for a U-Net: the pool output
and every skip still waiting for the decoder) are mapped by :class:`Encoder`
to one low-channel latent at a coarse resolution, coded with the learned
entropy model (:class:`~splitnet.bottleneck.FactorizedPrior`), and mapped back
by :class:`Decoder` to tensors of the crossing shapes, which the tail takes.

The encoder is made of what the Myriad X profile runs (convolutions, ReLU,
concatenation): each crossing tensor goes through one patchifying convolution
(kernel = stride = its downsampling factor to the latent), the branches are
concatenated and fused by a 3x3 and a 1x1 convolution. That keeps its MACs a
small part of the head's (``splitnet profile`` reports it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from splitnet.bottleneck._errors import BottleneckError

__all__ = [
    "LATENT_POINT",
    "BottleneckConfig",
    "BottleneckedModel",
    "DECODERS",
    "ENCODERS",
    "Decoder",
    "Encoder",
    "PyramidEncoder",
    "make_encoder",
    "PyramidDecoder",
    "make_decoder",
    "bottleneck_macs",
    "plan_strides",
]

# the encoder and decoder designs, by BottleneckConfig.encoder and .decoder
ENCODERS = ("pyramid", "patch")
DECODERS = ("pyramid", "branches")

# the split point of a BottleneckedModel where the latent crosses: the encoder's last op
LATENT_POINT = "encoder.out"


@dataclass(frozen=True)
class BottleneckConfig:
    """The shape of a bottleneck.

    Attributes:
        latent_channels: channels of the latent that crosses.
        latent_stride: the latent's downsampling relative to the model input
            (8: a 3x64x384 frame gives an 8x48 latent); ``None`` picks the
            coarsest crossing tensor's stride, at least 8.
        hidden: channels of the encoder's inner layers (the device runs them).
        decoder_hidden: channels of the decoder's (the server runs them);
            ``None``: ``hidden``.
        encoder: ``"pyramid"`` (the finest tensor goes down by strided 2x2
            convolutions, taking in each coarser tensor at its scale) or
            ``"patch"`` (one patchifying convolution per tensor: the first
            design, which checkpoints without this key use).
        decoder: ``"pyramid"`` (one trunk that upsamples step by step, 3x3
            convolutions at every scale, and emits each crossing tensor at its
            own scale) or ``"branches"`` (one transposed-convolution branch per
            tensor: the first design, which checkpoints without this key use).
    """

    latent_channels: int = 8
    latent_stride: int | None = None
    hidden: int = 32
    decoder_hidden: int | None = None
    decoder: str = "pyramid"
    encoder: str = "pyramid"

    def __post_init__(self) -> None:
        if self.latent_channels < 1 or self.hidden < 1 or (self.decoder_hidden or 1) < 1:
            raise BottleneckError("latent_channels, hidden and decoder_hidden must be >= 1")
        if self.latent_stride is not None and not _is_power_of_two(self.latent_stride):
            raise BottleneckError(f"latent_stride must be a power of 2, got {self.latent_stride}")
        if self.encoder not in ENCODERS:
            raise BottleneckError(
                f"unknown encoder {self.encoder!r}; choose from {', '.join(ENCODERS)}"
            )
        if self.decoder not in DECODERS:
            raise BottleneckError(
                f"unknown decoder {self.decoder!r}; choose from {', '.join(DECODERS)}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def _is_power_of_two(n: int) -> bool:
    return isinstance(n, int) and n >= 1 and n & (n - 1) == 0


def plan_strides(
    shapes: Sequence[tuple[int, ...]], input_hw: tuple[int, int], latent_stride: int | None
) -> tuple[int, list[int]]:
    """The latent stride and, per crossing tensor, its downsampling factor to the latent.

    Raises:
        BottleneckError: a tensor that is not N x C x H x W, or whose resolution
            is not the input's divided by a power of 2 no coarser than the latent.
    """
    strides = []
    for shape in shapes:
        if len(shape) != 4:
            raise BottleneckError(
                f"a bottleneck takes N x C x H x W crossing tensors, got shape {list(shape)}; "
                "cut at a convolutional layer"
            )
        sh, sw = input_hw[0] / shape[2], input_hw[1] / shape[3]
        if sh != sw or not float(sh).is_integer() or not _is_power_of_two(int(sh)):
            raise BottleneckError(
                f"crossing tensor of shape {list(shape)} is not the {input_hw[0]}x{input_hw[1]} "
                "input downsampled by a power of 2"
            )
        strides.append(int(sh))
    stride = latent_stride or max(8, *strides)
    if stride < max(strides):
        raise BottleneckError(
            f"latent_stride {stride} is finer than a crossing tensor (stride {max(strides)})"
        )
    if input_hw[0] % stride or input_hw[1] % stride:
        raise BottleneckError(f"the {input_hw[0]}x{input_hw[1]} input is not divisible by {stride}")
    return stride, [stride // s for s in strides]


class Encoder(nn.Module):
    """Crossing tensors -> one latent (device side).

    Args:
        channels: channels of each crossing tensor.
        factors: each tensor's downsampling factor to the latent (1 = same size).
        config: the bottleneck's shape.
    """

    def __init__(
        self, channels: Sequence[int], factors: Sequence[int], config: BottleneckConfig
    ) -> None:
        super().__init__()
        width = max(4, config.hidden // len(channels))
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, width, kernel_size=f, stride=f), nn.ReLU())
            for c, f in zip(channels, factors, strict=True)
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(width * len(channels), config.hidden, 3, padding=1), nn.ReLU()
        )
        self.out = nn.Conv2d(config.hidden, config.latent_channels, 1)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        parts = [branch(t) for branch, t in zip(self.branches, tensors, strict=True)]
        return self.out(self.fuse(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]))


class PyramidEncoder(nn.Module):
    """Crossing tensors -> one latent, coarsening step by step (device side).

    The finest tensor goes down by strided 2x2 convolutions with ReLU (each
    input value is read once per output channel, as in a patchifying
    convolution, so the MACs stay a small part of the head's); at each scale
    the tensors that live there are concatenated in. The width doubles with
    every step down, up to ``hidden`` at the latent's scale, where a 3x3 and a
    1x1 convolution make the latent. Only convolutions, ReLU and concatenation:
    what the Myriad X profile runs.

    Args: as :class:`Encoder`.
    """

    def __init__(
        self, channels: Sequence[int], factors: Sequence[int], config: BottleneckConfig
    ) -> None:
        super().__init__()
        levels = int(math.log2(max(factors)))
        self.levels = [int(math.log2(f)) for f in factors]
        self.downs = nn.ModuleList()
        width = 0  # what comes down from the finer scales
        for level in range(levels, 0, -1):
            width += sum(c for c, lv in zip(channels, self.levels, strict=True) if lv == level)
            out = max(8, config.hidden >> (level - 1))
            self.downs.append(nn.Sequential(nn.Conv2d(width, out, 2, stride=2), nn.ReLU()))
            width = out
        width += sum(c for c, lv in zip(channels, self.levels, strict=True) if lv == 0)
        self.fuse = nn.Sequential(nn.Conv2d(width, config.hidden, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(config.hidden, config.latent_channels, 1)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        z = None
        top = len(self.downs)
        for step, level in enumerate(range(top, -1, -1)):
            here = [t for t, lv in zip(tensors, self.levels, strict=True) if lv == level]
            parts = ([z] if z is not None else []) + here
            z = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            if step < top:
                z = self.downs[step](z)
        return self.out(self.fuse(z))


def make_encoder(
    channels: Sequence[int], factors: Sequence[int], config: BottleneckConfig
) -> nn.Module:
    """The encoder that ``config.encoder`` names."""
    cls = PyramidEncoder if config.encoder == "pyramid" else Encoder
    return cls(channels, factors, config)


class Decoder(nn.Module):
    """Latent -> tensors of the crossing shapes (server side).

    Args:
        channels: channels of each crossing tensor.
        factors: each tensor's upsampling factor from the latent.
        nonnegative: per tensor, whether the teacher's values are never negative
            (then a ReLU ends its branch, as the ReLU that made them did).
        config: the bottleneck's shape.
    """

    def __init__(
        self,
        channels: Sequence[int],
        factors: Sequence[int],
        nonnegative: Sequence[bool],
        config: BottleneckConfig,
    ) -> None:
        super().__init__()
        h = config.decoder_hidden or config.hidden
        self.stem = nn.Sequential(nn.Conv2d(config.latent_channels, h, 3, padding=1), nn.ReLU())
        self.branches = nn.ModuleList(
            nn.Sequential(
                *(_upsample(h, f) if f > 1 else ()),
                nn.Conv2d(h, h, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(h, c, 3, padding=1),
                *((nn.ReLU(),) if pos else ()),
            )
            for c, f, pos in zip(channels, factors, nonnegative, strict=True)
        )

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = self.stem(latent)
        return tuple(branch(z) for branch in self.branches)


class PyramidDecoder(nn.Module):
    """Latent -> tensors of the crossing shapes, through one trunk (server side).

    The trunk starts at the latent's scale with a residual 3x3 block and goes
    up one factor of 2 at a time (a transposed 2x2 convolution, then a 3x3
    convolution, so that neighbouring latent cells mix at every scale, which
    per-tensor transposed convolutions cannot do). At each scale where crossing
    tensors live, a 3x3 head emits them. The width halves with every step up,
    but stays at least the widest tensor emitted there (and 16).

    Args: as :class:`Decoder`.
    """

    def __init__(
        self,
        channels: Sequence[int],
        factors: Sequence[int],
        nonnegative: Sequence[bool],
        config: BottleneckConfig,
    ) -> None:
        super().__init__()
        h = config.decoder_hidden or config.hidden
        levels = int(math.log2(max(factors)))
        widths = []
        for level in range(levels + 1):
            emitted = [c for c, f in zip(channels, factors, strict=True) if f == 1 << level]
            widths.append(max(16, h >> level, *emitted))
        self.stem = nn.Sequential(
            nn.Conv2d(config.latent_channels, widths[0], 3, padding=1), nn.ReLU()
        )
        self.block = nn.Sequential(
            nn.Conv2d(widths[0], widths[0], 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(widths[0], widths[0], 3, padding=1),
        )
        self.ups = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(widths[i], widths[i + 1], 2, stride=2),
                nn.ReLU(),
                nn.Conv2d(widths[i + 1], widths[i + 1], 3, padding=1),
                nn.ReLU(),
            )
            for i in range(levels)
        )
        self.levels = [int(math.log2(f)) for f in factors]
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[lv], c, 3, padding=1), *((nn.ReLU(),) if pos else ()))
            for c, lv, pos in zip(channels, self.levels, nonnegative, strict=True)
        )

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = self.stem(latent)
        z = torch.relu(z + self.block(z))
        scales = [z]
        for up in self.ups:
            scales.append(up(scales[-1]))
        return tuple(head(scales[lv]) for head, lv in zip(self.heads, self.levels, strict=True))


def make_decoder(
    channels: Sequence[int],
    factors: Sequence[int],
    nonnegative: Sequence[bool],
    config: BottleneckConfig,
) -> nn.Module:
    """The decoder that ``config.decoder`` names."""
    cls = PyramidDecoder if config.decoder == "pyramid" else Decoder
    return cls(channels, factors, nonnegative, config)


def _upsample(channels: int, factor: int) -> tuple[nn.Module, ...]:
    """Transposed 2x convolutions with ReLU, ``log2(factor)`` of them."""
    layers: list[nn.Module] = []
    for _ in range(int(math.log2(factor))):
        layers += [nn.ConvTranspose2d(channels, channels, 2, stride=2), nn.ReLU()]
    return tuple(layers)


class BottleneckedModel(nn.Module):
    """``tail(*decoder(encoder(*head(x))))``: the model with a bottleneck at its cut.

    Traced and split at :data:`LATENT_POINT`, exactly one tensor crosses: the
    latent. The rounding the entropy model assumes happens in the device's
    codec; in eval mode :meth:`forward` runs the latent unrounded unless
    ``prior`` is given, then it rounds as the codec does.

    Attributes:
        head, tail: the teacher's split (fx graph modules).
        encoder, decoder: the bottleneck.
        prior: the entropy model of the latent (a ``FactorizedPrior``), or ``None``.
        splitnet_info, splitnet_name: the teacher's.
    """

    def __init__(
        self,
        head: nn.Module,
        encoder: Encoder,
        decoder: Decoder,
        tail: nn.Module,
        *,
        prior: nn.Module | None = None,
        info=None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.head, self.encoder, self.decoder, self.tail = head, encoder, decoder, tail
        self.prior = prior
        self.splitnet_info = info
        self.splitnet_name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.encoder(*self.head(x))
        if self.prior is not None:
            y, _ = self.prior(y)
        return self.tail(*self.decoder(y))


@torch.no_grad()
def bottleneck_macs(model: BottleneckedModel, input_shape: tuple[int, int, int]) -> dict:
    """MACs of the teacher's head and of the encoder the device runs after it.

    Counted by ``torch.utils.flop_counter`` (FLOPs halved), batch 1.

    Returns:
        ``{"head_macs", "encoder_macs", "encoder_share"}``: the share is what the
        encoder adds to the head, ``encoder_macs / head_macs``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, *input_shape)
    with FlopCounterMode(display=False) as head:
        crossing = model.head(x)
    with FlopCounterMode(display=False) as encoder:
        model.encoder(*crossing)
    h, e = head.get_total_flops() // 2, encoder.get_total_flops() // 2
    return {"head_macs": h, "encoder_macs": e, "encoder_share": e / h if h else float("inf")}
