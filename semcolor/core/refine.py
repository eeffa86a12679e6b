"""Upsampling model-size maps (AB, mask probability) to the source's full resolution, guided by its lightness.

``bilinear``: plain bilinear interpolation (chroma bleeds across edges, masks are blobs).
``guided``: guided upsampling after the fast guided filter (He, Sun & Tang, "Guided Image Filtering", TPAMI 2013;
He & Sun, "Fast Guided Filter", 2015): at model size, fit per window a linear model ``src ~ A * L + b`` of the map
on the model-size lightness and average ``A`` over windows; at full resolution add to the bilinear map what that
slope makes of the lightness detail bilinear upsampling lost: ``up(src) + up(A) * (L - up(L_small))``. Where L is
flat (no detail lost) the result is exactly bilinear; at an edge of L the map's change lands on L's edge.

Arrays: ``l8`` uint8 (H, W) full-resolution L * 255/100; ``l8_small`` uint8 (S, S) its model-size copy;
maps float32 tensors (C, S, S) -> (C, H, W).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

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


def _box(x: Tensor, radius: int) -> Tensor:
    """Mean over (2r + 1)^2 windows of (1, C, S, S), windows clipped at the borders."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def guided_slope(guide: Tensor, src: Tensor, radius: int = GUIDED_RADIUS, eps: float = GUIDED_EPS) -> Tensor:
    """Guide (1, 1, S, S) and maps (1, C, S, S) -> the window-averaged slope A (1, C, S, S) of ``src ~ A * guide + b``
    fitted in every (2r + 1)^2 window (regularised by ``eps``)."""
    mean_i = _box(guide, radius)
    mean_p = _box(src, radius)
    cov_ip = _box(guide * src, radius) - mean_i * mean_p
    var_i = _box(guide * guide, radius) - mean_i * mean_i
    return _box(cov_ip / (var_i.clamp_min(0.0) + eps), radius)


def upsample(maps: Tensor, l8: np.ndarray, l8_small: np.ndarray | None, refine: str = DEFAULT_REFINE) -> Tensor:
    """Model-size maps float32 (C, S, S) -> (C, H, W) at l8's size, bilinear or guided by the full-resolution L.

    ``l8_small`` (S, S): the model's own input (recomputed from ``l8`` when None).
    """
    check_refine(refine)
    h, w = l8.shape
    src = maps.float()[None]
    if refine == "bilinear":
        return F.interpolate(src, size=(h, w), mode="bilinear", align_corners=False)[0]
    size = maps.shape[-1]
    if l8_small is None:
        from semcolor.core.colorizer import resize_l8

        l8_small = resize_l8(l8, size)
    if l8_small.shape != tuple(maps.shape[-2:]):
        raise ValueError(f"l8_small {l8_small.shape} does not match the maps' size {tuple(maps.shape[-2:])}")
    guide = torch.from_numpy(l8_small.astype(np.float32) / 255.0)[None, None]
    slope = guided_slope(guide, src)
    up = lambda x: F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)[0]  # noqa: E731
    detail = torch.from_numpy(l8).float().div_(255.0)[None]
    detail -= up(guide)  # the lightness detail bilinear upsampling of the model's input loses: 0 where L is flat
    out = up(slope)
    out *= detail
    out += up(src)
    return out
