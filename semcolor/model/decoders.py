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


class MaskRefiner(nn.Module):
    """The segmentation branch's finer stages, after the shared decoder's 1/4 features.

    ``stride`` 2: the 1/4 features (projected to 32 channels) upsampled x2 and concatenated with the encoder's
    stride-2 features (projected to 16), two 3x3 convs -> 1/2 resolution; ``stride`` 1: then upsampled x2 again and
    concatenated with the (normalized) L input itself, two 3x3 convs -> full resolution, where a mask can follow an
    edge of the photo. Few channels: the masks need edges, not semantics (those come from the shared decoder); at
    256 x 256 the model costs +0.8 GFLOPs at stride 2 and +1.9 at stride 1 over the head at 1/4.

    forward(x4 (B, C, h/4, w/4), f2 (B, C2, h/2, w/2), l_input (B, 1, h, w)) -> (B, out_channels, h/stride, w/stride).
    """

    def __init__(self, in_channels: int, skip_channels: int, stride: int, channels: tuple[int, int] = (32, 16)
                 ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"MaskRefiner stride must be 1 or 2; got {stride}")
        self.stride = stride
        half, full = channels
        self.project = nn.Conv2d(in_channels, half, 1, bias=False)
        self.project_skip = nn.Conv2d(skip_channels, half // 2, 1, bias=False)
        self.to_half = nn.Sequential(_conv_bn_relu(half + half // 2, half), _conv_bn_relu(half, half))
        self.to_full = (nn.Sequential(_conv_bn_relu(half + 1, full), _conv_bn_relu(full, full)) if stride == 1
                        else None)
        self.out_channels = half if stride == 2 else full

    def forward(self, x4: Tensor, f2: Tensor, l_input: Tensor) -> Tensor:
        x = F.interpolate(self.project(x4), size=f2.shape[-2:], mode="bilinear", align_corners=False)
        x = self.to_half(torch.cat([x, self.project_skip(f2)], dim=1))
        if self.to_full is not None:
            x = F.interpolate(x, size=l_input.shape[-2:], mode="bilinear", align_corners=False)
            x = self.to_full(torch.cat([x, l_input], dim=1))
        return x
