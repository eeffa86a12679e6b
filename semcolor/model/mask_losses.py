"""Region losses of the segmentation beside its per-pixel cross-entropy: soft Dice and Lovasz-softmax.

Cross-entropy weighs every pixel alike, so a blob that gets the bulk of an object right and drops its legs costs
little; these losses score the mask as a whole, per image, where a thin part missed is a share of the object's
own area (Dice) or of its IoU (Lovasz-softmax, Berman, Rannen Triki & Blaschko, CVPR 2018: a convex surrogate of
the Jaccard loss, hence of the mIoU the table reports). Both skip pixels labelled ``IGNORE_INDEX`` and images
without a labelled pixel (photos without masks), and are means over the images that have one.

Shapes: ``logits`` (B, C, H, W) float; ``target`` (B, H, W) int64 class ids, 255 = ignore. Pure torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from semcolor.core.decode import IGNORE_INDEX

REGION_LOSSES = ("none", "dice", "lovasz")
"""The region terms ``--mask-loss`` offers beside the cross-entropy."""


def _zero(logits: Tensor) -> Tensor:
    """A zero that keeps the graph connected (nothing labelled)."""
    return logits.float().sum() * 0.0


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """1 - soft Dice per image, averaged over the foreground classes (1..C-1; class 0 is background) and then over
    images with labels. ``eps`` smooths an empty class: where a class is absent, predicting it costs
    ``1 - eps / (sum p + eps)``. Scalar."""
    probs = logits.float().softmax(dim=1)
    labelled = target != IGNORE_INDEX
    losses = []
    for i in range(logits.shape[0]):
        keep = labelled[i]
        if not bool(keep.any()):
            continue
        per_class = []
        for c in range(1, logits.shape[1]):
            truth = ((target[i] == c) & keep).float()
            p = probs[i, c] * keep
            per_class.append(1.0 - (2.0 * (p * truth).sum() + eps) / (p.sum() + truth.sum() + eps))
        losses.append(torch.stack(per_class).mean())
    return torch.stack(losses).mean() if losses else _zero(logits)


def lovasz_grad(truth_sorted: Tensor) -> Tensor:
    """The Jaccard loss's gradient along errors sorted in decreasing order: (P,) 0/1 float -> (P,) (Berman et al.,
    Algorithm 1)."""
    total = truth_sorted.sum()
    intersection = total - truth_sorted.cumsum(0)
    union = total + (1.0 - truth_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if len(truth_sorted) > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(logits: Tensor, target: Tensor) -> Tensor:
    """Lovasz-softmax per image over its labelled pixels, averaged over the classes present in its labels, then
    over images with labels. Scalar."""
    probs = logits.float().softmax(dim=1)
    losses = []
    for i in range(logits.shape[0]):
        keep = (target[i] != IGNORE_INDEX).reshape(-1)
        if not bool(keep.any()):
            continue
        labels = target[i].reshape(-1)[keep]
        p = probs[i].reshape(probs.shape[1], -1)[:, keep]
        per_class = []
        for c in range(probs.shape[1]):
            truth = (labels == c).float()
            if not bool(truth.any()):
                continue
            errors = (truth - p[c]).abs()
            errors_sorted, order = torch.sort(errors, descending=True)
            per_class.append(torch.dot(errors_sorted, lovasz_grad(truth[order])))
        losses.append(torch.stack(per_class).mean())
    return torch.stack(losses).mean() if losses else _zero(logits)


def region_loss(kind: str, logits: Tensor, target: Tensor) -> Tensor:
    """The region term ``kind`` (one of :data:`REGION_LOSSES`; ``none`` is a connected zero)."""
    if kind == "dice":
        return dice_loss(logits, target)
    if kind == "lovasz":
        return lovasz_softmax(logits, target)
    if kind == "none":
        return _zero(logits)
    raise ValueError(f"Wrong mask loss {kind!r}; supported: {list(REGION_LOSSES)}")


def masked_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy over the labelled pixels (255 = ignore); a connected zero when none is labelled."""
    if bool((target != IGNORE_INDEX).any()):
        return F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)
    return _zero(logits)
