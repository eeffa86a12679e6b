"""Copy-paste augmentation: another photo's foreground pasted onto a training image, its mask with it.

Simple copy-paste (Ghiasi et al. 2021, "Simple Copy-Paste is a Strong Data Augmentation Method for Instance
Segmentation"): the donor's foreground pixels, scaled and placed at random, replace the recipient's, and its mask
follows them exactly, so a labelled set of N photos yields new silhouettes (legs, ears, a rider) in new
surroundings every epoch. The colour target is the composite's own pixels, so the colour loss stays truthful.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from semcolor.core.decode import IGNORE_INDEX

PASTE_SCALE = (0.5, 1.0)
"""The donor is resized by a factor uniform in this range (of the image's side) before it is placed."""


def foreground(mask: Tensor, n_classes: int) -> Tensor:
    """uint8 masks (B, H, W) -> bool (B, H, W): the foreground (binary: > 127; class ids: neither 0 nor ignore)."""
    if n_classes == 2:
        return mask > 127
    return (mask != 0) & (mask != IGNORE_INDEX)


def copy_paste(rgb: Tensor, mask: Tensor, probability: float, n_classes: int,
               generator: torch.Generator | None = None, labelled: Tensor | None = None,
               scale: tuple[float, float] = PASTE_SCALE) -> tuple[Tensor, Tensor]:
    """Paste, into each sample with ``probability``, the foreground of the next sample of the batch (a cyclic
    shift: the batch's order is already shuffled), resized by ``scale`` of its side and placed uniformly at random.

    In/out: ``rgb`` uint8 (B, H, W, 3), ``mask`` uint8 (B, H, W) (binary 0/255 or class ids); new tensors. A
    recipient or donor without a mask (``labelled`` False: photos) or a donor without foreground is left out, so
    every pasted pixel carries a true label. The pasted mask values are the donor's (255 for binary masks).
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"copy-paste probability must be in [0, 1]; got {probability}")
    batch, height, width = mask.shape
    if probability == 0.0 or batch < 2:
        return rgb, mask
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(batch, 4, generator=generator, device=gen_device).cpu().double()
    has_label = (torch.ones(batch, dtype=torch.bool) if labelled is None
                 else labelled.to(device="cpu", dtype=torch.bool))
    fg = foreground(mask, n_classes)
    has_fg = fg.flatten(1).any(dim=1).cpu()
    out_rgb, out_mask = rgb.clone(), mask.clone()
    for i in range(batch):
        j = (i + 1) % batch
        if u[i, 0] >= probability or not (has_label[i] and has_label[j] and has_fg[j]):
            continue
        factor = scale[0] + (scale[1] - scale[0]) * float(u[i, 1])
        h, w = max(1, round(height * factor)), max(1, round(width * factor))
        top = int(u[i, 2] * (height - h + 1))
        left = int(u[i, 3] * (width - w + 1))
        donor_rgb = F.interpolate(rgb[j].permute(2, 0, 1)[None].float(), size=(h, w), mode="bilinear",
                                  align_corners=False, antialias=True)[0].round().clamp(0, 255).to(rgb.dtype)
        donor_mask = F.interpolate(mask[j][None, None].float(), size=(h, w), mode="nearest")[0, 0].to(mask.dtype)
        keep = foreground(donor_mask[None], n_classes)[0]
        region_rgb = out_rgb[i, top:top + h, left:left + w]
        region_mask = out_mask[i, top:top + h, left:left + w]
        region_rgb[keep] = donor_rgb.permute(1, 2, 0)[keep]
        region_mask[keep] = donor_mask[keep]
    return out_rgb, out_mask
