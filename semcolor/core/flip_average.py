"""Test-time flip averaging: a :class:`~semcolor.core.colorizer.Predictor` that also predicts each image mirrored
left-right and averages the two answers (the mirrored one mirrored back), in one forward pass of twice the batch.

The network is trained with horizontal flips, so both views are equally likely inputs; their average is a cheap
ensemble: twice the model's work, no other cost. numpy only (any backend behind the predictor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from semcolor.core.colorizer import Predictor

TTA_MODES = ("none", "flip")
"""``none``: one view; ``flip``: the image and its mirror, averaged (:class:`FlipAveraged`)."""
DEFAULT_TTA = "none"


def tta_option() -> Any:
    """The ``--tta`` option of every command that colorizes."""
    from semcolor.options import option

    return option(DEFAULT_TTA, choices=TTA_MODES, help="test-time augmentation: none, or flip (each image and its "
                  "mirror in one batch, their colors and masks averaged: twice the model's work)")


def check_tta(tta: str) -> None:
    """A clear error for a test-time augmentation that is not one of :data:`TTA_MODES`."""
    if tta not in TTA_MODES:
        raise ValueError(f"Wrong tta {tta!r}; supported: {list(TTA_MODES)}")


def with_tta(predictor: Predictor, tta: str) -> Predictor:
    """``predictor`` as is (``none``) or wrapped in :class:`FlipAveraged` (``flip``)."""
    check_tta(tta)
    return FlipAveraged(predictor) if tta == "flip" else predictor


@dataclass
class FlipAveraged:
    """``inner`` run on the batch and its left-right mirror; AB (LAB units) and, with 2 classes, the foreground
    probability are averaged per pixel (rounded half to even). With more classes the mask is the plain
    view's (class ids cannot be averaged) and only AB is averaged."""

    inner: Predictor

    @property
    def size(self) -> int:
        return self.inner.size

    @property
    def n_classes(self) -> int:
        return self.inner.n_classes

    def predict(self, l8_small: np.ndarray, vividness: float | np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """l8_small uint8 (B, S, S) -> (ab8 int8 (B, 2, S, S), fg8 uint8 (B, S, S)), each the mean of the image's
        and its mirror's prediction; ``vividness`` as the inner predictor's (None: its default)."""
        batch = len(l8_small)
        both = np.concatenate([l8_small, l8_small[:, :, ::-1]])
        if vividness is None:
            ab8, fg8 = self.inner.predict(both)
        else:
            v = np.asarray(vividness, dtype=np.float32)
            ab8, fg8 = self.inner.predict(both, np.concatenate([v, v]) if v.ndim else float(v))
        ab = _mean_rounded(ab8[:batch], ab8[batch:, :, :, ::-1]).astype(np.int8)
        if self.n_classes != 2:
            return ab, fg8[:batch]
        return ab, _mean_rounded(fg8[:batch], fg8[batch:, :, ::-1]).astype(np.uint8)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "tta": "flip"}


def _mean_rounded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a + b) / 2 of two integer arrays, rounded half to even, as int16: unbiased (half away from zero would push
    every odd sum's chroma outwards by half a LAB unit, and the measured colourfulness with it)."""
    return np.round((a.astype(np.int16) + b.astype(np.int16)) / 2.0).astype(np.int16)
