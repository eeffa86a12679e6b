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

from collections.abc import Iterator
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


def _window_counts(n: int, radius: int) -> Tensor:
    """Pixels per (2r + 1) window clipped to [0, n): float32 (n,)."""
    i = torch.arange(n)
    return ((i + radius).clamp_max(n - 1) - (i - radius).clamp_min(0) + 1).float()


def _box(x: Tensor, radius: int) -> Tensor:
    """Mean over (2r + 1)^2 windows of (1, C, S, S), windows clipped at the borders (as ``avg_pool2d`` with
    ``count_include_pad=False``): window sums over the zero-padded maps, column then row, over the clipped windows'
    pixel counts."""
    k = 2 * radius + 1
    sums = F.pad(x, (radius,) * 4).unfold(2, k, 1).sum(-1).unfold(3, k, 1).sum(-1)
    counts = _window_counts(x.shape[-2], radius)[:, None] * _window_counts(x.shape[-1], radius)[None, :]
    return sums / counts


def guided_slope(guide: Tensor, src: Tensor, radius: int = GUIDED_RADIUS, eps: float = GUIDED_EPS) -> Tensor:
    """Guide (1, 1, S, S) and maps (1, C, S, S) -> the window-averaged slope A (1, C, S, S) of ``src ~ A * guide + b``
    fitted in every (2r + 1)^2 window (regularised by ``eps``)."""
    c = src.shape[1]
    means = _box(torch.cat([guide, src, guide * src, guide * guide], dim=1), radius)  # one pass for all four
    mean_i, mean_p, mean_ip, mean_ii = means[:, :1], means[:, 1:1 + c], means[:, 1 + c:1 + 2 * c], means[:, -1:]
    cov_ip = mean_ip - mean_i * mean_p
    var_i = mean_ii - mean_i * mean_i
    return _box(cov_ip / (var_i.clamp_min(0.0) + eps), radius)


def _rows_and_weights(height: int, size: int) -> tuple[np.ndarray, Tensor]:
    """For each of ``height`` output rows, the first of the two model-size rows bilinear interpolation
    (align_corners=False, as ``F.interpolate``) blends, and the second one's weight: y0 int64 (H,), w float32 (H,).
    The second row is y0 + 1 (or y0 itself at the last row, where the weight meets a zero difference)."""
    scale = size / height
    src = ((torch.arange(height, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_min(0.0)
    y0 = src.floor().clamp_max(size - 1)
    return y0.to(torch.int64).numpy(), src - y0


def _bands(y0: np.ndarray, band_rows: int) -> Iterator[tuple[int, int, list[tuple[int, int, int]]]]:
    """Output rows in bands of about ``band_rows`` that end where a run of rows sharing y0 ends: (top, end,
    [(y0, first row, end row) for each run in the band])."""
    starts = np.flatnonzero(np.diff(y0, prepend=-1)).tolist() + [len(y0)]
    runs = [(int(y0[a]), a, b) for a, b in zip(starts, starts[1:])]
    top, band = 0, []
    for run in runs:
        band.append(run)
        if run[2] - top >= band_rows or run is runs[-1]:
            yield top, run[2], band
            top, band = run[2], []


def upsample_bands(maps: Tensor, l8: np.ndarray, l8_small: np.ndarray | None, refine: str = DEFAULT_REFINE,
                   band_pixels: int = 1 << 18) -> Iterator[tuple[int, Tensor]]:
    """Model-size maps float32 (C, S, S) -> bands (top row, (C, rows, W)) of the maps at l8's (H, W), bilinear or
    guided by the full-resolution L, about ``band_pixels`` pixels per band (memory stays bounded on 12+ MP scans).

    Bilinear interpolation is separable: the maps (with the guided filter's slope and the model-size L) are first
    interpolated along rows to (S, W); then every run of output rows between the same two of those rows is one
    broadcast multiply-add (row + weight * difference to the next row). ``l8_small`` (S, S): the model's own input
    (recomputed from ``l8`` when None).
    """
    check_refine(refine)
    h, w = l8.shape
    src = maps.float()[None]
    channels = src.shape[1]
    if refine == "guided":
        size = maps.shape[-1]
        if l8_small is None:
            from semcolor.core.colorizer import resize_l8

            l8_small = resize_l8(l8, size)
        if l8_small.shape != tuple(maps.shape[-2:]):
            raise ValueError(f"l8_small {l8_small.shape} does not match the maps' size {tuple(maps.shape[-2:])}")
        guide = torch.from_numpy(l8_small.astype(np.float32) / 255.0)[None, None]
        src = torch.cat([src, guided_slope(guide, src), guide], dim=1)  # maps, slopes, model-size L
    wide = F.interpolate(src, size=(src.shape[-2], w), mode="bilinear", align_corners=False)[0]  # (C', S, W)
    step = torch.zeros_like(wide)  # to the next model-size row; 0 after the last
    torch.sub(wide[:, 1:], wide[:, :-1], out=step[:, :-1])
    y0, weight = _rows_and_weights(h, src.shape[-2])
    for top, end, runs in _bands(y0, max(1, band_pixels // max(1, w))):
        up = torch.empty((wide.shape[0], end - top, w))
        for row, first, stop in runs:
            torch.addcmul(wide[:, row:row + 1], step[:, row:row + 1], weight[first:stop].view(1, -1, 1),
                          out=up[:, first - top:stop - top])
        if refine == "bilinear":
            yield top, up
            continue
        # the lightness detail bilinear upsampling of the model's input loses (0 where L is flat), times the slope
        detail = torch.from_numpy(l8[top:end].astype(np.float32)).div_(255.0).sub_(up[2 * channels])
        yield top, torch.addcmul(up[:channels], up[channels:2 * channels], detail)


def upsample(maps: Tensor, l8: np.ndarray, l8_small: np.ndarray | None, refine: str = DEFAULT_REFINE) -> Tensor:
    """Model-size maps float32 (C, S, S) -> (C, H, W) at l8's size, bilinear or guided by the full-resolution L
    (all bands of :func:`upsample_bands` at once).

    ``l8_small`` (S, S): the model's own input (recomputed from ``l8`` when None).
    """
    return torch.cat([band for _, band in upsample_bands(maps, l8, l8_small, refine)], dim=1)
