"""Prediction heads on the decoder's features (at 1/4 of the input resolution)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


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
