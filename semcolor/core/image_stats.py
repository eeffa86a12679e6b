"""Whole-image statistics in numpy (no torch): colourfulness and whether an image has colour at all. The quality
measures (:mod:`semcolor.model.metrics`) and the bulk job's per-output signals (:mod:`semcolor.bulk.signals`, in
worker processes that never load torch) use the same definitions.

Images: uint8 RGB (H, W, 3).
"""

from __future__ import annotations

import numpy as np


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler–Süsstrunk colorfulness of an (H, W, 3) RGB image (uint8 scale)."""
    x = rgb.astype(np.float64)
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def is_grayscale(rgb: np.ndarray, tolerance: int = 2, stride: int = 1) -> bool:
    """True when every pixel's channels differ by at most ``tolerance`` levels (a gray source). ``stride`` > 1
    looks at every stride-th pixel of every stride-th row (a 12-MP scan in a few milliseconds)."""
    x = rgb[::stride, ::stride].astype(np.int16)
    return bool(np.abs(x[..., 0] - x[..., 1]).max() <= tolerance and np.abs(x[..., 1] - x[..., 2]).max() <= tolerance)
