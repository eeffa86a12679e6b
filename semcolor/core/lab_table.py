"""LAB -> sRGB uint8 by one table lookup per pixel: the full-resolution merge's color conversion.

The merge's lightness is already quantized (``l8`` = L * 255/100, uint8) and its chroma is written as uint8 RGB,
so the float conversion (:func:`semcolor.core.color.lab_to_rgb`: cube, 3x3 matrix, gamma power per pixel) can be
tabulated once: every (l8, a, b) with a, b rounded to whole LAB units in [-128, 127] -> RGB (3 bytes), 256^3
entries (48 MiB), built on first use in each process (about a second) from the float conversion itself, so the two
agree exactly on whole-unit chroma. Rounding a and b to whole units moves a color by at most 0.71 LAB units
(below what the eye tells apart): about a third of an RGB level on average, more only where a channel of a
saturated color nears 0 (the steep foot of the sRGB curve).

Arrays: ``l8`` uint8 (H, W); ``ab`` float or integer (2, H, W) in LAB units; result uint8 (H, W, 3).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from semcolor.core import color

L8_SCALE = 255.0 / 100.0
"""l8 units per L unit: l8 = L * L8_SCALE, uint8."""
AB_MIN, AB_MAX = -128, 127


@functools.cache
def lab_table() -> np.ndarray:
    """uint8 (256 * 256 * 256, 3): row ``((a + 128) << 16) | ((b + 128) << 8) | l8`` holds sRGB (R, G, B) from
    :func:`semcolor.core.color.lab_to_rgb`, rounded. Lightness varies fastest: neighbouring pixels share their
    (smooth, upsampled) chroma and differ in lightness, so their rows lie close together in memory."""
    levels = torch.arange(256, dtype=torch.float32)
    lightness = (levels / L8_SCALE)[None, :].expand(256, 256)
    table = np.empty((256, 256, 256, 3), np.uint8)  # (a, b, l8, RGB)
    for a in range(256):  # one a-plane (64 K entries) at a time bounds the float memory
        lab = torch.stack([lightness, torch.full((256, 256), float(a + AB_MIN)),
                           (levels + AB_MIN)[:, None].expand(256, 256)])  # (3, b, l8)
        table[a] = color.float_to_uint8(color.lab_to_rgb(lab[None]))[0].numpy()
    return table.reshape(-1, 3)


def lab8_to_rgb(l8: np.ndarray, ab: torch.Tensor | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """l8 uint8 (H, W) + ab (2, H, W) in LAB units (rounded half up to whole units, clipped to [-128, 127]) ->
    sRGB uint8 (H, W, 3), written into ``out`` (C-contiguous uint8 (H, W, 3)) when given. (Whole images at once;
    the merge does the same per pixel in its compiled loop, :func:`semcolor.core.kernels.lab_rows`.)"""
    ab_t = torch.as_tensor(ab)
    if l8.dtype != np.uint8 or ab_t.shape != (2, *l8.shape):
        raise ValueError(f"need l8 uint8 (H, W) and ab (2, H, W); got {l8.dtype} {l8.shape} and {tuple(ab_t.shape)}")
    if out is None:
        out = np.empty((*l8.shape, 3), np.uint8)
    elif out.dtype != np.uint8 or out.shape != (*l8.shape, 3) or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous uint8 {(*l8.shape, 3)}; got {out.dtype} {out.shape}")
    # the row's index in float32, exact: every integer below 2^24 (the table's length) is representable
    shifted = ab_t.to(torch.float32).add(-AB_MIN).clamp_(0, AB_MAX - AB_MIN).add_(0.5).floor_()  # a + 128, b + 128
    index = torch.add(shifted[1], shifted[0], alpha=256).mul_(256)
    index.add_(torch.from_numpy(l8.astype(np.float32)))  # a copy: l8 may be a read-only buffer
    table = torch.from_numpy(lab_table())
    torch.index_select(table, 0, index.to(torch.int64).view(-1), out=torch.from_numpy(out).view(-1, 3))
    return out
