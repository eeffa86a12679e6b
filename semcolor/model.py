"""SegColorNet and SegColorUNet: a ResNet34 encoder, a decoder, a segmentation head and a color head.

Input: L / 100 in [0, 1], shape (B, 1, H, W), any H and W (padded to a multiple of 32 inside, cropped back).
Outputs: ``seg_logits`` (B, n_classes, H, W) and ``ab`` (B, 2, H, W) in model scale [-1, 1] (tanh); multiply by
``semcolor.color.AB_SCALE`` for LAB units.

Both heads run at 1/4 of the input resolution (where the decoder ends) and their outputs are bilinearly
upsampled: chroma and mask logits are smooth, full-resolution heads cost a third of the FLOPs for no gain.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet34

ARCHS = ("resnet34", "unet")
ENCODER_STRIDE = 32
# ImageNet statistics of the luminance of RGB inputs (applied to L / 100 after channel adaptation).
_L_MEAN = 0.449
_L_STD = 0.226


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; saved as config.json beside the weights."""

    arch: str = "unet"
    n_classes: int = 2
    input_size: int = 128
    pretrained: str | None = None
    decoder_channels: tuple[int, ...] = field(default=(256, 128, 64))
    ab_scale: float = 110.0
    version: int = 1

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"Wrong arch {self.arch!r}; supported: {list(ARCHS)}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2 (background + foreground); got {self.n_classes}")
        if self.input_size < 32:
            raise ValueError(f"input_size must be >= 32 pixels; got {self.input_size}")
        self.decoder_channels = tuple(int(c) for c in self.decoder_channels)
        if len(self.decoder_channels) != 3:
            raise ValueError(f"decoder_channels needs 3 entries; got {self.decoder_channels}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["decoder_channels"] = list(self.decoder_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


class ResNet34Encoder(nn.Module):
    """ResNet34 on one input channel; returns features by resolution.

    forward: (B, 1, H, W) -> [1/2: 64, 1/4: 64, 1/8: 128, 1/16: 256, 1/32: 512] channels.
    """

    out_channels = (64, 64, 128, 256, 512)

    def __init__(self) -> None:
        super().__init__()
        net = resnet34(weights=None)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> list[Tensor]:
        f2 = self.stem(x)
        f4 = self.layer1(self.pool(f2))
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        f32 = self.layer4(f16)
        return [f2, f4, f8, f16, f32]


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


class SegColorModel(nn.Module):
    """Encoder -> decoder -> (segmentation head, color head); outputs at the input's size.

    forward: L (B, 1, H, W) in [0, 1] -> (seg_logits (B, n_classes, H, W), ab (B, 2, H, W) in [-1, 1]).
    """

    def __init__(self, config: ModelConfig, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.decoder = decoder
        self.seg_head = Head(decoder.out_channels, config.n_classes)
        self.color_head = Head(decoder.out_channels, 2, bounded=True)

    def forward(self, l_input: Tensor) -> tuple[Tensor, Tensor]:
        if l_input.ndim != 4 or l_input.shape[1] != 1:
            raise ValueError(f"input must be L with shape (B, 1, H, W); got {tuple(l_input.shape)}")
        h, w = l_input.shape[-2:]
        ph, pw = (-h) % ENCODER_STRIDE, (-w) % ENCODER_STRIDE
        x = (l_input - _L_MEAN) / _L_STD
        if ph or pw:
            mode = "reflect" if h > ph and w > pw else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        features = self.decoder(self.encoder(x))
        seg = self.seg_head(features)
        ab = self.color_head(features)
        size = (h + ph, w + pw)
        seg = F.interpolate(seg, size=size, mode="bilinear", align_corners=False)[..., :h, :w]
        ab = F.interpolate(ab, size=size, mode="bilinear", align_corners=False)[..., :h, :w]
        return seg, ab


class SegColorNet(SegColorModel):
    """The reference design: ResNet34 encoder, three transposed convs, dual heads (heads at 1/4 resolution)."""

    def __init__(self, config: ModelConfig) -> None:
        encoder = ResNet34Encoder()
        super().__init__(config, encoder, TransposedDecoder(encoder.out_channels[-1], config.decoder_channels))


class SegColorUNet(SegColorModel):
    """The U-Net variant: ResNet34 encoder with skip connections from the 1/16, 1/8 and 1/4 stages."""

    def __init__(self, config: ModelConfig) -> None:
        encoder = ResNet34Encoder()
        super().__init__(config, encoder, UNetDecoder(encoder.out_channels, config.decoder_channels))


def build_model(config: ModelConfig) -> SegColorModel:
    """Build the architecture named by ``config.arch`` and load ``config.pretrained`` encoder weights if set."""
    model: SegColorModel = SegColorNet(config) if config.arch == "resnet34" else SegColorUNet(config)
    if config.pretrained:
        from semcolor.weights import load_encoder_weights

        load_encoder_weights(model.encoder, config.pretrained)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def gflops(model: nn.Module, size: int) -> float:
    """Forward GFLOPs (multiply-adds x 2) for one (1, 1, size, size) input, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, size, size))
    return counter.get_total_flops() / 1e9


def forward_throughput(model: nn.Module, size: int, batch: int, threads: int, seconds: float = 3.0) -> float:
    """Images/s of eval-mode forward passes on CPU at (batch, 1, size, size) with ``threads`` torch threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model.eval()
        x = torch.rand(batch, 1, size, size)
        with torch.inference_mode():
            model(x)  # warm-up
            n, start = 0, time.perf_counter()
            while True:
                model(x)
                n += batch
                elapsed = time.perf_counter() - start
                if elapsed >= seconds and n >= 2 * batch:
                    return n / elapsed
    finally:
        torch.set_num_threads(previous)


def model_info(size: int = 256, threads: int = 2, batches: tuple[int, ...] = (1, 16)) -> list[dict]:
    """Parameters, GFLOPs per image and CPU images/s for both architectures (weights=None)."""
    rows = []
    for arch in ARCHS:
        model = build_model(ModelConfig(arch=arch, input_size=size))
        row = {"arch": arch, "size": size, "params_m": count_parameters(model) / 1e6, "gflops": gflops(model, size)}
        for b in batches:
            row[f"img_per_s_b{b}"] = forward_throughput(model, size, b, threads)
        rows.append(row)
    return rows


def run_info(args: argparse.Namespace) -> int:
    """`semcolor info`: print a table of model figures; optionally write JSON."""
    rows = model_info(args.size, args.threads)
    keys = list(rows[0])
    print(" | ".join(f"{k:>14}" for k in keys))
    for row in rows:
        print(" | ".join(f"{v:>14.2f}" if isinstance(v, float) else f"{v!s:>14}" for v in row.values()))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0
