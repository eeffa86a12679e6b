"""The AB plane as a grid of cells, and the cells 8-bit sRGB colours reach: the quantization that both the AB prior
pass (:mod:`semcolor.data.color_prior`) and the bins color head (:mod:`semcolor.model.color_bins`) use.

Units: AB in CIELAB units; ``bins`` float32 (Q, 2) bin centres; a grid of ``GRID`` units puts centres at multiples
of the grid (cells ``[c - grid/2, c + grid/2)``). Pure torch.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

GRID = 10.0
"""Bin size in LAB units (Zhang et al.'s grid 10: 261 bins reachable from sRGB)."""
CELL_SPAN = 12
"""Cells per axis from the centre: centres at -120..120 cover every sRGB colour (a in [-87, 99], b in [-108, 95])."""


def cell_index(ab: Tensor, grid: float = GRID) -> Tensor:
    """AB (..., 2) -> int64 cell index (...) on the (2 CELL_SPAN + 1)^2 grid: floor(ab / grid + 1/2) per axis."""
    side = 2 * CELL_SPAN + 1
    q = torch.floor(ab / grid + 0.5).long().clamp(-CELL_SPAN, CELL_SPAN) + CELL_SPAN
    return q[..., 0] * side + q[..., 1]


@functools.lru_cache(maxsize=4)
def gamut_bins(grid: float = GRID) -> Tensor:
    """float32 (Q, 2): centres of the cells that some 8-bit sRGB colour falls in (Q = 261 at grid 10).

    Computed exactly over all 2^24 colours with :func:`semcolor.core.color.rgb_to_lab` (about 1 s, once per
    process) on one torch thread: 256 passes of small ops, where a team of threads gains nothing and, on a busy
    machine, stalls (measured 57 s on 2 threads beside a training run on the same 2 cores, 1.3 s on one); a trained
    model keeps its bins in its checkpoint, so inference never recomputes them.
    """
    from semcolor.core import color

    side = 2 * CELL_SPAN + 1
    seen = torch.zeros(side * side, dtype=torch.bool)
    v = torch.arange(256, dtype=torch.uint8)
    g, b = torch.meshgrid(v, v, indexing="ij")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for r in range(256):  # one red value at a time: 65536 colours, bounded memory
            rgb = torch.stack([torch.full_like(g, r), g, b], dim=-1)[None]
            ab = color.rgb_to_lab(color.uint8_to_float(rgb))[0, 1:].reshape(2, -1).T
            seen[cell_index(ab, grid)] = True
    finally:
        torch.set_num_threads(threads)
    idx = seen.nonzero()[:, 0]
    centres = torch.stack([idx // side, idx % side], dim=1).float() - CELL_SPAN
    return centres * grid


def cell_to_bin(bins: Tensor, grid: float = GRID) -> Tensor:
    """int64 ((2 CELL_SPAN + 1)^2,): the bin index of each grid cell, -1 for cells outside ``bins``."""
    side = 2 * CELL_SPAN + 1
    table = torch.full((side * side,), -1, dtype=torch.long)
    table[cell_index(bins.float(), grid)] = torch.arange(len(bins))
    return table


def quantize(ab: Tensor, bins: Tensor, grid: float = GRID) -> Tensor:
    """AB (..., 2) -> int64 bin index (...): the bin whose cell holds the colour (nearest bin when the cell is not
    one of ``bins``, which no 8-bit sRGB colour gives)."""
    idx = cell_to_bin(bins, grid).to(ab.device)[cell_index(ab, grid)]
    missing = idx < 0
    if bool(missing.any()):
        idx[missing] = torch.cdist(ab[missing].float(), bins.to(ab.device).float()).argmin(dim=1)
    return idx
