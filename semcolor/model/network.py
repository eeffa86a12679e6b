"""SegColorNet and SegColorUNet: a ResNet34 encoder, a decoder, a segmentation head and a color head.

Input: L / 100 in [0, 1], shape (B, 1, H, W), any H and W (padded to a multiple of 32 inside, cropped back).
Outputs: ``seg_logits`` (B, n_classes, H, W) and ``ab`` (B, 2, H, W) in model scale [-1, 1] (tanh); multiply by
``ModelConfig.ab_scale`` for LAB units.

Both heads run at 1/4 of the input resolution (where the decoder ends) and their outputs are bilinearly
upsampled: chroma and mask logits are smooth, full-resolution heads cost a third of the FLOPs for no gain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semcolor.model.config import ModelConfig
from semcolor.model.decoders import TransposedDecoder, UNetDecoder
from semcolor.model.encoder import ResNet34Encoder
from semcolor.model.heads import Head

ENCODER_STRIDE = 32
# ImageNet statistics of the luminance of RGB inputs (applied to L / 100 after channel adaptation).
_L_MEAN = 0.449
_L_STD = 0.226


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
        from semcolor.model.weights import load_encoder_weights

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
