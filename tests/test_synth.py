"""semcolor.data.synth: deterministic pairs with exact masks, written to any URL."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from semcolor.core import storage
from semcolor.data import synth


@pytest.mark.parametrize("n_classes", [2, 5])
def test_make_pair_shapes_and_values(n_classes: int) -> None:
    rgb, mask = synth.make_pair(7, 40, seed=3, n_classes=n_classes)
    assert rgb.shape == (40, 40, 3) and rgb.dtype == np.uint8
    assert mask.shape == (40, 40) and mask.dtype == np.uint8
    values = set(np.unique(mask).tolist())
    if n_classes == 2:
        assert values <= {0, 255}
    else:
        assert values <= set(range(n_classes)) and values - {0}
    assert 0 < (mask > 0).mean() < 1
    assert rgb.std() > 10  # textured, not flat


def test_deterministic_per_seed_and_index() -> None:
    a = synth.make_pair(4, 32, seed=1)
    b = synth.make_pair(4, 32, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], synth.make_pair(4, 32, seed=2)[0])
    assert not np.array_equal(a[0], synth.make_pair(5, 32, seed=1)[0])


def test_masks_are_exact() -> None:
    """Foreground pixels carry shape colors (saturated), background pixels the texture: no blended edge."""
    for index in range(4):
        rgb, mask = synth.make_pair(index, 64, seed=0, n_classes=4)
        hsv = np.asarray(Image.fromarray(rgb).convert("HSV"))
        for value in set(np.unique(mask).tolist()) - {0}:
            hues = hsv[..., 0][mask == value].astype(int)
            # every pixel of one class shares one hue (class hue + small per-shape jitter)
            spread = np.minimum(np.abs(hues - hues[0]), 256 - np.abs(hues - hues[0]))
            assert spread.max() <= 40


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="size must be >= 8"):
        synth.make_pair(0, 4)
    with pytest.raises(ValueError, match="n_classes must be in 2..255"):
        synth.make_pair(0, 16, n_classes=1)
    with pytest.raises(ValueError, match="n must be positive"):
        synth.write_synth("memory://x", 0, 16)


def test_write_synth_layout_and_independence_of_n() -> None:
    keys = synth.write_synth("memory://synth-a", 3, 24, seed=5)
    assert keys == ["000000", "000001", "000002"]
    assert storage.list_files("memory://synth-a/images") == [f"memory://synth-a/images/{k}.png" for k in keys]
    assert storage.list_files("memory://synth-a/masks") == [f"memory://synth-a/masks/{k}.png" for k in keys]
    synth.write_synth("memory://synth-b", 5, 24, seed=5)
    for key in keys:  # pair i does not depend on N
        for part in ("images", "masks"):
            assert storage.read_bytes(f"memory://synth-a/{part}/{key}.png") == storage.read_bytes(
                f"memory://synth-b/{part}/{key}.png")
    rgb = np.asarray(Image.open(io.BytesIO(storage.read_bytes("memory://synth-a/images/000001.png"))))
    assert np.array_equal(rgb, synth.make_pair(1, 24, seed=5)[0])


def test_cli(tmp_path, capsys) -> None:
    from semcolor.cli import main

    assert main(["synth", str(tmp_path / "d"), "--n", "2", "--size", "16", "--seed", "1", "--n-classes", "3"]) == 0
    assert "wrote 2 pairs" in capsys.readouterr().out
    mask = np.asarray(Image.open(tmp_path / "d" / "masks" / "000001.png"))
    assert np.array_equal(mask, synth.make_pair(1, 16, seed=1, n_classes=3)[1])
