"""The merge's LAB -> RGB table: the float conversion's own values, looked up by whole-unit chroma.

The table is looked up as the merge does it (:func:`semcolor.core.colorizer.merge_full_resolution`), with the output
at the model's size and bilinear upsampling: then every output pixel gets its own input chroma unchanged, and what
remains is the lookup (rounding, clipping, the table's values)."""

import numpy as np
import torch

from semcolor.core import color
from semcolor.core.cache import CACHE_ENV
from semcolor.core.colorizer import merge_full_resolution
from semcolor.core.lab_table import L8_SCALE


def lab8_to_rgb(l8: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """l8 uint8 (S, S) + ab (2, S, S) in LAB units -> sRGB uint8 (S, S, 3) through the merge, upsampling nothing."""
    return merge_full_resolution(l8, ab, l8, "bilinear")


def _float_path(l8: np.ndarray, ab: np.ndarray) -> np.ndarray:
    lightness = torch.from_numpy(l8.astype(np.float32) / L8_SCALE)[None, None]
    return color.float_to_uint8(color.merge_l_ab(lightness, torch.from_numpy(ab)[None]))[0].numpy()


def test_whole_unit_chroma_gives_the_float_conversion_exactly():
    rng = np.random.default_rng(0)
    l8 = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    ab = rng.integers(-128, 128, (2, 48, 48)).astype(np.float32)  # the whole table's range, in and out of gamut
    np.testing.assert_array_equal(lab8_to_rgb(l8, ab), _float_path(l8, ab))
    np.testing.assert_array_equal(lab8_to_rgb(l8, ab.astype(np.int8)), _float_path(l8, ab))  # int8 ab8 as is


def test_fractional_chroma_is_rounded_to_whole_units():
    """Rounding moves a color by at most 0.71 LAB units (imperceptible): a third of a level on average in RGB, more
    only where a channel of a saturated color nears 0, at the foot of the sRGB curve."""
    rng = np.random.default_rng(1)
    l8 = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    ab = rng.uniform(-60, 60, (2, 64, 64)).astype(np.float32)
    got = lab8_to_rgb(l8, ab)
    np.testing.assert_array_equal(got, _float_path(l8, np.round(ab)))
    diff = np.abs(got.astype(int) - _float_path(l8, ab).astype(int))
    assert diff.mean() < 0.35 and (diff > 2).mean() < 0.01, (diff.mean(), (diff > 2).mean())


def test_chroma_beyond_the_table_is_clipped():
    l8 = np.random.default_rng(2).integers(0, 256, (8, 8), dtype=np.uint8)
    ab = np.stack([np.full((8, 8), 300.0, np.float32), np.full((8, 8), -300.0, np.float32)])
    expected = np.stack([np.full((8, 8), 127.0, np.float32), np.full((8, 8), -128.0, np.float32)])
    np.testing.assert_array_equal(lab8_to_rgb(l8, ab), _float_path(l8, expected))


def test_the_table_is_saved_once_then_mapped_and_kept_in_memory_where_the_cache_cannot_be_written(tmp_path,
                                                                                                  monkeypatch):
    from semcolor.core import lab_table as module

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    module.lab_table.cache_clear()
    try:
        built = module.lab_table()
        saved = list((tmp_path / "cache").glob("lab_table-*.npy"))
        assert len(saved) == 1 and not list((tmp_path / "cache").glob("*.partial"))
        module.lab_table.cache_clear()
        mapped = module.lab_table()
        assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
        np.testing.assert_array_equal(mapped, built)
        (tmp_path / "blocked").write_bytes(b"")  # a file where the cache folder would go
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "blocked" / "cache"))
        module.lab_table.cache_clear()
        np.testing.assert_array_equal(module.lab_table(), built)
    finally:
        module.lab_table.cache_clear()
