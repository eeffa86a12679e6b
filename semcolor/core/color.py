"""sRGB <-> CIELAB in torch, batched, device-agnostic and differentiable.

Conventions (the one scaling used everywhere in semcolor):

- RGB: float in [0, 1], shape (B, 3, H, W), sRGB gamma, D65 white.
- LAB: L in [0, 100], a/b in CIELAB units (roughly [-110, 110]), shape (B, 3, H, W).
- Model input: ``L / 100`` in [0, 1], shape (B, 1, H, W).
- Model color output: the head's own scale (``ModelConfig.ab_scale`` for the regression head), converted to LAB
  units by the model side (:mod:`semcolor.model`), never here.

Matches ``skimage.color.rgb2lab`` / ``lab2rgb`` (illuminant D65, observer 2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from semcolor.core import lightness

L_SCALE: float = 100.0
"""L units per model unit: model input is L / L_SCALE in [0, 1]."""

# sRGB (linear) -> XYZ, D65 (same matrix as scikit-image; numpy in semcolor.core.lightness).
_RGB_TO_XYZ = torch.tensor(lightness.RGB_TO_XYZ, dtype=torch.float64)
_XYZ_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ)
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_EPS = lightness.EPS
_KAPPA = lightness.KAPPA


def _matmul_channels(x: Tensor, matrix: Tensor) -> Tensor:
    """Apply a 3x3 matrix over the channel axis of (B, 3, H, W)."""
    return torch.einsum("ij,bjhw->bihw", matrix.to(device=x.device, dtype=x.dtype), x)


def _check_image_batch(x: Tensor, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W); got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be a float tensor; got {x.dtype} (divide uint8 by 255 first)")


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB (B, 3, H, W) in [0, 1] -> CIELAB (B, 3, H, W): L in [0, 100], a/b in LAB units."""
    _check_image_batch(rgb, "rgb")
    rgb = rgb.clamp(0.0, 1.0)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).clamp_min(1e-12) ** 2.4, rgb / 12.92)
    xyz = _matmul_channels(linear, _RGB_TO_XYZ)
    xyz = xyz / _WHITE_D65.to(device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    f = torch.where(xyz > _EPS, xyz.clamp_min(1e-12) ** (1.0 / 3.0), (_KAPPA * xyz + 16.0) / 116.0)
    fx, fy, fz = f[:, 0:1], f[:, 1:2], f[:, 2:3]
    lightness = 116.0 * fy - 16.0
    a = 500.0 * (fx - fy)
    b = 200.0 * (fy - fz)
    return torch.cat([lightness, a, b], dim=1)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """CIELAB (B, 3, H, W) -> sRGB (B, 3, H, W) in [0, 1], clipped; finite for out-of-gamut input."""
    _check_image_batch(lab, "lab")
    lightness, a, b = lab[:, 0:1], lab[:, 1:2], lab[:, 2:3]
    fy = (lightness + 16.0) / 116.0
    fx = fy + a / 500.0
    fz = (fy - b / 200.0).clamp_min(0.0)  # scikit-image clips negative z the same way
    f = torch.cat([fx, fy, fz], dim=1)
    xyz = torch.where(f > 6.0 / 29.0, f**3, (116.0 * f - 16.0) / _KAPPA)
    xyz = xyz * _WHITE_D65.to(device=lab.device, dtype=lab.dtype).view(1, 3, 1, 1)
    linear = _matmul_channels(xyz, _XYZ_TO_RGB).clamp_min(0.0)
    rgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(1e-12) ** (1.0 / 2.4) - 0.055, 12.92 * linear)
    return rgb.clamp(0.0, 1.0)


def split_lab(lab: Tensor) -> tuple[Tensor, Tensor]:
    """LAB (B, 3, H, W) -> (L (B, 1, H, W) in [0, 100], ab (B, 2, H, W) in LAB units)."""
    return lab[:, :1], lab[:, 1:]


def l_to_model(lightness: Tensor) -> Tensor:
    """L in [0, 100] -> model input in [0, 1]."""
    return lightness / L_SCALE


def l_from_model(l_input: Tensor) -> Tensor:
    """Model input in [0, 1] -> L in [0, 100]."""
    return l_input * L_SCALE


def merge_l_ab(lightness: Tensor, ab: Tensor) -> Tensor:
    """L (B, 1, H, W) in [0, 100] + ab (B, 2, H, W) in LAB units -> sRGB (B, 3, H, W) in [0, 1]."""
    if lightness.shape[-2:] != ab.shape[-2:]:
        raise ValueError(f"L and ab sizes differ: {tuple(lightness.shape)} vs {tuple(ab.shape)}")
    return lab_to_rgb(torch.cat([lightness, ab.to(lightness.dtype)], dim=1))


def uint8_to_float(images: Tensor) -> Tensor:
    """uint8 channels-last batch (B, H, W, 3) -> float (B, 3, H, W) in [0, 1]."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 (B, H, W, 3) images, got {images.dtype} {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).float() / 255.0


def float_to_uint8(rgb: Tensor) -> Tensor:
    """float (B, 3, H, W) in [0, 1] -> uint8 (B, H, W, 3), rounded."""
    return (rgb.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
