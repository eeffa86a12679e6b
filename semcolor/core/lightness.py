"""The source's lightness: uint8 RGB or gray -> ``l8`` (CIELAB L * 255/100, uint8) and its model-size copy.

numpy and Pillow only (no torch): the decode and merge stages of the bulk job import this, and their worker
processes then start without loading torch. The formula is :func:`semcolor.core.color.rgb_to_lab`'s (sRGB, D65,
the same matrix and constants, which that module takes from here).

Arrays: ``rgb`` uint8 (H, W, 3) or gray (H, W); ``l8`` uint8 (H, W); ``l8_small`` uint8 (S, S).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

RGB_TO_XYZ = np.array([
    [0.412453, 0.357580, 0.180423],
    [0.212671, 0.715160, 0.072169],
    [0.019334, 0.119193, 0.950227],
])
"""Linear sRGB -> XYZ, D65 (scikit-image's matrix), float64 (3, 3)."""
EPS = 216.0 / 24389.0
"""(6/29)^3: where CIELAB's f(t) turns from the cube root to its linear foot."""
KAPPA = 24389.0 / 27.0
"""The slope of CIELAB's linear foot (f(t) = (KAPPA t + 16) / 116)."""
L8_SCALE = 255.0 / 100.0
"""l8 units per L unit: l8 = L * L8_SCALE, uint8."""
L_BAND_PIXELS = 1 << 18
"""RGB -> L works in row bands of about 0.25 MP: bounded memory, warm caches."""


def srgb_luminance_luts() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel lookup tables uint8 -> float32 contribution to CIE Y (linearised sRGB x XYZ row Y)."""
    v = np.arange(256, dtype=np.float64) / 255.0
    linear = np.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)
    # Y of D65 white is 1.0, so no white-point division
    return tuple((linear * w).astype(np.float32) for w in RGB_TO_XYZ[1])  # type: ignore[return-value]


_Y_LUTS = srgb_luminance_luts()


def _luminance_to_l8(y: np.ndarray) -> np.ndarray:
    """CIE Y float32 (any shape) -> uint8 L * 255/100."""
    f = np.where(y > EPS, np.cbrt(y), (KAPPA * y + 16.0) / 116.0)
    return np.clip(np.rint((116.0 * f - 16.0) * L8_SCALE), 0, 255).astype(np.uint8)


def _rgb_band_to_l8(rgb: np.ndarray) -> np.ndarray:
    y = _Y_LUTS[0][rgb[..., 0]]
    y += _Y_LUTS[1][rgb[..., 1]]
    y += _Y_LUTS[2][rgb[..., 2]]
    return _luminance_to_l8(y)


_GRAY_L8 = _rgb_band_to_l8(np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1))
"""L8 of gray value v (R = G = B = v): a 256-entry table, identical to the RGB path for gray pixels."""


def rgb_to_l8(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) or gray (H, W) -> uint8 L * 255/100 (H, W).

    CIELAB L depends on luminance Y only, so it is computed with per-channel lookup tables (sRGB
    linearisation x the Y row of the sRGB->XYZ matrix) and a cube root in float32, in row bands of
    about L_BAND_PIXELS: the same formula as :func:`semcolor.core.color.rgb_to_lab`, ~25x faster
    than the general LAB path on CPU. Gray input is a single table lookup.
    """
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3) or (rgb.ndim == 3 and rgb.shape[2] != 3):
        raise ValueError(f"rgb must be uint8 (H, W, 3) or (H, W); got {rgb.dtype} {rgb.shape}")
    if rgb.ndim == 2:
        return _GRAY_L8[rgb]
    out = np.empty(rgb.shape[:2], dtype=np.uint8)
    rows = max(1, L_BAND_PIXELS // max(1, rgb.shape[1]))
    for top in range(0, rgb.shape[0], rows):
        out[top:top + rows] = _rgb_band_to_l8(rgb[top:top + rows])
    return out


def resize_l8(l8: np.ndarray, size: int) -> np.ndarray:
    """Full-resolution l8 (H, W) -> (size, size) with Pillow's area-averaging (box) filter for downscaling."""
    img = Image.fromarray(l8, mode="L")
    shrinking = img.width >= size and img.height >= size
    return np.asarray(img.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR))


def prepare_l8(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution uint8 RGB (H, W, 3) or gray (H, W) -> (l8 (H, W), its (size, size) copy for the model)."""
    l8 = rgb_to_l8(image)
    return l8, resize_l8(l8, size)
