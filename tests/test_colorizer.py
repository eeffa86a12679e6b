"""The shared inference core: compact L, full-resolution merge, masks, and a loaded Colorizer."""

import numpy as np
import pytest

from semcolor.core import kernels
from semcolor.core import refine as refine_maps
from semcolor.core.colorizer import mask_full_resolution, merge_full_resolution
from semcolor.core.lab_table import lab_table
from semcolor.core.lightness import resize_l8, rgb_to_l8
from semcolor.model import checkpoint
from semcolor.model.config import ModelConfig
from semcolor.model.inference import load_colorizer
from semcolor.model.network import build_model


def test_gray_source_with_zero_ab_is_reproduced_within_one_level():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    out = merge_full_resolution(rgb_to_l8(gray), np.zeros((2, 8, 8), np.int8))
    assert out.shape == (37, 53, 3)
    assert np.abs(out.astype(int) - gray[..., None].astype(int)).max() <= 1


def test_merge_keeps_full_resolution_detail_and_applies_color():
    l8 = np.full((300, 201), 150, np.uint8)
    l8[::2] = 100  # one-pixel stripes survive the merge: L is never resampled
    ab = np.zeros((2, 16, 16), np.int8)
    ab[0] = 40  # reddish everywhere
    out = merge_full_resolution(l8, ab).astype(int)
    assert out.shape == (300, 201, 3)
    assert (out[0].mean(0) < out[1].mean(0)).all()  # stripes kept
    assert (out[..., 0] > out[..., 1]).all()  # a > 0 pushes red over green


@pytest.mark.parametrize("refine", ["guided", "bilinear"])
def test_merge_looks_up_the_table_at_the_upsampled_chroma_rounded_half_up(refine):
    """The compiled merge = the float maps of the same loops, rounded half up and clipped, then the table row."""
    rng = np.random.default_rng(1)
    l8 = rng.integers(0, 256, (64, 40), dtype=np.uint8)
    ab = rng.integers(-127, 127, (2, 8, 8)).astype(np.int8)  # saturated
    rows = refine_maps.row_maps(ab.astype(np.float32), l8, None, refine, offset=128.0)
    shifted = np.empty((2, *l8.shape), np.float32)
    kernels.affine_rows(rows.wide, rows.y0, rows.weight, l8, shifted)
    a, b = np.floor(np.clip(shifted, 0, 255) + np.float32(0.5)).astype(np.int64)
    assert refine == "bilinear" or (np.clip(shifted, 0, 255) != shifted).any()  # guided overshoots the table
    expected = lab_table()[(a << 16) | (b << 8) | l8]
    np.testing.assert_array_equal(merge_full_resolution(l8, ab, None, refine), expected)


def test_resize_and_masks():
    l8 = np.arange(100 * 60, dtype=np.uint32).reshape(100, 60).astype(np.uint8)
    assert resize_l8(l8, 32).shape == (32, 32)
    # downscaling averages each source pixel's area (box): halving is the mean of each 2 x 2 block
    noise = np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8)
    blocks = noise.reshape(32, 2, 32, 2).astype(float).mean(axis=(1, 3))
    assert np.abs(resize_l8(noise, 32).astype(float) - blocks).max() <= 1  # (Pillow rounds in fixed point)
    # upscaling small sources works too, interpolating: a dark-to-light step stays dark left, light right, and
    # rises monotonically in between
    step = np.zeros((10, 10), np.uint8)
    step[:, 5:] = 200
    up = resize_l8(step, 32).astype(int)
    assert up.shape == (32, 32) and (up[:, :12] == 0).all() and (up[:, -12:] == 200).all()
    assert (np.diff(up, axis=1) >= 0).all() and 0 < up[:, 16].mean() < 200
    fg = np.zeros((8, 8), np.uint8)
    fg[:, 4:] = 255
    mask = mask_full_resolution(fg, np.full((40, 80), 128, np.uint8), n_classes=2)
    assert mask.shape == (40, 80) and set(np.unique(mask)) == {0, 255}
    assert mask[:, :30].max() == 0 and mask[:, 50:].min() == 255
    classes = mask_full_resolution(np.full((8, 8), 3, np.uint8), np.zeros((5, 7), np.uint8), n_classes=4)
    assert classes.shape == (5, 7) and (classes == 3).all()


@pytest.mark.parametrize("n_classes", [2, 3])
def test_colorizer_from_checkpoint_keeps_sizes(tmp_path, n_classes):
    config = ModelConfig(arch="resnet34", n_classes=n_classes, input_size=64)
    checkpoint.save(build_model(config), config, str(tmp_path / "c"))
    colorizer = load_colorizer(str(tmp_path / "c"), device="cpu")
    assert colorizer.size == 64
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (97, 131, 3), dtype=np.uint8), rng.integers(0, 256, (40, 33), dtype=np.uint8)]
    results = colorizer.colorize_many(images)
    assert [r[0].shape for r in results] == [(97, 131, 3), (40, 33, 3)]
    assert [r[1].shape for r in results] == [(97, 131), (40, 33)]
    ab8, fg8 = colorizer.predict(np.zeros((3, 64, 64), np.uint8))
    assert ab8.shape == (3, 2, 64, 64) and ab8.dtype == np.int8
    assert fg8.shape == (3, 64, 64) and fg8.dtype == np.uint8
    with pytest.raises(ValueError, match=r"\(B, S, S\)"):
        colorizer.predict(np.zeros((64, 64), np.uint8))


@pytest.mark.filterwarnings("error")
def test_merge_and_mask_take_a_read_only_l8_as_the_bulk_stage_passes_it():
    l8 = np.frombuffer(bytes(range(256)) * 12, np.uint8).reshape(48, 64)  # a view of bytes: read-only
    assert merge_full_resolution(l8, np.zeros((2, 8, 8), np.int8)).shape == (48, 64, 3)
    assert mask_full_resolution(np.zeros((8, 8), np.uint8), l8, n_classes=2).shape == (48, 64)
