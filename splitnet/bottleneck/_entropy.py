"""The factorized prior: a learned, per-channel density for a quantized latent.

This is the univariate density model of Ballé et al. 2018 ("Variational image
compression with a scale hyperprior", appendix 6.1), following the design of
CompressAI's ``EntropyBottleneck``. Each channel has its own cumulative density
``c(x) = sigmoid(f_K(...f_1(x)))``, where each ``f_k`` is an affine map with a
softplus-constrained (so non-negative) matrix, followed, except for the last, by
``x + tanh(a_k) * tanh(x)``; the composition is monotone, so ``c`` is a CDF.

Three quantiles per channel (lower tail, median, upper tail) are learned by
:meth:`FactorizedPrior.aux_loss`: the median is the quantization offset, and the
tails bound the integer tables of :meth:`FactorizedPrior.cdf_tables`, which the
torch-free ``learned`` codec (:mod:`splitnet.codec._learned`) codes with.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from splitnet._errors import SplitnetError

__all__ = ["FactorizedPrior"]

LIKELIHOOD_BOUND = 1e-9


class FactorizedPrior(nn.Module):
    """A learned factorized (per-channel, i.i.d. within a channel) prior for a latent.

    Args:
        channels: latent channels (axis 1 of the inputs).
        filters: hidden widths of the per-channel density network.
        init_scale: the initial density's spread (the quantiles start at
            ``-init_scale, 0, init_scale``).
        tail_mass: the probability mass the learned tails leave outside the
            tables' range (half on each side).

    Example:
        >>> prior = FactorizedPrior(4)
        >>> y = torch.randn(1, 4, 8, 8) * 3
        >>> y_hat, likelihoods = prior(y)
        >>> loss = -torch.log2(likelihoods).sum() + prior.aux_loss()
        >>> tables = prior.eval().cdf_tables()  # for get_codec("learned", tables=tables)
    """

    def __init__(
        self,
        channels: int,
        *,
        filters: tuple[int, ...] = (3, 3, 3),
        init_scale: float = 10.0,
        tail_mass: float = 1e-9,
    ) -> None:
        super().__init__()
        if channels < 1 or not 0 < tail_mass < 1 or init_scale <= 0:
            raise SplitnetError(
                f"FactorizedPrior needs channels >= 1, 0 < tail_mass < 1 and init_scale > 0, "
                f"got {channels}, {tail_mass}, {init_scale}"
            )
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        self.init_scale = float(init_scale)
        self.tail_mass = float(tail_mass)
        widths = (1, *self.filters, 1)
        scale = self.init_scale ** (1 / (len(widths) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for k in range(len(widths) - 1):
            # softplus(init) = 1 / (scale * fan_out): the initial CDF spans about init_scale
            init = math.log(math.expm1(1 / scale / widths[k + 1]))
            self.matrices.append(
                nn.Parameter(torch.full((channels, widths[k + 1], widths[k]), init))
            )
            self.biases.append(nn.Parameter(torch.rand(channels, widths[k + 1], 1) - 0.5))
            if k < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[k + 1], 1)))
        init_q = torch.tensor([-self.init_scale, 0.0, self.init_scale])
        self.quantiles = nn.Parameter(init_q.repeat(channels, 1, 1))  # (C, 1, 3)
        target = math.log(2 / self.tail_mass - 1)
        self.register_buffer("target", torch.tensor([-target, 0.0, target]))

    # ---- the density ---------------------------------------------------------------

    @property
    def medians(self) -> Tensor:
        """The learned per-channel medians, ``(C,)``, detached."""
        return self.quantiles[:, 0, 1].detach()

    def _logits_cumulative(self, x: Tensor, stop_gradient: bool) -> Tensor:
        """The CDF's logits at ``x`` of shape ``(C, 1, M)``; ``stop_gradient`` freezes the network."""
        logits = x
        for k, (matrix, bias) in enumerate(zip(self.matrices, self.biases, strict=True)):
            if stop_gradient:
                matrix, bias = matrix.detach(), bias.detach()
            logits = torch.matmul(F.softplus(matrix), logits) + bias
            if k < len(self.factors):
                factor = self.factors[k].detach() if stop_gradient else self.factors[k]
                logits = logits + torch.tanh(factor) * torch.tanh(logits)
        return logits

    def _likelihood(self, v: Tensor, stop_gradient: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """``(c(v + .5) - c(v - .5), lower logits, upper logits)`` for ``v`` of shape ``(C, 1, M)``.

        The difference is taken on the side of the median where the sigmoids are
        small (CompressAI's sign trick), so that far tails do not cancel to zero.
        """
        lower = self._logits_cumulative(v - 0.5, stop_gradient)
        upper = self._logits_cumulative(v + 0.5, stop_gradient)
        sign = -torch.sign(lower + upper).detach()
        likelihood = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return likelihood, lower, upper

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Quantizes ``y`` (``N x C x ...``) and returns ``(y_hat, likelihoods)``.

        Training mode adds uniform noise in ``[-0.5, 0.5)`` (the differentiable
        proxy); eval mode rounds around the medians, ``round(y - m) + m``, which
        is exactly what the ``learned`` codec sends. The likelihoods have the shape
        of ``y`` and are at least 1e-9.
        """
        self._check_input(y)
        if self.training:
            y_hat = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        else:
            y_hat = self.quantize(y)
        return y_hat, self.likelihoods(y_hat)

    def quantize(self, y: Tensor) -> Tensor:
        """``round(y - medians) + medians`` (round half to even, as numpy's ``rint``)."""
        m = self.medians.reshape(1, -1, *([1] * (y.dim() - 2)))
        return torch.round(y - m) + m

    def likelihoods(self, y_hat: Tensor) -> Tensor:
        """The probability of each element of ``y_hat``'s unit bin, bounded below by 1e-9."""
        perm = (1, 0, *range(2, y_hat.dim()))
        v = y_hat.permute(perm)
        shape = v.shape
        lik, _, _ = self._likelihood(v.reshape(self.channels, 1, -1))
        return lik.reshape(shape).permute(perm).clamp_min(LIKELIHOOD_BOUND)

    @torch.no_grad()
    def bits(self, y: Tensor) -> Tensor:
        """The model's estimate (a scalar, no gradient) of the bits of eval-mode quantized ``y``."""
        self._check_input(y)
        return -torch.log2(self.likelihoods(self.quantize(y))).sum()

    def aux_loss(self) -> Tensor:
        """The quantile loss: moves the quantiles to the tails' and median's positions.

        It trains only :attr:`quantiles` (the density network is frozen in it);
        give it its own optimizer, as in CompressAI.
        """
        logits = self._logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()

    def _check_input(self, y: Tensor) -> None:
        if y.dim() < 2 or y.shape[1] != self.channels:
            raise SplitnetError(
                f"FactorizedPrior({self.channels}) takes N x {self.channels} x ... latents, "
                f"got shape {tuple(y.shape)}"
            )

    # ---- integer tables ------------------------------------------------------------

    @torch.no_grad()
    def cdf_tables(self, precision: int = 16) -> dict[str, Any]:
        """JSON-able integer tables for ``get_codec("learned", tables=...)``.

        Per channel ``c``, symbols ``0 .. L_c - 1`` stand for the integers
        ``offset[c] .. offset[c] + L_c - 1`` of ``round(y - medians[c])``, where the
        range is the learned quantiles' (``ceil`` of each tail's distance from the
        median). ``pmf[c]`` holds their integer frequencies, each at least 1 and
        summing to ``2**precision`` (the CDF is their cumulative sum). The mass
        the model puts beyond the range is added to the two edge symbols: at coding
        time values outside the range are clamped into it (CompressAI codes them with
        an escape code instead; clamping is simpler and, with a small tail mass,
        rare).

        Returns:
            ``{"precision": int, "medians": [float], "offset": [int], "pmf": [[int]]}``.

        Raises:
            SplitnetError: ``precision`` is not 1..16, or a channel's range has more
                than ``2**precision`` symbols.
        """
        if not isinstance(precision, int) or not 1 <= precision <= 16:
            raise SplitnetError(f"precision must be an integer 1..16, got {precision!r}")
        q = self.quantiles.detach()[:, 0, :].to(torch.float32)
        medians = q[:, 1]
        minima = torch.ceil(medians - q[:, 0]).clamp_min(0).to(torch.int64)
        maxima = torch.ceil(q[:, 2] - medians).clamp_min(0).to(torch.int64)
        lengths = minima + maxima + 1
        if int(lengths.max()) > 1 << precision:
            raise SplitnetError(
                f"a channel's range has {int(lengths.max())} symbols, more than 2**{precision}; "
                "train the quantiles (aux_loss) or raise the precision"
            )
        grid = torch.arange(int(lengths.max()), dtype=torch.float32)
        v = (grid[None, :] + (medians - minima)[:, None])[:, None, :]
        lik, lower, upper = self._likelihood(v, stop_gradient=True)
        pmf = lik[:, 0, :].to(torch.float64).numpy()
        below = torch.sigmoid(lower[:, 0, 0]).to(torch.float64).numpy()
        tables: list[list[int]] = []
        for c, n in enumerate(lengths.tolist()):
            p = pmf[c, :n].copy()
            p[0] += below[c]
            p[-1] += float(torch.sigmoid(-upper[c, 0, n - 1]))
            tables.append(quantize_pmf(p, precision))
        return {
            "precision": precision,
            "medians": [float(m) for m in medians.tolist()],
            "offset": [-int(m) for m in minima.tolist()],
            "pmf": tables,
        }


def quantize_pmf(p: np.ndarray, precision: int) -> list[int]:
    """Integer frequencies, each at least 1 and summing to ``2**precision``, close to ``p``.

    Every symbol gets 1; the remaining ``2**precision - len(p)`` go out in
    proportion to ``p``, the rounding remainder to the largest fractional parts.
    """
    total = 1 << precision
    free = total - p.size
    p = np.clip(np.nan_to_num(p, nan=0.0), 0.0, None)
    share = p / p.sum() * free if p.sum() > 0 else np.full(p.size, free / p.size)
    freq = np.floor(share).astype(np.int64)
    rest = free - int(freq.sum())
    freq[np.argsort(-(share - freq), kind="stable")[:rest]] += 1
    return (freq + 1).tolist()
