"""Validation totals that merge across batches and workers: loss sums, a confusion matrix, and colorization
accumulators for the model and for the gray baseline (AB = 0).

Colorization is measured per the DESIGN protocol on RGB uint8 rebuilt from the ground-truth L plus the predicted
AB (here at training resolution; ``semcolor evaluate`` does it at the sources' full resolution).
Merging sums the state (``torch.distributed.all_reduce`` of :meth:`ValidationTotals.to_tensor`); per-worker
ratios are never averaged, so 2 workers give the metrics of 1 process over the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from semcolor.core import color
from semcolor.data.preprocess import preprocess_batch
from semcolor.model.config import DEFAULT_VIVIDNESS, LossConfig
from semcolor.model.losses import multitask_loss
from semcolor.model.metrics import ColorAccumulator, SegmentationAccumulator
from semcolor.model.network import SegColorModel
from semcolor.train.forward import forward

_COLOR_LEN = len(ColorAccumulator().to_tensor())


@dataclass
class ValidationTotals:
    """Everything validation accumulates; ``merge``/``to_tensor`` sum it across workers."""

    n_classes: int
    seg: SegmentationAccumulator = field(default=None)  # type: ignore[assignment]
    color: ColorAccumulator = field(default_factory=ColorAccumulator)
    gray: ColorAccumulator = field(default_factory=ColorAccumulator)
    loss_sums: np.ndarray = field(default_factory=lambda: np.zeros(4))
    """Sums over images of (total loss, seg loss, color loss) and the image count."""

    def __post_init__(self) -> None:
        if self.seg is None:
            self.seg = SegmentationAccumulator(self.n_classes)

    def to_tensor(self) -> Tensor:
        """float64 (n_classes^2 + 2 x 7 + 4,): the state as one tensor, for all_reduce(SUM)."""
        return torch.cat([self.seg.to_tensor(), self.color.to_tensor(), self.gray.to_tensor(),
                          torch.as_tensor(self.loss_sums, dtype=torch.float64)])

    @classmethod
    def from_tensor(cls, n_classes: int, t: Tensor) -> "ValidationTotals":
        t = t.detach().cpu().double()
        n = n_classes * n_classes
        seg = SegmentationAccumulator.from_tensor(n_classes, t[:n])
        col = ColorAccumulator.from_tensor(t[n:n + _COLOR_LEN])
        gray = ColorAccumulator.from_tensor(t[n + _COLOR_LEN:n + 2 * _COLOR_LEN])
        return cls(n_classes, seg, col, gray, t[n + 2 * _COLOR_LEN:].numpy().copy())

    def metrics(self, prefix: str = "val_") -> dict[str, float]:
        """Flat scalar metrics: losses, pixel accuracy, mIoU, per-class IoU, color metrics, gray baseline."""
        n = self.loss_sums[3]
        out: dict[str, float] = {}
        for i, name in enumerate(("loss", "seg_loss", "color_loss")):
            out[prefix + name] = float(self.loss_sums[i] / n) if n else float("nan")
        seg = self.seg.result()
        out[prefix + "pixel_accuracy"] = float(seg["pixel_accuracy"])
        out[prefix + "miou"] = float(seg["miou"])
        for c, v in enumerate(seg["iou"]):
            out[f"{prefix}iou_{c}"] = float(v)
        col = self.color.result()
        for key in ("mse", "psnr", "ssim", "colorfulness_pred", "colorfulness_true", "colorfulness_ratio"):
            out[prefix + key] = float(col[key])
        gray = self.gray.result()
        for key in ("mse", "psnr", "ssim", "colorfulness_pred"):
            out[f"{prefix}gray_{key.replace('_pred', '')}"] = float(gray[key])
        out[prefix + "images"] = int(col["images"])
        out[prefix + "skipped_gray"] = int(col["skipped_gray"])
        return out


def rgb_from_l_ab(l_input: Tensor, ab: Tensor) -> np.ndarray:
    """Model-scale L (B, 1, H, W) in [0, 1] + AB (B, 2, H, W) in LAB units -> RGB uint8 (B, H, W, 3) numpy."""
    rgb = color.merge_l_ab(color.l_from_model(l_input.float()), ab.float())
    return color.float_to_uint8(rgb).cpu().numpy()


@torch.no_grad()
def validate_batch(model: SegColorModel, rgb: Tensor, mask: Tensor, totals: ValidationTotals,
                   loss_config: LossConfig, vividness: float = DEFAULT_VIVIDNESS, amp: torch.dtype | None = None,
                   channels_last: bool = False) -> None:
    """Add one batch (rgb uint8 (B, S, S, 3), mask uint8 (B, S, S), on the model's device) to ``totals``; colors
    decoded at ``vividness``; the forward at the training's precision ``amp`` and memory format.

    ``model`` is in eval mode and not DDP-wrapped (no collectives inside). Truth is the batch's own RGB.
    """
    batch = preprocess_batch(rgb, mask, totals.n_classes, train=False)
    seg_logits, color_raw = forward(model, batch["l"], amp, channels_last)
    loss, parts = multitask_loss(seg_logits, color_raw, batch["target"], batch["ab"], loss_config, model.color_head)
    ab = model.decode_ab(color_raw, *batch["l"].shape[-2:], vividness)
    b = rgb.shape[0]
    totals.loss_sums += np.array([float(loss) * b, float(parts["seg"]) * b, float(parts["color"]) * b, b])
    totals.seg.update(seg_logits.argmax(dim=1), batch["target"])
    truth = rgb.cpu().numpy()
    totals.color.update(rgb_from_l_ab(batch["l"], ab), truth)
    totals.gray.update(rgb_from_l_ab(batch["l"], torch.zeros_like(ab)), truth)


def validate(model: SegColorModel, batches: Iterable[dict[str, Tensor]], n_classes: int, loss_config: LossConfig,
             rank: int = 0, world_size: int = 1, amp: torch.dtype | None = None, channels_last: bool = False
             ) -> ValidationTotals:
    """This worker's share of validation: batch ``i`` is evaluated when ``i % world_size == rank``.

    Every worker iterates the same (unsplit, materialized, key-sorted) batches, so the shares are disjoint and
    cover every row exactly once, with the same batch composition as a single process; summing the workers'
    totals (:func:`all_reduce_totals`) therefore equals one process's totals over all batches.
    """
    totals = ValidationTotals(n_classes)
    was_training = model.training
    model.eval()
    try:
        for i, batch in enumerate(batches):
            if i % world_size == rank:
                validate_batch(model, batch["rgb"], batch["mask"], totals, loss_config, amp=amp,
                               channels_last=channels_last)
    finally:
        model.train(was_training)
    return totals


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum a CPU tensor over all workers (identity without torch.distributed); NCCL gets a GPU copy."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    if dist.get_backend() == "nccl":
        out = t.to(f"cuda:{torch.cuda.current_device()}")
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.cpu()
    out = t.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_totals(totals: ValidationTotals) -> ValidationTotals:
    """The sum of every worker's totals (each worker gets the same result)."""
    return ValidationTotals.from_tensor(totals.n_classes, all_reduce_sum(totals.to_tensor()))
