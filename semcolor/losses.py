"""Multi-task loss: cross-entropy on the segmentation + a (masked) color loss on AB."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = 255
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


def _pixel_color_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """Per-pixel loss (B, H, W), summed over the two AB channels."""
    if kind == "mse":
        return ((pred - target) ** 2).sum(dim=1)
    if kind == "l1":
        return (pred - target).abs().sum(dim=1)
    return F.smooth_l1_loss(pred, target, reduction="none", beta=0.05).sum(dim=1)


def multitask_loss(
    seg_logits: Tensor, ab_pred: Tensor, target: Tensor, ab_target: Tensor, config: LossConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss and its parts.

    seg_logits (B, C, H, W); ab_pred, ab_target (B, 2, H, W) in model scale; target (B, H, W) int64 class ids,
    255 = ignore. Returns ``(total, {"seg": ..., "color": ...})`` (parts detached).
    """
    if seg_logits.shape[-2:] != target.shape[-2:] or ab_pred.shape != ab_target.shape:
        raise ValueError(f"shape mismatch: seg {tuple(seg_logits.shape)} vs target {tuple(target.shape)}, "
                         f"ab {tuple(ab_pred.shape)} vs {tuple(ab_target.shape)}")
    if (target != IGNORE_INDEX).any():
        seg = F.cross_entropy(seg_logits.float(), target, ignore_index=IGNORE_INDEX)
    else:  # nothing labelled: a zero that keeps the graph connected
        seg = seg_logits.float().sum() * 0.0
    per_pixel = _pixel_color_loss(ab_pred.float(), ab_target.float(), config.color_loss)
    if config.color_mask == "foreground":
        weight = ((target > 0) & (target != IGNORE_INDEX)).float()
        color = (per_pixel * weight).sum() / weight.sum().clamp_min(1.0)
    else:
        color = per_pixel.mean()
    total = config.seg_weight * seg + config.color_weight * color
    return total, {"seg": seg.detach(), "color": color.detach()}
