"""SegColorNet and SegColorUNet: a ResNet34 encoder, a decoder, a segmentation head and a color head.

Input: L / 100 in [0, 1], shape (B, 1, H, W), any H and W (padded to a multiple of 32 inside, cropped back).
``forward`` (training) -> ``seg_logits`` (B, n_classes, H, W) and the color head's raw output at the decoder's
resolution (B, K, H'/4, W'/4) of the padded size (K = 2 tanh AB for the regression head, Q bin logits for the bins
head); ``infer`` -> ``seg_logits`` and ``ab`` (B, 2, H, W) in LAB units, decoded at the vividness asked for.

The color head runs at 1/4 of the input resolution (where the shared decoder ends) and its decoded AB is bilinearly
upsampled: chroma is smooth, and a full-resolution color head would cost a third of the FLOPs for no gain. The
segmentation head runs at ``config.seg_stride``: at 1/4 like the color head (version-2 models), or after a light
mask branch (:class:`semcolor.model.decoders.MaskRefiner`) at 1/2 (the encoder's stride-2 features) or at full
resolution (the L image itself), so that a mask can follow an edge; its logits are upsampled to the input's size.
With ``config.seg_decoder == "own"`` the segmentation path starts from a decoder of its own (the same kind, half the
channels) on the same encoder features, so that the two heads share the encoder and nothing after it.
With ``seg_to_color`` the color head also sees the segmentation probabilities (pooled to its 1/4 resolution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semcolor.core import ab_grid
from semcolor.model.config import DEFAULT_VIVIDNESS, ModelConfig
from semcolor.model.decoders import MaskRefiner, TransposedDecoder, UNetDecoder
from semcolor.model.encoder import ResNet34Encoder
from semcolor.model.heads import BinnedColorHead, Head, RegressionColorHead

ENCODER_STRIDE = 32
# ImageNet statistics of the luminance of RGB inputs (applied to L / 100 after channel adaptation).
_L_MEAN = 0.449
_L_STD = 0.226


def _upsample_crop(x: Tensor, h: int, w: int) -> Tensor:
    """Decoder-resolution maps (B, K, h', w') of the padded input -> (B, K, h, w): bilinear to the padded size, crop."""
    size = (h + (-h) % ENCODER_STRIDE, w + (-w) % ENCODER_STRIDE)
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x[..., :h, :w]


class SegColorModel(nn.Module):
    """Encoder -> decoder -> (segmentation head, color head); see the module docstring for the shapes."""

    def __init__(self, config: ModelConfig, encoder: nn.Module, decoder: nn.Module,
                 seg_decoder: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.decoder = decoder
        self.seg_decoder = seg_decoder
        seg_features = (decoder if seg_decoder is None else seg_decoder).out_channels
        self.mask_refiner = (MaskRefiner(seg_features, encoder.out_channels[0], config.seg_stride)
                             if config.seg_stride < 4 else None)
        seg_in = seg_features if self.mask_refiner is None else self.mask_refiner.out_channels
        self.seg_head = Head(seg_in, config.n_classes)
        color_in = decoder.out_channels + (config.n_classes if config.seg_to_color else 0)
        self.color_head: RegressionColorHead | BinnedColorHead = (
            BinnedColorHead(color_in, config.n_bins, config.rebalance) if config.color_head == "bins"
            else RegressionColorHead(color_in, config.ab_scale))

    def forward(self, l_input: Tensor) -> tuple[Tensor, Tensor]:
        """L (B, 1, H, W) -> (seg_logits (B, C, H, W), raw color output (B, K, h', w') at the decoder's resolution)."""
        if l_input.ndim != 4 or l_input.shape[1] != 1:
            raise ValueError(f"input must be L with shape (B, 1, H, W); got {tuple(l_input.shape)}")
        h, w = l_input.shape[-2:]
        ph, pw = (-h) % ENCODER_STRIDE, (-w) % ENCODER_STRIDE
        x = (l_input - _L_MEAN) / _L_STD
        if ph or pw:
            mode = "reflect" if h > ph and w > pw else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        encoded = self.encoder(x)
        features = self.decoder(encoded)
        seg_features = features if self.seg_decoder is None else self.seg_decoder(encoded)
        if self.mask_refiner is None:
            seg_low = self.seg_head(seg_features)
        else:
            seg_low = self.seg_head(self.mask_refiner(seg_features, encoded[0], x))
        if self.config.seg_to_color:
            probs = seg_low.float().softmax(dim=1).to(features.dtype)
            if self.mask_refiner is not None:  # the padded size is a multiple of 32: pooling is exact
                probs = F.avg_pool2d(probs, kernel_size=4 // self.config.seg_stride)
            features = torch.cat([features, probs], dim=1)
        return _upsample_crop(seg_low, h, w), self.color_head(features)

    def decode_ab(self, color_raw: Tensor, h: int, w: int, vividness: float | Tensor) -> Tensor:
        """Raw color output (B, K, h', w') -> AB (B, 2, h, w) in LAB units: decoded at the decoder's resolution
        (:func:`semcolor.model.color_bins.decode_vivid`; vividness a float or (B,) per image), then upsampled."""
        return _upsample_crop(self.color_head.decode(color_raw, vividness), h, w)

    def infer(self, l_input: Tensor, vividness: float | Tensor = DEFAULT_VIVIDNESS
              ) -> tuple[Tensor, Tensor]:
        """L (B, 1, H, W) -> (seg_logits (B, C, H, W), ab (B, 2, H, W) LAB units). Vividness in [0, 1] (bins head
        only; the regression head ignores it)."""
        seg, raw = self(l_input)
        return seg, self.decode_ab(raw, *l_input.shape[-2:], vividness)


def _halved(channels: tuple[int, ...]) -> tuple[int, ...]:
    """The segmentation's own decoder: half of the shared decoder's channels per stage (masks need fewer)."""
    return tuple(max(c // 2, 8) for c in channels)


class SegColorNet(SegColorModel):
    """The reference design: ResNet34 encoder, three transposed convs, dual heads (heads at 1/4 resolution)."""

    def __init__(self, config: ModelConfig) -> None:
        encoder = ResNet34Encoder()
        super().__init__(config, encoder, TransposedDecoder(encoder.out_channels[-1], config.decoder_channels),
                         TransposedDecoder(encoder.out_channels[-1], _halved(config.decoder_channels))
                         if config.seg_decoder == "own" else None)


class SegColorUNet(SegColorModel):
    """The U-Net variant: ResNet34 encoder with skip connections from the 1/16, 1/8 and 1/4 stages."""

    def __init__(self, config: ModelConfig) -> None:
        encoder = ResNet34Encoder()
        super().__init__(config, encoder, UNetDecoder(encoder.out_channels, config.decoder_channels),
                         UNetDecoder(encoder.out_channels, _halved(config.decoder_channels))
                         if config.seg_decoder == "own" else None)


def build_model(config: ModelConfig) -> SegColorModel:
    """Build the architecture named by ``config.arch`` and load ``config.pretrained`` encoder weights if set; a bins
    color head starts with the in-gamut bins and a uniform prior."""
    model: SegColorModel = SegColorNet(config) if config.arch == "resnet34" else SegColorUNet(config)
    if isinstance(model.color_head, BinnedColorHead) and config.n_bins == len(ab_grid.gamut_bins()):
        # in-gamut bins and a uniform prior until training sets its data's prior (or a checkpoint loads its own)
        model.color_head.set_color_space(ab_grid.gamut_bins(), torch.full((config.n_bins,), 1.0 / config.n_bins))
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
