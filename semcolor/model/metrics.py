"""Mergeable metric accumulators: segmentation from a confusion matrix, colorization per image.

Both merge across batches and across workers by summing their state (``merge`` or ``+``, or ``to_tensor`` for
``torch.distributed.all_reduce``): never average per-batch or per-worker ratios.
Colorization is measured on RGB uint8 rebuilt from ground-truth L + predicted AB (see semcolor.evaluation.job).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from skimage.metrics import structural_similarity

from semcolor.core.decode import IGNORE_INDEX
from semcolor.core.image_stats import colorfulness, is_grayscale

PSNR_CAP_DB = 100.0
"""PSNR of an exact match is infinite; it is capped here so averages stay finite."""


@dataclass
class SegmentationAccumulator:
    """Confusion matrix ``matrix[true, pred]`` (int64) over every labelled pixel seen."""

    n_classes: int
    matrix: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.matrix is None:
            self.matrix = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """pred, target: (B, H, W) class ids; target 255 = ignore."""
        pred_t = torch.as_tensor(pred).reshape(-1).long().cpu()
        true_t = torch.as_tensor(target).reshape(-1).long().cpu()
        keep = (true_t != IGNORE_INDEX) & (true_t >= 0) & (true_t < self.n_classes)
        idx = true_t[keep] * self.n_classes + pred_t[keep].clamp(0, self.n_classes - 1)
        counts = torch.bincount(idx, minlength=self.n_classes**2).reshape(self.n_classes, self.n_classes)
        self.matrix += counts.numpy()

    def merge(self, other: "SegmentationAccumulator") -> "SegmentationAccumulator":
        if other.n_classes != self.n_classes:
            raise ValueError(f"cannot merge {other.n_classes}-class into {self.n_classes}-class accumulator")
        return SegmentationAccumulator(self.n_classes, self.matrix + other.matrix)

    __add__ = merge

    def to_tensor(self) -> torch.Tensor:
        return torch.as_tensor(self.matrix, dtype=torch.float64).reshape(-1)

    @classmethod
    def from_tensor(cls, n_classes: int, t: torch.Tensor) -> "SegmentationAccumulator":
        return cls(n_classes, t.detach().cpu().round().to(torch.int64).reshape(n_classes, n_classes).numpy())

    def iou(self) -> np.ndarray:
        """Per-class IoU (n_classes,); NaN for a class absent from both prediction and truth."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def result(self) -> dict[str, float | list[float]]:
        total = self.matrix.sum()
        iou = self.iou()
        return {
            "pixel_accuracy": float(np.diag(self.matrix).sum() / total) if total else float("nan"),
            "iou": [float(v) for v in iou],
            "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        }


BOUNDARY_TOLERANCE_PX = 5
"""Boundary IoU's band width d in pixels at the resolution measured (full resolution in evaluation)."""


def boundary_band(mask: np.ndarray, d: int = BOUNDARY_TOLERANCE_PX) -> np.ndarray:
    """bool (H, W) -> bool (H, W): the pixels of ``mask`` within Euclidean distance ``d`` of a pixel outside it (the
    inner band along its contour, Cheng et al. 2021). The image's border is no contour: a mask that fills the image
    has no band."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if not mask.any() or mask.all():
        return np.zeros_like(mask)
    return mask & (ndimage.distance_transform_edt(mask) <= d)


@dataclass
class BoundaryAccumulator:
    """Boundary IoU (Cheng, Girshick, Dollar, Berg & Kirillov, CVPR 2021) of the foreground classes: per class c the
    intersection and union of the contour bands (:func:`boundary_band`) of predicted and true masks of c, summed over
    images; ``result`` divides the sums, then averages over the foreground classes (1..C-1) seen. Scores how a mask
    follows an object's outline, where (m)IoU is dominated by its bulk. Pixels labelled 255 (ignore) count in
    neither band, as they count in no IoU."""

    n_classes: int
    d: int = BOUNDARY_TOLERANCE_PX
    sums: np.ndarray = field(default=None)  # type: ignore[assignment]
    """float64 (n_classes - 1, 2): intersection and union per foreground class."""

    def __post_init__(self) -> None:
        if self.sums is None:
            self.sums = np.zeros((self.n_classes - 1, 2), dtype=np.float64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """pred, target: class ids (H, W) or (B, H, W) of equal shape."""
        pred, target = np.asarray(pred), np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f"pred {pred.shape} and target {target.shape} differ")
        if pred.ndim == 2:
            pred, target = pred[None], target[None]
        for p, t in zip(pred, target):
            labelled = t != IGNORE_INDEX
            for c in range(1, self.n_classes):
                pb, tb = boundary_band(p == c, self.d) & labelled, boundary_band(t == c, self.d)
                self.sums[c - 1] += ((pb & tb).sum(), (pb | tb).sum())

    def merge(self, other: "BoundaryAccumulator") -> "BoundaryAccumulator":
        if (other.n_classes, other.d) != (self.n_classes, self.d):
            raise ValueError("cannot merge boundary accumulators of other classes or tolerance")
        return BoundaryAccumulator(self.n_classes, self.d, self.sums + other.sums)

    __add__ = merge

    def to_tensor(self) -> torch.Tensor:
        return torch.as_tensor(self.sums.reshape(-1), dtype=torch.float64)

    @classmethod
    def from_tensor(cls, n_classes: int, t: torch.Tensor, d: int = BOUNDARY_TOLERANCE_PX) -> "BoundaryAccumulator":
        return cls(n_classes, d, t.detach().cpu().double().numpy().reshape(n_classes - 1, 2).copy())

    def result(self) -> dict[str, float | int | list[float]]:
        """``boundary_iou`` (mean over foreground classes with a band seen), ``boundary_iou_per_class``, and the
        tolerance ``boundary_tolerance_px``."""
        inter, union = self.sums[:, 0], self.sums[:, 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = np.where(union > 0, inter / union, np.nan)
        seen = np.isfinite(per_class)
        return {"boundary_iou": float(per_class[seen].mean()) if seen.any() else float("nan"),
                "boundary_iou_per_class": [float(v) for v in per_class], "boundary_tolerance_px": self.d}


def psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    """PSNR in dB (peak 255) of two uint8 images, capped at PSNR_CAP_DB."""
    mse = float(np.mean((pred.astype(np.float64) - truth.astype(np.float64)) ** 2))
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10.0 * np.log10(255.0**2 / mse))


def json_safe(value: Any) -> Any:
    """NaN/inf floats -> None, recursively through dicts and lists (metric files stay valid JSON)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


_COLOR_FIELDS = ("mse", "psnr", "ssim", "colorfulness_pred", "colorfulness_true")


@dataclass
class ColorAccumulator:
    """Per-image colorization metrics summed over images; ``result`` averages them.

    Grayscale sources are counted in ``skipped_gray`` and left out of every average.
    """

    sums: np.ndarray = field(default_factory=lambda: np.zeros(len(_COLOR_FIELDS), dtype=np.float64))
    count: int = 0
    skipped_gray: int = 0

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        """pred, truth: uint8 (B, H, W, 3) or (H, W, 3) RGB images of equal shape."""
        pred, truth = np.asarray(pred), np.asarray(truth)
        if pred.shape != truth.shape or pred.dtype != np.uint8 or truth.dtype != np.uint8:
            raise ValueError(f"need equal-shape uint8 images; got {pred.shape} {pred.dtype} vs "
                             f"{truth.shape} {truth.dtype}")
        if pred.ndim == 3:
            pred, truth = pred[None], truth[None]
        for p, t in zip(pred, truth):
            if is_grayscale(t):
                self.skipped_gray += 1
                continue
            mse = float(np.mean((p.astype(np.float64) - t.astype(np.float64)) ** 2))
            side = min(t.shape[:2])
            if side < 3:
                raise ValueError(f"images must be at least 3x3 for SSIM; got {t.shape[:2]}")
            win = 7 if side >= 7 else side - (1 - side % 2)  # largest odd window that fits
            ssim = structural_similarity(p, t, channel_axis=-1, data_range=255, win_size=win)
            self.sums += np.array([mse, psnr(p, t), ssim, colorfulness(p), colorfulness(t)])
            self.count += 1

    def merge(self, other: "ColorAccumulator") -> "ColorAccumulator":
        return ColorAccumulator(self.sums + other.sums, self.count + other.count,
                                self.skipped_gray + other.skipped_gray)

    __add__ = merge

    def to_tensor(self) -> torch.Tensor:
        return torch.as_tensor(np.concatenate([self.sums, [self.count, self.skipped_gray]]), dtype=torch.float64)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> "ColorAccumulator":
        v = t.detach().cpu().double().numpy()
        n = len(_COLOR_FIELDS)
        return cls(v[:n].copy(), int(round(v[n])), int(round(v[n + 1])))

    def result(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {}
        for name, total in zip(_COLOR_FIELDS, self.sums):
            out[name] = float(total / self.count) if self.count else float("nan")
        out["colorfulness_ratio"] = (out["colorfulness_pred"] / out["colorfulness_true"]
                                     if self.count and out["colorfulness_true"] else float("nan"))
        out["images"] = self.count
        out["skipped_gray"] = self.skipped_gray
        return out
