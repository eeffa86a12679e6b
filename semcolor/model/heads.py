"""Prediction heads on the decoder's features (at 1/4 of the input resolution).

The two color heads share one contract: ``forward(features)`` -> raw output at the features' resolution,
``decode(raw, vividness)`` -> AB in LAB units at that resolution, ``pixel_loss(raw, ab, ...)`` -> per-pixel loss
at the resolution it is computed at. The model upsamples decoded AB, never raw bin logits (the heads stay cheap).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semcolor.model import color_bins


class Head(nn.Module):
    """3x3 conv -> ReLU -> 1x1 conv to ``out_channels``; optional tanh bound."""

    def __init__(self, in_channels: int, out_channels: int, bounded: bool = False) -> None:
        super().__init__()
        mid = max(in_channels // 2, 16)
        self.body = nn.Sequential(nn.Conv2d(in_channels, mid, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(mid, out_channels, 1))
        self.bounded = bounded

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return torch.tanh(y) if self.bounded else y


class RegressionColorHead(Head):
    """AB regressed directly: tanh output (B, 2, h, w) in [-1, 1] x ``ab_scale`` LAB units (the first model)."""

    def __init__(self, in_channels: int, ab_scale: float) -> None:
        super().__init__(in_channels, 2, bounded=True)
        self.ab_scale = ab_scale

    def decode(self, raw: Tensor, vividness: float | Tensor = 0.5) -> Tensor:
        """(B, 2, h, w) -> AB in LAB units; ``vividness`` is ignored (a regression has no distribution)."""
        return raw * self.ab_scale

    def pixel_loss(self, raw: Tensor, ab: Tensor, kind: str = "mse") -> Tensor:
        """raw (B, 2, h, w), target AB (B, 2, H, W) LAB units -> loss (B, H, W) in model scale, summed over a and b,
        after upsampling ``raw`` to the target's size."""
        pred = F.interpolate(raw.float(), size=ab.shape[-2:], mode="bilinear", align_corners=False)
        diff = pred - ab.float() / self.ab_scale
        if kind == "mse":
            return diff.square().sum(dim=1)
        if kind == "l1":
            return diff.abs().sum(dim=1)
        return F.smooth_l1_loss(diff, torch.zeros_like(diff), reduction="none", beta=0.05).sum(dim=1)


class BinnedColorHead(Head):
    """AB as a distribution over ``n_bins`` in-gamut bins: logits (B, Q, h, w), decoded by the annealed mean.

    Buffers saved with the weights (a checkpoint is self-contained): ``bins`` (Q, 2) centres in LAB units and
    ``prior`` (Q,) the smoothed empirical AB distribution of the training data.
    """

    def __init__(self, in_channels: int, n_bins: int, rebalance: float) -> None:
        super().__init__(in_channels, n_bins)
        self.rebalance = rebalance  # the mix of the loss's weights: decoding undoes or redoes them
        self.register_buffer("bins", torch.zeros(n_bins, 2))
        self.register_buffer("prior", torch.full((n_bins,), 1.0 / n_bins))

    def set_color_space(self, bins: Tensor, prior: Tensor) -> None:
        """Fill the bin centres (Q, 2) and the prior (Q,) of a fresh model (training computes them from its data)."""
        if bins.shape != self.bins.shape or prior.shape != self.prior.shape:
            raise ValueError(f"bins {tuple(bins.shape)} / prior {tuple(prior.shape)} do not fit a head of "
                             f"{len(self.bins)} bins")
        self.bins.copy_(bins)
        self.prior.copy_(prior)

    def decode(self, raw: Tensor, vividness: float | Tensor = 0.5) -> Tensor:
        """Logits (B, Q, h, w) -> AB (B, 2, h, w) LAB units at ``vividness`` (see
        :func:`semcolor.model.color_bins.decode_vivid`)."""
        return color_bins.decode_vivid(raw.float(), self.bins, self.prior, self.rebalance, vividness)

    def pixel_loss(self, raw: Tensor, ab: Tensor, kind: str = "mse") -> Tensor:
        """Logits (B, Q, h, w), target AB (B, 2, H, W) LAB units -> loss (B, h, w): cross-entropy against the
        soft-encoded target (AB area-averaged to h x w), weighted by the rebalancing weight of the target's bin.
        ``kind`` does not apply."""
        b, q, h, w = raw.shape
        target = F.adaptive_avg_pool2d(ab.float(), (h, w)).permute(0, 2, 3, 1).reshape(-1, 2)
        idx, weights = color_bins.soft_encode(target, self.bins)
        log_p = F.log_softmax(raw.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, q)
        ce = -(log_p.gather(1, idx) * weights).sum(dim=1)
        if self.rebalance < 1.0:
            ce = ce * color_bins.rebalance_weights(self.prior, self.rebalance).to(ce.device)[idx[:, 0]]
        return ce.view(b, h, w)
