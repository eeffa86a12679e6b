"""Cheap quality signals of one bulk output, for its record: what lets an archivist find the worst of a million
outputs without opening them (`semcolor report`). Computed in the merge stage from the model-size arrays the row
already carries (a few milliseconds per row, whatever the scan's size); numpy only, no torch.

- ``colorfulness``: Hasler–Süsstrunk colourfulness of the prediction (model-size L + predicted AB, uint8 scale;
  0 for gray, ~20-60 for natural photos).
- ``foreground_share``: share of the model-size pixels the mask calls foreground (class > 0).
- ``mask_confidence``: mean over pixels of the most likely class's probability, in [0.5, 1] for two classes (how
  sure the model is of its mask; NaN with more classes, whose outputs carry the class id only).
- ``source_color``: whether the source already had colour (a colour photo in a scan archive: its colours are
  replaced by predicted ones).
"""

from __future__ import annotations

import numpy as np

from semcolor.core.colorizer import merge_full_resolution
from semcolor.core.image_stats import colorfulness, is_grayscale

SIGNALS = ("colorfulness", "foreground_share", "mask_confidence", "source_color")
"""The record columns this module fills."""
COLOR_STRIDE = 4
"""Whether a source has colour is decided on every 4th pixel of every 4th row."""


def output_signals(l8_small: np.ndarray, ab8: np.ndarray, fg8: np.ndarray, n_classes: int) -> dict[str, float]:
    """One row's model-size input and outputs -> ``colorfulness``, ``foreground_share``, ``mask_confidence``.

    ``l8_small`` uint8 (S, S); ``ab8`` int8 (2, S, S) LAB units; ``fg8`` uint8 (S, S): foreground probability x 255
    (2 classes) or the class id."""
    rgb = merge_full_resolution(l8_small, ab8, l8_small, "bilinear")  # no upsampling at the model's own size
    if n_classes == 2:
        p = fg8.astype(np.float32) / 255.0
        share = float(np.mean(fg8 > 127))
        confidence = float(np.mean(np.maximum(p, 1.0 - p)))
    else:
        share, confidence = float(np.mean(fg8 > 0)), float("nan")
    return {"colorfulness": colorfulness(rgb), "foreground_share": share, "mask_confidence": confidence}


def source_has_color(rgb: np.ndarray) -> bool:
    """A decoded source uint8 (H, W, 3) -> whether it has colour (channels apart by more than 2 levels somewhere,
    sampled every :data:`COLOR_STRIDE` pixels)."""
    return rgb.ndim == 3 and not is_grayscale(rgb, tolerance=2, stride=COLOR_STRIDE)
