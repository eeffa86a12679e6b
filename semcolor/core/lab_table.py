"""LAB -> sRGB uint8 by one table lookup per pixel: the full-resolution merge's color conversion.

The merge's lightness is already quantized (``l8`` = L * 255/100, uint8) and its chroma is written as uint8 RGB,
so the float conversion (:func:`semcolor.core.color.lab_to_rgb`: cube, 3x3 matrix, gamma power per pixel) can be
tabulated once: every (l8, a, b) with a, b rounded to whole LAB units in [-128, 127] -> RGB (3 bytes), 256^3
entries (48 MiB), built (about a second) from the float conversion itself, so the two agree exactly on whole-unit
chroma. The table is saved once per machine in the cache folder (:func:`semcolor.core.cache.cache_folder`) and
mapped from there by every later process: the page cache then holds one copy for all of a node's workers, and none
of them spends the second building it. Rounding a and b to whole units moves a color by at most 0.71 LAB units
(below what the eye tells apart): about a third of an RGB level on average, more only where a channel of a
saturated color nears 0 (the steep foot of the sRGB curve). The merge looks the table up per pixel in its compiled
loop (:func:`semcolor.core.kernels.lab_rows`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from semcolor.core.cache import cache_folder
from semcolor.core.lightness import L8_SCALE

AB_MIN = -128
"""The lowest whole a or b the table holds; the highest is AB_MIN + 255."""


@functools.cache
def lab_table() -> np.ndarray:
    """uint8 (256 * 256 * 256, 3): row ``((a + 128) << 16) | ((b + 128) << 8) | l8`` holds sRGB (R, G, B) from
    :func:`semcolor.core.color.lab_to_rgb`, rounded. Lightness varies fastest: neighbouring pixels share their
    (smooth, upsampled) chroma and differ in lightness, so their rows lie close together in memory.

    Read-only, mapped from the cache folder when a saved copy is there (keyed by the source of the conversion and of
    this module); otherwise built here and saved (atomically) for the next process, or only kept in memory when the
    folder cannot be written."""
    path = Path(cache_folder()) / f"lab_table-{_conversion_key()}.npy"
    try:
        table = np.load(path, mmap_mode="r")
        if table.shape == (1 << 24, 3) and table.dtype == np.uint8:
            return table
    except (OSError, ValueError):
        pass
    table = build_lab_table()
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as f:
            np.save(f, table)
        os.replace(partial, path)
    except OSError:  # a read-only or missing folder: this process keeps its own copy
        with contextlib.suppress(OSError):
            partial.unlink()
    table.flags.writeable = False
    return table


def _conversion_key() -> str:
    """A short hash of the code that defines the table's contents (this module, :mod:`semcolor.core.color` and
    :mod:`semcolor.core.lightness`; read as files: looking the table up needs no torch)."""
    digest = hashlib.sha256()
    for module in ("color.py", "lightness.py", Path(__file__).name):
        digest.update(Path(__file__).with_name(module).read_bytes())
    return digest.hexdigest()[:16]


def build_lab_table() -> np.ndarray:
    """The table of :func:`lab_table`, computed with :func:`semcolor.core.color.lab_to_rgb`: uint8 (256 * 256 * 256,
    3)."""
    import torch

    from semcolor.core import color

    levels = torch.arange(256, dtype=torch.float32)
    lightness = (levels / L8_SCALE)[None, :].expand(256, 256)
    table = np.empty((256, 256, 256, 3), np.uint8)  # (a, b, l8, RGB)
    for a in range(256):  # one a-plane (64 K entries) at a time bounds the float memory
        lab = torch.stack([lightness, torch.full((256, 256), float(a + AB_MIN)),
                           (levels + AB_MIN)[:, None].expand(256, 256)])  # (3, b, l8)
        table[a] = color.float_to_uint8(color.lab_to_rgb(lab[None]))[0].numpy()
    return table.reshape(-1, 3)

