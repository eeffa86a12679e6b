"""Multi-task loss: cross-entropy on the segmentation (with an optional region term, Dice or Lovasz-softmax) + a
(masked) color loss, computed by the model's color head (MSE-like on AB for the regression head, rebalanced
soft-target cross-entropy over AB bins for the bins head).

Pixels labelled 255 (ignore) count in no segmentation term but in the color term: a photo without a mask (all 255)
teaches color only."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from semcolor.core.decode import IGNORE_INDEX
from semcolor.model.config import LossConfig
from semcolor.model.heads import BinnedColorHead, RegressionColorHead
from semcolor.model.mask_losses import masked_cross_entropy, region_loss


def multitask_loss(
    seg_logits: Tensor, color_raw: Tensor, target: Tensor, ab_target: Tensor, config: LossConfig,
    color_head: RegressionColorHead | BinnedColorHead,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss and its parts.

    seg_logits (B, C, H, W); color_raw: the color head's raw output (B, K, h, w); target (B, H, W) int64 class ids,
    255 = ignore; ab_target (B, 2, H, W) in LAB units. Returns ``(total, {"seg": ..., "color": ...})`` (parts
    detached).
    """
    if seg_logits.shape[-2:] != target.shape[-2:] or ab_target.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"shape mismatch: seg {tuple(seg_logits.shape)}, target {tuple(target.shape)}, "
                         f"ab {tuple(ab_target.shape)}")
    seg = masked_cross_entropy(seg_logits, target)
    if config.mask_loss != "none" and config.mask_loss_weight > 0:
        seg = seg + config.mask_loss_weight * region_loss(config.mask_loss, seg_logits, target)
    per_pixel = color_head.pixel_loss(color_raw, ab_target, kind=config.color_loss)
    if config.color_mask == "foreground":
        weight = ((target > 0) & (target != IGNORE_INDEX)).float()[:, None]
        if weight.shape[-2:] != per_pixel.shape[-2:]:  # the bins head's loss is at the decoder's resolution
            weight = F.adaptive_avg_pool2d(weight, per_pixel.shape[-2:])
        weight = weight[:, 0]
        color = (per_pixel * weight).sum() / weight.sum().clamp_min(1.0)
    else:
        color = per_pixel.mean()
    total = config.seg_weight * seg + config.color_weight * color
    return total, {"seg": seg.detach(), "color": color.detach()}
