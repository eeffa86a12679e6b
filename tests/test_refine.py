"""Guided upsampling: sharp where L has an edge, bilinear where L is flat, exact sizes, in every front end's path."""

import numpy as np
import pytest
import torch

from semcolor.core import refine
from semcolor.core.colorizer import Colorizer, mask_full_resolution
from semcolor.core.lightness import resize_l8


def _step_scene(height: int = 300, width: int = 400, edge: int = 203, size: int = 64):
    """Full-resolution L with a vertical step at column ``edge`` (dark left, light right), the true AB step there,
    and what a perfect model at ``size`` px sees and predicts: box-downsampled L and AB."""
    l8 = np.full((height, width), 70, np.uint8)
    l8[:, edge:] = 180
    ab_true = np.zeros((2, height, width), np.float32)
    ab_true[0, :, :edge], ab_true[0, :, edge:] = -40.0, 50.0
    small = resize_l8(l8, size)
    ab_small = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(ab_true)[None], size)[0]
    return l8, small, ab_true, ab_small


def test_guided_keeps_an_l_edge_sharp_in_ab():
    l8, small, ab_true, ab_small = _step_scene()
    near = slice(203 - 12, 203 + 12)  # the columns around the edge
    errors = {}
    for how in refine.REFINES:
        up = refine.upsample(ab_small.numpy(), l8, small, how)
        assert up.shape == ab_true.shape
        errors[how] = np.abs(up - ab_true)[:, :, near].mean()
    assert errors["guided"] < 0.25 * errors["bilinear"], errors
    assert errors["bilinear"] > 5.0  # the bilinear ramp is real, so the comparison means something


def test_guided_mask_follows_the_edge():
    l8, small, _, _ = _step_scene()
    fg_true = np.zeros(l8.shape, bool)
    fg_true[:, 203:] = True
    prob = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(fg_true.astype(np.float32))[None], 64)[0]
    fg8 = (prob.numpy() * 255).round().astype(np.uint8)
    wrong = {how: int((mask_full_resolution(fg8, l8, 2, small, how) == 255).__xor__(fg_true).sum())
             for how in refine.REFINES}
    assert wrong["guided"] <= wrong["bilinear"]
    assert wrong["guided"] == 0, wrong  # the mask's boundary sits exactly on L's edge


def test_flat_l_gives_bilinear():
    rng = np.random.default_rng(0)
    l8 = np.full((97, 131), 120, np.uint8)
    maps = rng.normal(0, 30, (2, 32, 32)).astype(np.float32)
    guided = refine.upsample(maps, l8, resize_l8(l8, 32), "guided")
    bilinear = refine.upsample(maps, l8, None, "bilinear")
    np.testing.assert_allclose(guided, bilinear, rtol=0, atol=1e-3)


@pytest.mark.parametrize("shape", [(1, 45), (37, 53), (640, 480)])
def test_sizes_are_exact_and_the_guide_is_recomputed_when_absent(shape):
    rng = np.random.default_rng(1)
    l8 = rng.integers(0, 256, shape, dtype=np.uint8)
    maps = rng.normal(0, 30, (2, 48, 48)).astype(np.float32)
    given = refine.upsample(maps, l8, resize_l8(l8, 48), "guided")
    assert given.shape == (2, *shape)
    np.testing.assert_array_equal(refine.upsample(maps, l8, None, "guided"), given)


def test_unknown_refine_and_mismatched_guide_are_refused():
    with pytest.raises(ValueError, match="guided"):
        refine.check_refine("bicubic")
    with pytest.raises(ValueError, match="guided"):
        Colorizer(predictor=None, refine="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not match"):
        refine.upsample(np.zeros((2, 32, 32), np.float32), np.zeros((50, 50), np.uint8), np.zeros((16, 16), np.uint8))


def test_box_means_over_clipped_windows_match_average_pooling():
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(1, 6, 33, 40)).astype(np.float32))
    expected = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    np.testing.assert_allclose(refine._box(x[0].numpy(), 2), expected[0].numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(3000 // 7, 4000 // 7), (20, 300), (100, 13)])
def test_compiled_rows_match_bilinear_interpolation_of_the_slope_and_offset(shape):
    """Upscaling (runs of rows between two model rows) and downscaling (rows skipping model rows): bilinear is
    F.interpolate's, and guided is up(offset) + up(slope) * L with F.interpolate's up, to float rounding."""
    rng = np.random.default_rng(3)
    maps = torch.from_numpy(rng.normal(0, 30, (3, 48, 48)).astype(np.float32))
    l8 = rng.integers(0, 256, shape, dtype=np.uint8)

    def up(x):
        return torch.nn.functional.interpolate(x[None], size=shape, mode="bilinear", align_corners=False)[0]

    np.testing.assert_allclose(refine.upsample(maps.numpy(), l8, None, "bilinear"), up(maps), rtol=1e-5, atol=1e-3)
    slope, offset = (torch.from_numpy(m) for m in refine.affine_maps(maps.numpy(), l8, None, "guided"))
    assert slope.abs().max() > 0
    expected = up(offset) + up(slope) * torch.from_numpy(l8.astype(np.float32))
    np.testing.assert_allclose(refine.upsample(maps.numpy(), l8, None, "guided"), expected, rtol=1e-5, atol=1e-3)
