"""The one inference core shared by bulk colorization, evaluation, the Serve replica and the demo.

Flow (as DDColor's pipeline): the source's lightness is kept at full resolution as compact uint8 ``l8``
(L * 255 / 100); a resized copy at model size goes through the network; the predicted AB (model size) is
upsampled and merged with the full-resolution L, so outputs keep the source's exact size and detail.

numpy, Pillow and numba only (no torch; the model behind a :class:`Predictor` brings its own backend).

Arrays: ``l8`` uint8 (H, W); ``ab8`` int8 (2, S, S) in LAB units (a/b fit in [-127, 127]);
``fg8`` uint8 (S, S) foreground probability * 255 (binary) or class id (multi-class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from semcolor.core import kernels
from semcolor.core import refine as refine_maps
from semcolor.core.lab_table import AB_MIN, lab_table
from semcolor.core.lightness import prepare_l8
from semcolor.core.refine import DEFAULT_REFINE


def merge_full_resolution(l8: np.ndarray, ab8: np.ndarray, l8_small: np.ndarray | None = None,
                          refine: str = DEFAULT_REFINE) -> np.ndarray:
    """Full-res l8 (H, W) + model-size ab8 (2, S, S) int8 LAB units -> uint8 RGB (H, W, 3).

    AB is upsampled to (H, W) (``refine``: guided by the full-resolution L, or bilinear; see
    :mod:`semcolor.core.refine`; ``l8_small`` is the model's input, recomputed when None) and merged with the
    full-resolution L through the LAB -> RGB table (:mod:`semcolor.core.lab_table`: chroma rounded half up to
    whole LAB units), in one compiled pass over the output (:func:`semcolor.core.kernels.lab_rows`).
    """
    rows = refine_maps.row_maps(ab8.astype(np.float32), l8, l8_small, refine, offset=-AB_MIN)
    out = np.empty((*l8.shape, 3), dtype=np.uint8)
    kernels.lab_rows(rows.wide, rows.y0, rows.weight, np.ascontiguousarray(l8), lab_table(), out)
    return out


def mask_full_resolution(fg8: np.ndarray, l8: np.ndarray, n_classes: int, l8_small: np.ndarray | None = None,
                         refine: str = DEFAULT_REFINE) -> np.ndarray:
    """Model-size fg8 (S, S) -> full-resolution mask uint8 at l8's (H, W): 0/255 (binary: the foreground
    probability upsampled per ``refine``, then thresholded at 1/2) or class ids (nearest)."""
    height, width = l8.shape
    if n_classes == 2:
        rows = refine_maps.row_maps(fg8.astype(np.float32)[None], l8, l8_small, refine)
        mask = np.empty((height, width), np.uint8)
        kernels.threshold_rows(rows.wide, rows.y0, rows.weight, np.ascontiguousarray(l8), 127.5, mask)
        return mask
    return np.asarray(Image.fromarray(fg8, mode="L").resize((width, height), Image.Resampling.NEAREST))


def warm_up(size: int) -> None:
    """Build the LAB table and load (or compile) the merge's loops now, rather than in the first request or
    batch: about a second, once per process."""
    l8 = np.zeros((2, 2), np.uint8)
    small = np.zeros((size, size), np.uint8)
    merge_full_resolution(l8, np.zeros((2, size, size), np.int8), small)
    mask_full_resolution(small, l8, 2, small)


class Predictor(Protocol):
    """A model at one resolution, on some backend and device (see :mod:`semcolor.model.inference`)."""

    size: int
    """Model resolution in pixels (square)."""
    n_classes: int

    def predict(self, l8_small: np.ndarray, vividness: float | np.ndarray = ...) -> tuple[np.ndarray, np.ndarray]:
        """l8_small uint8 (B, S, S) -> (ab8 int8 (B, 2, S, S) LAB units, fg8 uint8 (B, S, S)); ``vividness`` in
        [0, 1] (one value, or one per image), its default the model's."""
        ...

    def describe(self) -> dict[str, Any]:
        """What is loaded, for logs and health checks: arch, backend, device, ..."""
        ...


@dataclass
class Colorizer:
    """The one inference core: prepare (full-resolution L + its model-size copy) -> predict -> finish (merge).

    Bulk colorization, evaluation, the Serve replica and the demo all run these same three steps; each front end
    only decides where they run (a Ray task, an actor, a request thread). Build one with
    :func:`semcolor.model.inference.load_colorizer`.
    """

    predictor: Predictor
    refine: str = DEFAULT_REFINE
    """How model-size AB and masks reach full resolution: guided by the full-resolution L, or bilinear."""

    def __post_init__(self) -> None:
        refine_maps.check_refine(self.refine)

    @property
    def size(self) -> int:
        return self.predictor.size

    @property
    def n_classes(self) -> int:
        return self.predictor.n_classes

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full-resolution uint8 RGB (H, W, 3) or gray (H, W) -> (l8 (H, W), l8_small (S, S))."""
        return prepare_l8(image, self.size)

    def predict(self, l8_small: np.ndarray, vividness: float | np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """l8_small uint8 (B, S, S) -> (ab8 int8 (B, 2, S, S) LAB units, fg8 uint8 (B, S, S)).

        ``vividness`` in [0, 1] (one value or one per image; None = the predictor's default): 0 = muted and most
        accurate, 0.5 = as trained, 1 = vivid (bins head, see :func:`semcolor.model.color_bins.decode_vivid`; a
        regression model ignores it).
        """
        if l8_small.ndim != 3 or l8_small.shape[1:] != (self.size, self.size):
            raise ValueError(f"l8_small must be (B, S, S) with S = {self.size}; got {l8_small.shape}")
        if vividness is None:
            return self.predictor.predict(l8_small)
        return self.predictor.predict(l8_small, vividness)

    def merge(self, l8: np.ndarray, ab8: np.ndarray, l8_small: np.ndarray | None = None) -> np.ndarray:
        """Full-res l8 (H, W) + model-size ab8 (2, S, S) -> RGB uint8 (H, W, 3). ``l8_small``: the model's input
        (the guided upsampling's model-size guide; recomputed from l8 when None)."""
        return merge_full_resolution(l8, ab8, l8_small, self.refine)

    def mask(self, l8: np.ndarray, fg8: np.ndarray, l8_small: np.ndarray | None = None) -> np.ndarray:
        """Model-size fg8 (S, S) -> mask uint8 at l8's (H, W): 0/255 (binary) or class ids."""
        return mask_full_resolution(fg8, l8, self.n_classes, l8_small, self.refine)

    def finish(self, l8: np.ndarray, ab8: np.ndarray, fg8: np.ndarray, l8_small: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Full-res l8 (H, W) + one image's model-size outputs -> (RGB uint8 (H, W, 3), mask uint8 (H, W))."""
        return self.merge(l8, ab8, l8_small), self.mask(l8, fg8, l8_small)

    def colorize(self, image: np.ndarray, vividness: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One full-resolution uint8 RGB (H, W, 3) or gray (H, W) image -> (RGB uint8 (H, W, 3), mask uint8 (H, W))."""
        return self.colorize_many([image], vividness)[0]

    def colorize_many(self, images: list[np.ndarray], vividness: float | None = None
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Batch of full-resolution images (any sizes) -> [(RGB uint8, mask uint8)], one forward pass."""
        prepared = [self.prepare(image) for image in images]
        ab8, fg8 = self.predict(np.stack([small for _, small in prepared]), vividness)
        return [self.finish(l8, ab, fg, small) for (l8, small), ab, fg in zip(prepared, ab8, fg8)]
