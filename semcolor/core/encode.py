"""Deterministic image encoding for bulk outputs: the same pixels always give the same bytes.

No timestamps, no text chunks, no EXIF, fixed encoder settings, so an image redone on a rerun is
byte-identical to its first version (the resume contract of :mod:`semcolor.bulk.job`).

- ``png``: lossless, :func:`semcolor.core.png.encode_png` (the Paeth filter on every row, zlib level 1 with
  run-length matching: Pillow's file sizes in a third of its time).
- ``jpg``: baseline JPEG at ``quality`` with 4:2:0 chroma subsampling (chroma comes from a model-size
  prediction that is upsampled, so it carries no detail that full-resolution chroma would keep).
- ``webp``: lossy WebP at ``quality``, method 4.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from semcolor.core.png import encode_png

FORMATS: dict[str, str] = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "webp": "webp"}
"""Accepted format names -> the file extension written."""

def extension_of(fmt: str) -> str:
    """Format name (``png``, ``jpg``/``jpeg``, ``webp``; any case) -> file extension without dot."""
    try:
        return FORMATS[fmt.lower()]
    except KeyError:
        raise ValueError(f"Wrong output format {fmt!r}; supported: {sorted(set(FORMATS.values()))}") from None


def check_quality(quality: int) -> int:
    """``quality`` must be an int in 1..100 (jpg / webp); returns it."""
    if not isinstance(quality, (int, np.integer)) or not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be an integer in 1..100, got {quality!r}")
    return int(quality)


def encode_rgb(rgb: np.ndarray, fmt: str = "png", quality: int = 90) -> bytes:
    """uint8 RGB (H, W, 3) -> encoded bytes of ``fmt`` (png / jpg / webp), deterministic."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_rgb needs uint8 (H, W, 3); got {rgb.dtype} {rgb.shape}")
    ext = extension_of(fmt)
    if ext == "png":
        return encode_png(rgb)
    img = Image.fromarray(np.ascontiguousarray(rgb))
    buf = io.BytesIO()
    if ext == "jpg":
        img.save(buf, format="JPEG", quality=check_quality(quality), subsampling="4:2:0", optimize=False)
    else:
        img.save(buf, format="WEBP", quality=check_quality(quality), method=4, exact=False)
    return buf.getvalue()


def encode_mask(mask: np.ndarray) -> bytes:
    """uint8 mask (H, W) (0/255 or class ids) -> single-channel PNG bytes (lossless, deterministic)."""
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"encode_mask needs uint8 (H, W); got {mask.dtype} {mask.shape}")
    return encode_png(mask)
