"""Decoders from the encoder's features to 1/4 of the input resolution: the reference's transposed convs and a
U-Net with skip connections. Each takes the encoder's ``out_channels`` and exposes its own ``out_channels``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TransposedDecoder(nn.Module):
    """The reference decoder: three stride-2 transposed convs from 1/32 to 1/4 resolution, no skips."""

    def __init__(self, in_channels: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in channels:
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
            cin = cout
        self.blocks = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.blocks(features[-1])


class UNetDecoder(nn.Module):
    """U-Net decoder: upsample x2, concatenate the encoder skip, two 3x3 convs; 1/32 -> 1/4 resolution."""

    def __init__(self, encoder_channels: tuple[int, ...], channels: tuple[int, ...]) -> None:
        super().__init__()
        skips = encoder_channels[-2::-1][: len(channels)]  # 1/16, 1/8, 1/4
        cin = encoder_channels[-1]
        self.blocks = nn.ModuleList()
        for skip, cout in zip(skips, channels):
            self.blocks.append(nn.Sequential(_conv_bn_relu(cin + skip, cout), _conv_bn_relu(cout, cout)))
            cin = cout
        self.out_channels = cin

    def forward(self, features: list[Tensor]) -> Tensor:
        x = features[-1]
        skips = features[-2::-1]
        for block, skip in zip(self.blocks, skips):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return x
