"""Upsampling model-size maps (AB, mask probability) to the source's full resolution, guided by its lightness.

``bilinear``: plain bilinear interpolation (chroma bleeds across edges, masks are blobs).
``guided``: guided upsampling after the fast guided filter (He, Sun & Tang, "Guided Image Filtering", TPAMI 2013;
He & Sun, "Fast Guided Filter", 2015): at model size, fit per window a linear model ``src ~ A * L + b`` of the map
on the model-size lightness and average ``A`` over windows; the full-resolution map is then the affine map of the
full-resolution lightness ``up(A) * L + up(src - A * L_small)``. Where L is flat the result is exactly bilinear
(the two L terms cancel); at an edge of L the map's change lands on L's edge.

Both are evaluated the same way: model-size slope and offset maps (the slope 0 for bilinear), interpolated along
rows to the output width here, then blended between model rows and applied to L per pixel in one compiled pass
(:mod:`semcolor.core.kernels`).

Arrays: ``l8`` uint8 (H, W) full-resolution L * 255/100; ``l8_small`` uint8 (S, S) its model-size copy;
maps float32 (C, S, S) -> (C, H, W). numpy and numba only (no torch): the bulk job's merge workers start without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from semcolor.core import kernels
from semcolor.core.lightness import resize_l8

REFINES = ("guided", "bilinear")
DEFAULT_REFINE = "guided"
GUIDED_RADIUS = 2
"""Window radius in model-size pixels (a 5 x 5 window)."""
GUIDED_EPS = 2e-3
"""Regularisation of A, in (L / 100)^2: L steps well above sqrt(eps) ~ 4.5 L units steer the map; smaller
texture does not."""


def refine_option() -> Any:
    """The ``--refine`` option of every command that colorizes."""
    from semcolor.options import option

    return option(DEFAULT_REFINE, choices=REFINES, help="how model-size colors and masks reach the source's full "
                  "resolution: guided (a fast guided filter on the full-resolution lightness: edges stay sharp) "
                  "or bilinear")


def check_refine(refine: str) -> str:
    """``refine`` if known, else ValueError naming the choices."""
    if refine not in REFINES:
        raise ValueError(f"refine must be one of {list(REFINES)}; got {refine!r}")
    return refine


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over (2r + 1)^2 windows of float32 (C, S, S), windows clipped at the borders (as ``avg_pool2d`` with
    ``count_include_pad=False``; :func:`semcolor.core.kernels.box_means`)."""
    out = np.empty(x.shape, np.float32)
    kernels.box_means(np.ascontiguousarray(x, dtype=np.float32), radius, out)
    return out


def guided_slope(guide: np.ndarray, src: np.ndarray, radius: int = GUIDED_RADIUS, eps: float = GUIDED_EPS
                 ) -> np.ndarray:
    """Guide float32 (1, S, S) and maps (C, S, S) -> the window-averaged slope A (C, S, S) of ``src ~ A * guide + b``
    fitted in every (2r + 1)^2 window (regularised by ``eps``)."""
    c = src.shape[0]
    means = _box(np.concatenate([guide, src, guide * src, guide * guide]), radius)  # one pass for all four
    mean_i, mean_p, mean_ip, mean_ii = means[:1], means[1:1 + c], means[1 + c:1 + 2 * c], means[-1:]
    cov_ip = mean_ip - mean_i * mean_p
    var_i = mean_ii - mean_i * mean_i
    return _box(cov_ip / (np.maximum(var_i, 0.0) + np.float32(eps)), radius)


def _taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear interpolation (align_corners=False, as ``F.interpolate``) of ``n_in`` samples at ``n_out``
    positions: the first of the two input samples each output blends (int64 (n_out,)) and the second one's weight
    (float32 (n_out,)). The second sample is the next one (or the same at the last, where the weight meets a zero
    difference)."""
    scale = np.float32(n_in / n_out)
    src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    first = np.minimum(np.floor(src), n_in - 1)
    return first.astype(np.int64), (src - first).astype(np.float32)


def affine_maps(maps: np.ndarray, l8: np.ndarray, l8_small: np.ndarray | None, refine: str = DEFAULT_REFINE
                ) -> tuple[np.ndarray, np.ndarray]:
    """Model-size maps float32 (C, S, S) -> (slope, offset), each (C, S, S): the map at full resolution is
    ``up(offset) + up(slope) * l8`` (slope per l8 unit; 0 for ``bilinear``). ``l8_small`` (S, S): the model's
    own input (recomputed from ``l8`` when None)."""
    check_refine(refine)
    maps = np.asarray(maps, dtype=np.float32)
    if refine == "bilinear":
        return np.zeros_like(maps), maps
    size = maps.shape[-1]
    if l8_small is None:
        l8_small = resize_l8(l8, size)
    if l8_small.shape != tuple(maps.shape[-2:]):
        raise ValueError(f"l8_small {l8_small.shape} does not match the maps' size {tuple(maps.shape[-2:])}")
    guide = (l8_small.astype(np.float32) / np.float32(255.0))[None]
    slope = guided_slope(guide, maps)  # per unit of L / 255 (l8 / 255)
    return slope / np.float32(255.0), maps - slope * guide


@dataclass(frozen=True)
class RowMaps:
    """Slope and offset maps ready for the compiled loops of :mod:`semcolor.core.kernels`: interpolated along rows
    to the output width (``wide`` float32 (2C, S, W), C slopes then C offsets) with, per output row, the
    model-size row to blend from (``y0`` int64 (H,)) and the next row's weight (``weight`` float32 (H,))."""

    wide: np.ndarray
    y0: np.ndarray
    weight: np.ndarray


def row_maps(maps: np.ndarray, l8: np.ndarray, l8_small: np.ndarray | None, refine: str = DEFAULT_REFINE,
             offset: float = 0.0) -> RowMaps:
    """Model-size maps float32 (C, S, S) -> :class:`RowMaps` for l8's (H, W), with ``offset`` added to every value
    (e.g. the LAB table's index offset)."""
    slope, intercept = affine_maps(maps, l8, l8_small, refine)
    channels, size = slope.shape[0], slope.shape[-2]
    wide = np.empty((2 * channels, size, l8.shape[1]), np.float32)
    x0, wx = _taps(l8.shape[1], slope.shape[-1])
    kernels.interpolate_columns(np.ascontiguousarray(slope), x0, wx, 0.0, wide[:channels])
    kernels.interpolate_columns(np.ascontiguousarray(intercept), x0, wx, offset, wide[channels:])
    y0, weight = _taps(l8.shape[0], size)
    return RowMaps(wide, y0, weight)


def upsample(maps: np.ndarray, l8: np.ndarray, l8_small: np.ndarray | None, refine: str = DEFAULT_REFINE
             ) -> np.ndarray:
    """Model-size maps float32 (C, S, S) -> float32 (C, H, W) at l8's size, bilinear or guided by the
    full-resolution L. ``l8_small`` (S, S): the model's own input (recomputed from ``l8`` when None)."""
    rows = row_maps(maps, l8, l8_small, refine)
    out = np.empty((rows.wide.shape[0] // 2, *l8.shape), np.float32)
    kernels.affine_rows(rows.wide, rows.y0, rows.weight, np.ascontiguousarray(l8), out)
    return out
