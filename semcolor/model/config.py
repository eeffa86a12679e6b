"""ModelConfig (everything needed to rebuild a model; saved as config.json beside the weights) and LossConfig.

Plain dataclasses without torch, so commands can declare their options without loading it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from semcolor.options import option

ARCHS = ("resnet34", "unet")
COLOR_HEADS = ("regression", "bins")
SEG_STRIDES = (4, 2, 1)
"""Where the segmentation head predicts, as the input's stride: 4 = the decoder's 1/4 resolution (the heads of
version-2 models), 2 = one more decoder stage fed by the encoder's stride-2 features, 1 = and one more at full
resolution fed by the L image itself (see :class:`semcolor.model.decoders.MaskRefiner`)."""
SEG_DECODERS = ("shared", "own")
"""Which decoder the segmentation path starts from: ``shared`` = the colour head's decoder (one decoder, the heads
compete for its features), ``own`` = a decoder of its own at half the channels from the same encoder features
(the heads share only the encoder)."""
GAMUT_BINS = 261
"""In-gamut AB bins at grid 10 (``len(semcolor.core.ab_grid.gamut_bins())``, checked by a test)."""


VIVIDNESS_RANGE = (0.0, 1.0)
DEFAULT_VIVIDNESS = 0.45
"""Inference default (``--vividness``, ``?vividness=``); chosen by the quality table (README): near where the bins
model's colorfulness crosses 0.6 of the truth's at the gray input's PSNR."""


def check_vividness(vividness: float) -> float:
    """``vividness`` as a float, or ValueError naming the valid range."""
    low, high = VIVIDNESS_RANGE
    if not low <= float(vividness) <= high:
        raise ValueError(f"vividness must be in [{low}, {high}] (0 = muted and most accurate, 1 = vivid); got "
                         f"{vividness}")
    return float(vividness)


def vividness_option() -> Any:
    """The ``--vividness`` option of every command that colorizes."""
    return option(DEFAULT_VIVIDNESS, help="bins-head models: 0 = the calibrated mean of the plausible colors (muted, "
                  "most accurate), 0.5 = as trained, 1 = rare saturated colors favoured (vivid); see "
                  "semcolor.model.color_bins.decode_vivid. Regression models ignore it")


ENGINES = ("torch", "onnxruntime")
"""The inference engines a model runs on."""
BACKENDS = ("auto", *ENGINES)
"""Inference backends to ask for: an engine, or ``auto`` = onnxruntime on CPU, torch on CUDA (the fastest measured
on each)."""
PRECISIONS = ("auto", "bf16", "fp32")
"""Compute precision of the torch forward: ``auto`` = bf16 autocast on CUDA, fp32 on CPU; ``bf16`` runs autocast on
CPU too (how the GPU branch is tested on every machine)."""
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
"""Memory format of the model and its input: ``auto`` = channels_last on CUDA, contiguous on CPU (a torch predictor
in bf16 runs channels_last on CPU too: :func:`semcolor.model.torch_predictor.load_torch_predictor`)."""
CONFIG_NAME = "config.json"
"""A checkpoint directory's model config (this class as JSON)."""
WEIGHTS_NAME = "model.safetensors"
"""A checkpoint directory's weights."""


def precision_option() -> Any:
    """The ``--precision`` option of the commands that run the model (bulk colorize, serve)."""
    return option("auto", choices=PRECISIONS, help="the torch forward's precision: auto (bf16 autocast on CUDA, "
                  "fp32 on CPU), bf16 (autocast and channels_last on CPU too: on a CPU with AMX about 1.6x "
                  "onnxruntime's images/s, with AVX-512 BF16 1.0-1.45x, `semcolor bench model`; outputs within 2 "
                  "LAB units of fp32, and a key's bytes may differ by 1 from a rerun in another batch), or fp32. "
                  "bf16 runs on the torch backend (--backend auto then picks torch on CPU nodes too)")


def backend_option() -> Any:
    """The ``--backend`` option of the commands that run the model on Ray (bulk colorize actors)."""
    return option("auto", choices=BACKENDS, help="inference backend: auto (onnxruntime on CPU nodes, torch on CUDA "
                  "nodes: the fastest measured on each), torch, or onnxruntime (CPU; the checkpoint is exported to "
                  "ONNX and verified against torch once per node, at the first actor's start; a .onnx file from "
                  "`semcolor export` is taken as it is). CUDA nodes always run torch")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; saved as config.json beside the weights."""

    arch: str = "unet"
    n_classes: int = 2
    input_size: int = 128
    pretrained: str | None = None
    decoder_channels: tuple[int, ...] = field(default=(256, 128, 64))
    ab_scale: float = 110.0
    """LAB a/b units per unit of the regression color head's tanh output."""
    color_head: str = "bins"
    """``regression`` (AB by tanh) or ``bins`` (a distribution over in-gamut AB bins; see semcolor.model.color_bins)."""
    n_bins: int = GAMUT_BINS
    """Bins of the ``bins`` head (261 at grid 10); their centres and the AB prior are buffers in the weights."""
    seg_to_color: bool = False
    """The color head also sees the segmentation head's probabilities (the segmentation -> color link)."""
    rebalance: float = 0.8
    """The bins head's rebalancing mix: its loss weighs targets by it, its decoding undoes or redoes those weights."""
    seg_stride: int = 1
    """Stride of the segmentation logits (one of :data:`SEG_STRIDES`): 4 = the decoder's 1/4 resolution, 2 = half,
    1 = full resolution (finer masks that can follow an edge)."""
    seg_decoder: str = "shared"
    """Where the segmentation path starts (one of :data:`SEG_DECODERS`): the colour head's decoder, or its own."""
    version: int = 3

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
        if self.color_head not in COLOR_HEADS:
            raise ValueError(f"Wrong color_head {self.color_head!r}; supported: {list(COLOR_HEADS)}")
        if self.color_head == "bins" and self.n_bins < 2:
            raise ValueError(f"the bins color head needs n_bins >= 2; got {self.n_bins}")
        if not 0.0 < self.rebalance <= 1.0:
            raise ValueError(f"rebalance must be in (0, 1] (1 = no rebalancing); got {self.rebalance}")
        if self.seg_stride not in SEG_STRIDES:
            raise ValueError(f"Wrong seg_stride {self.seg_stride!r}; supported: {list(SEG_STRIDES)}")
        if self.seg_decoder not in SEG_DECODERS:
            raise ValueError(f"Wrong seg_decoder {self.seg_decoder!r}; supported: {list(SEG_DECODERS)}")

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
        if d.get("version", 1) < 2:  # version 1 checkpoints predate the bins head: they regress AB
            d = {**d, "color_head": "regression"}
        if d.get("version", 1) < 3:  # versions 1-2 predate the finer mask: segmentation at 1/4
            d = {**d, "seg_stride": 4}
        return cls(**d)


COLOR_MASKS = ("all", "foreground")
COLOR_LOSSES = ("mse", "l1", "huber")
MASK_LOSSES = ("none", "dice", "lovasz")
"""Region terms beside the segmentation cross-entropy (:mod:`semcolor.model.mask_losses`)."""


@dataclass
class LossConfig:
    """Weights and kinds of the two terms. ``color_mask="foreground"`` is the reference's foreground-only loss.

    ``color_loss`` applies to the regression head; the bins head's rebalancing mix is the model's own
    (``ModelConfig.rebalance``: decoding needs it too)."""

    seg_weight: float = 1.0
    color_weight: float = 1.0
    color_mask: str = "all"
    color_loss: str = "mse"
    mask_loss: str = "none"
    """A region term beside the segmentation cross-entropy: ``dice`` or ``lovasz`` (scored per image), or none."""
    mask_loss_weight: float = 1.0
    """Its weight, relative to the cross-entropy's (both inside ``seg_weight``)."""

    def __post_init__(self) -> None:
        if self.mask_loss not in MASK_LOSSES:
            raise ValueError(f"Wrong mask_loss {self.mask_loss!r}; supported: {list(MASK_LOSSES)}")
        if self.mask_loss_weight < 0:
            raise ValueError(f"mask_loss_weight must be >= 0; got {self.mask_loss_weight}")
        if self.color_mask not in COLOR_MASKS:
            raise ValueError(f"Wrong color_mask {self.color_mask!r}; supported: {list(COLOR_MASKS)}")
        if self.color_loss not in COLOR_LOSSES:
            raise ValueError(f"Wrong color_loss {self.color_loss!r}; supported: {list(COLOR_LOSSES)}")
        if self.seg_weight < 0 or self.color_weight < 0:
            raise ValueError(f"loss weights must be >= 0; got seg={self.seg_weight}, color={self.color_weight}")
