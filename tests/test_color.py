"""semcolor.core.color against scikit-image: random colors, cube corners, round trips, gradients."""

import numpy as np
import pytest
import torch
from skimage.color import lab2rgb, rgb2lab

from semcolor.core import color

CORNERS = np.array(
    [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [0.5, 0.5, 0.5]],
    dtype=np.float64,
)


def _to_torch(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(hwc).permute(2, 0, 1)[None]


def _to_numpy(bchw: torch.Tensor) -> np.ndarray:
    return bchw[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rgb_to_lab_matches_skimage(dtype):
    rng = np.random.default_rng(0)
    rgb = np.concatenate([rng.random((1, 500, 3)), CORNERS[None]], axis=1)
    ours = _to_numpy(color.rgb_to_lab(_to_torch(rgb).to(dtype)).double())
    tol = 1e-3 if dtype == torch.float64 else 5e-3
    np.testing.assert_allclose(ours, rgb2lab(rgb), atol=tol)


def test_corners_exact():
    lab = _to_numpy(color.rgb_to_lab(_to_torch(CORNERS[None])))
    np.testing.assert_allclose(lab[0, 0], [0, 0, 0], atol=1e-3)
    # white: L = 100; a/b within 0.01 (scikit-image's sRGB matrix and D65 white differ by that much too)
    np.testing.assert_allclose(lab[0, 1], [100, 0, 0], atol=1e-2)
    np.testing.assert_allclose(lab, rgb2lab(CORNERS[None]), atol=1e-3)


def test_lab_to_rgb_matches_skimage_including_out_of_gamut():
    rng = np.random.default_rng(1)
    lab = np.stack([rng.uniform(0, 100, 800), rng.uniform(-128, 127, 800), rng.uniform(-128, 127, 800)], -1)[None]
    ours = _to_numpy(color.lab_to_rgb(_to_torch(lab)))
    assert np.isfinite(ours).all() and ours.min() >= 0 and ours.max() <= 1
    np.testing.assert_allclose(ours, np.clip(lab2rgb(lab), 0, 1), atol=1e-3)


def test_uint8_round_trip_within_one_level():
    rng = np.random.default_rng(2)
    rgb8 = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    rgb8[0, 0, :8] = (CORNERS[:8] * 255).astype(np.uint8)
    t = torch.from_numpy(rgb8)
    back = color.float_to_uint8(color.lab_to_rgb(color.rgb_to_lab(color.uint8_to_float(t)))).numpy()
    assert np.abs(back.astype(int) - rgb8.astype(int)).max() <= 1


def test_gradients_flow_and_are_finite():
    rgb = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    lab = color.rgb_to_lab(rgb)
    color.lab_to_rgb(lab * 1.1).sum().backward()
    assert rgb.grad is not None and torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    # black and white corners have finite gradients too
    corners = torch.tensor(CORNERS, dtype=torch.float64).T[None, :, None, :].clone().requires_grad_(True)
    color.rgb_to_lab(corners).sum().backward()
    assert torch.isfinite(corners.grad).all()


def test_scaling_helpers_invert():
    lightness = torch.rand(2, 1, 4, 4) * 100
    torch.testing.assert_close(color.l_from_model(color.l_to_model(lightness)), lightness)
    lab = color.rgb_to_lab(torch.rand(1, 3, 4, 4))
    lightness, ab = color.split_lab(lab)
    assert lightness.shape == (1, 1, 4, 4) and ab.shape == (1, 2, 4, 4)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        color.rgb_to_lab(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="float"):
        color.rgb_to_lab(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
