"""ModelConfig (everything needed to rebuild a model; saved as config.json beside the weights) and LossConfig.

Plain dataclasses without torch, so commands can declare their options without loading it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

ARCHS = ("resnet34", "unet")


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


COLOR_MASKS = ("all", "foreground")
COLOR_LOSSES = ("mse", "l1", "huber")


@dataclass
class LossConfig:
    """Weights and kinds of the two terms. ``color_mask="foreground"`` is the reference's foreground-only loss."""

    seg_weight: float = 1.0
    color_weight: float = 1.0
    color_mask: str = "all"
    color_loss: str = "mse"

    def __post_init__(self) -> None:
        if self.color_mask not in COLOR_MASKS:
            raise ValueError(f"Wrong color_mask {self.color_mask!r}; supported: {list(COLOR_MASKS)}")
        if self.color_loss not in COLOR_LOSSES:
            raise ValueError(f"Wrong color_loss {self.color_loss!r}; supported: {list(COLOR_LOSSES)}")
        if self.seg_weight < 0 or self.color_weight < 0:
            raise ValueError(f"loss weights must be >= 0; got seg={self.seg_weight}, color={self.color_weight}")
