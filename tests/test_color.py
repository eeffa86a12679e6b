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
    # the model's input scale is L / 100: black, mid and white L map to 0, 0.5 and 1
    torch.testing.assert_close(color.l_to_model(torch.tensor([0.0, 50.0, 100.0])), torch.tensor([0.0, 0.5, 1.0]))


def test_split_and_merge_keep_each_channel_where_it_belongs():
    """L, a and b of distinct values: split_lab gives L and (a, b) in that order, merge_l_ab puts them back where
    scikit-image's lab2rgb expects them (a swap of a and b, or of L and a, changes the colors)."""
    lab = np.array([[[62.0, 35.0, -48.0], [40.0, -20.0, 30.0]]])  # (1, 2, 3): a violet and an olive
    lightness, ab = color.split_lab(_to_torch(lab))
    np.testing.assert_array_equal(lightness[0, 0].numpy(), [[62.0, 40.0]])
    np.testing.assert_array_equal(ab[0].numpy(), [[[35.0, -20.0]], [[-48.0, 30.0]]])
    merged = _to_numpy(color.merge_l_ab(lightness, ab.float()))
    np.testing.assert_allclose(merged, np.clip(lab2rgb(lab), 0, 1), atol=1e-3)
    with pytest.raises(ValueError, match="sizes differ"):
        color.merge_l_ab(lightness, ab[..., :1])


def test_uint8_conversions_are_channels_first_and_rounded():
    """uint8 (B, H, W, 3) <-> float (B, 3, H, W): known pixels land in the right channel, divided by 255; back to
    uint8 rounds to the nearest level (a round trip alone passes any pair of inverse layouts)."""
    rgb8 = torch.tensor([[[[255, 0, 51], [0, 102, 255]]]], dtype=torch.uint8)  # (1, 1, 2, 3)
    as_float = color.uint8_to_float(rgb8)
    assert as_float.shape == (1, 3, 1, 2) and as_float.dtype == torch.float32
    torch.testing.assert_close(as_float[0, :, 0], torch.tensor([[1.0, 0.0], [0.0, 0.4], [0.2, 1.0]]))
    values = torch.tensor([0.0, 0.49 / 255, 1.51 / 255, 254.6 / 255, 1.2, -0.3]).view(1, 1, 1, 6)
    back = color.float_to_uint8(torch.cat([values, values / 2, values / 4], dim=1))
    assert back.shape == (1, 1, 6, 3)
    assert back[0, 0, :, 0].tolist() == [0, 0, 2, 255, 255, 0]
    assert back[0, 0, 3].tolist() == [255, 127, 64]  # channel c of pixel 3 is 254.6 / 2 ** c, rounded
    with pytest.raises(ValueError, match="uint8"):
        color.uint8_to_float(rgb8.float())


def test_gradients_match_finite_differences():
    """Away from the piecewise joins, rgb_to_lab's and lab_to_rgb's autograd gradients are their derivatives."""
    rgb = (torch.rand(1, 3, 2, 2, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(color.rgb_to_lab, (rgb,))
    lab = torch.tensor([[50.0, 10.0, -10.0], [70.0, -20.0, 15.0]], dtype=torch.float64).T.reshape(1, 3, 1, 2)
    assert torch.autograd.gradcheck(color.lab_to_rgb, (lab.requires_grad_(True),))


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        color.rgb_to_lab(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="float"):
        color.rgb_to_lab(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
