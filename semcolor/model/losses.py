"""Multi-task loss: cross-entropy on the segmentation + a (masked) color loss on AB."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from semcolor.core.decode import IGNORE_INDEX
from semcolor.model.config import LossConfig


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
