"""uint8 training batches -> model tensors, in torch on the batch's device: LAB, targets, augmentation."""

from __future__ import annotations

import torch
from torch import Tensor

from semcolor.core import color
from semcolor.core.decode import IGNORE_INDEX
from semcolor.data.copy_paste import copy_paste


def _crop(x: Tensor, tops: Tensor, lefts: Tensor, crop: int) -> Tensor:
    """Per-sample crop of (B, H, W, ...) at (tops[i], lefts[i]) -> (B, crop, crop, ...)."""
    return torch.stack([x[i, t:t + crop, l:l + crop] for i, (t, l) in enumerate(zip(tops.tolist(), lefts.tolist()))])


RESIZED_CROP_SCALE = (0.5, 1.0)
"""Training augmentation: random resized crops covering this share of the image's area (scale jitter)."""
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)


def random_resized_crop(rgb: Tensor, mask: Tensor, scale: tuple[float, float] = RESIZED_CROP_SCALE,
                        ratio: tuple[float, float] = RESIZED_CROP_RATIO, generator: torch.Generator | None = None
                        ) -> tuple[Tensor, Tensor]:
    """The same random crop per sample of ``rgb`` uint8 (B, H, W, 3) and ``mask`` uint8 (B, H, W), each resized
    back to (H, W): bilinear (antialiased) for the image, nearest for the mask (class ids are never blended).

    Crop area is a uniform share in ``scale`` of H x W, aspect ratio log-uniform in ``ratio`` (as torchvision's
    RandomResizedCrop, drawn from ``generator`` so a seeded run repeats itself).
    """
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    batch, height, width = mask.shape
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(batch, 4, generator=generator, device=gen_device).cpu().double()
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
    log_lo, log_hi = torch.log(torch.tensor(ratio[0])), torch.log(torch.tensor(ratio[1]))
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    crop_w = torch.sqrt(area * aspect).round().clamp(1, width).long()
    crop_h = torch.sqrt(area / aspect).round().clamp(1, height).long()
    tops = (u[:, 2] * (height - crop_h + 1)).floor().long()
    lefts = (u[:, 3] * (width - crop_w + 1)).floor().long()
    out_rgb, out_mask = torch.empty_like(rgb), torch.empty_like(mask)
    for i in range(batch):
        box = (int(tops[i]), int(lefts[i]), int(crop_h[i]), int(crop_w[i]))
        out_rgb[i] = TF.resized_crop(rgb[i].permute(2, 0, 1), *box, size=[height, width], antialias=True
                                     ).permute(1, 2, 0)
        out_mask[i] = TF.resized_crop(mask[i][None], *box, size=[height, width],
                                      interpolation=InterpolationMode.NEAREST)[0]
    return out_rgb, out_mask


def jitter_lightness(l: Tensor, strength: float, generator: torch.Generator | None = None) -> Tensor:
    """Per-sample contrast and brightness jitter of ``l`` float (B, 1, H, W) in [0, 1] (L / 100): each sample's
    contrast about its own mean times U(1 - strength, 1 + strength), then + U(-strength / 2, strength / 2), clipped
    to [0, 1]. ``strength`` 0 returns ``l`` itself."""
    if strength == 0.0:
        return l
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(l.shape[0], 2, generator=generator, device=gen_device).to(device=l.device, dtype=l.dtype)
    contrast = (1.0 + strength * (2.0 * u[:, 0] - 1.0)).view(-1, 1, 1, 1)
    shift = (strength * (u[:, 1] - 0.5)).view(-1, 1, 1, 1)
    mean = l.mean(dim=(1, 2, 3), keepdim=True)
    return ((l - mean) * contrast + mean + shift).clamp(0.0, 1.0)


def preprocess_batch(rgb: Tensor, mask: Tensor, n_classes: int, train: bool, crop: int | None = None,
                     generator: torch.Generator | None = None,
                     resized_crop_scale: tuple[float, float] | None = None,
                     labelled: Tensor | None = None, lightness_jitter: float = 0.0,
                     copy_paste_probability: float = 0.0) -> dict[str, Tensor]:
    """uint8 batches -> model tensors, on the inputs' device.

    In: ``rgb`` uint8 (B, H, W, 3); ``mask`` uint8 (B, H, W).
    Out: ``l`` float (B, 1, H', W') = L / 100 in [0, 1]; ``ab`` float (B, 2, H', W') = ab / 110
    (see :mod:`semcolor.core.color`); ``target`` int64 (B, H', W'): with n_classes == 2, 1 where mask > 127
    else 0; with n_classes > 2, the mask value (class id), :data:`IGNORE_INDEX` (255) kept as ignore.
    ``train``: each sample is flipped horizontally with probability 1/2, with ``resized_crop_scale`` first cut to
    a random resized crop (:func:`random_resized_crop`) and, with ``crop``, cropped at a random place (image and
    mask alike); otherwise ``crop`` takes the centre. H' = W' = crop, or H, W.
    ``labelled`` bool (B,): rows without a mask (photos) get :data:`IGNORE_INDEX` everywhere in ``target``, so they
    count in the color loss only; None = every row has a mask.
    ``copy_paste_probability`` (with ``train``): that share of the samples gets the next sample's foreground pasted
    in (:func:`semcolor.data.copy_paste.copy_paste`), after the crops and flips.
    ``lightness_jitter`` (with ``train``): :func:`jitter_lightness` of ``l`` at that strength, drawn after the crops
    and flips; ``ab`` and ``target`` stay the photo's own.
    """
    if rgb.dtype != torch.uint8 or rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must be uint8 (B, H, W, 3); got {rgb.dtype} {tuple(rgb.shape)}")
    if mask.dtype != torch.uint8 or tuple(mask.shape) != tuple(rgb.shape[:3]):
        raise ValueError(f"mask must be uint8 (B, H, W) = {tuple(rgb.shape[:3])}; got {mask.dtype} {tuple(mask.shape)}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    batch, height, width = mask.shape
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if train and resized_crop_scale is not None:
        rgb, mask = random_resized_crop(rgb, mask, resized_crop_scale, generator=generator)
    if train:
        flip = (torch.rand(batch, generator=generator, device=gen_device) < 0.5).to(rgb.device)
        rgb = torch.where(flip.view(-1, 1, 1, 1), rgb.flip(2), rgb)
        mask = torch.where(flip.view(-1, 1, 1), mask.flip(2), mask)
        if copy_paste_probability > 0.0:
            rgb, mask = copy_paste(rgb, mask, copy_paste_probability, n_classes, generator, labelled)
    if crop is not None:
        if not 0 < crop <= min(height, width):
            raise ValueError(f"crop must be in 1..{min(height, width)} for {height}x{width} inputs, got {crop}")
        if train:
            tops = torch.randint(0, height - crop + 1, (batch,), generator=generator, device=gen_device)
            lefts = torch.randint(0, width - crop + 1, (batch,), generator=generator, device=gen_device)
        else:
            tops = torch.full((batch,), (height - crop) // 2)
            lefts = torch.full((batch,), (width - crop) // 2)
        rgb, mask = _crop(rgb, tops, lefts, crop), _crop(mask, tops, lefts, crop)
    lab = color.rgb_to_lab(color.uint8_to_float(rgb))
    lightness, ab = color.split_lab(lab)
    if n_classes == 2:
        target = (mask > 127).long()
    else:
        target = mask.long()
        invalid = (target >= n_classes) & (target != IGNORE_INDEX)
        if bool(invalid.any()):
            bad = sorted(set(target[invalid].unique().tolist()))
            raise ValueError(f"mask values {bad[:10]} are neither class ids 0..{n_classes - 1} nor {IGNORE_INDEX} (ignore)")
    if labelled is not None:
        if tuple(labelled.shape) != (batch,):
            raise ValueError(f"labelled must be (B,) = ({batch},); got {tuple(labelled.shape)}")
        unlabelled = ~labelled.to(device=target.device, dtype=torch.bool)
        target = target.masked_fill(unlabelled.view(-1, 1, 1), IGNORE_INDEX)
    l_input = color.l_to_model(lightness)
    if train and lightness_jitter > 0.0:
        l_input = jitter_lightness(l_input, lightness_jitter, generator)
    return {"l": l_input, "ab": ab, "target": target}
