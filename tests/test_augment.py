"""Training augmentation knobs (no Ray): the gray input's contrast and brightness jitter and the crop scale's lower
bound, as `semcolor train --lightness-jitter / --crop-scale-min` pass them to the preprocessing."""

from __future__ import annotations

import pytest
import torch

from semcolor.data.preprocess import jitter_lightness, preprocess_batch
from semcolor.train.config import TrainConfig


def test_lightness_jitter_is_contrast_about_the_mean_then_a_shift_clipped_to_the_l_range() -> None:
    """Hand computation: with the generator's two draws u0, u1 per sample, contrast 1 + s (2 u0 - 1) about the
    sample's mean and shift s (u1 - 0.5), clipped to [0, 1]."""
    l = torch.rand(5, 1, 7, 9, generator=torch.Generator().manual_seed(3))
    l[0] = 1.0  # a white sample: brightened it stays at the top of the range
    strength = 0.3
    out = jitter_lightness(l, strength, torch.Generator().manual_seed(11))
    u = torch.rand(5, 2, generator=torch.Generator().manual_seed(11))
    for i in range(5):
        contrast, shift = 1 + strength * (2 * u[i, 0] - 1), strength * (u[i, 1] - 0.5)
        mean = l[i].mean()
        expected = ((l[i] - mean) * contrast + mean + shift).clamp(0, 1)
        torch.testing.assert_close(out[i], expected)
    assert out.min() >= 0 and out.max() <= 1 and not torch.equal(out, l)
    assert jitter_lightness(l, 0.0) is l


def test_the_jitter_changes_only_the_gray_input_and_only_in_training() -> None:
    """Same seed, jitter on or off: the crops and flips are the same (the jitter draws after them), so the colour
    and mask targets are identical and only L moved; at validation (train=False) the jitter does nothing."""
    gen = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (6, 24, 24, 3), dtype=torch.uint8, generator=gen)
    mask = (torch.rand(6, 24, 24, generator=gen) > 0.5).to(torch.uint8) * 255
    plain = preprocess_batch(rgb, mask, 2, train=True, generator=torch.Generator().manual_seed(5),
                             resized_crop_scale=(0.25, 1.0))
    jittered = preprocess_batch(rgb, mask, 2, train=True, generator=torch.Generator().manual_seed(5),
                                resized_crop_scale=(0.25, 1.0), lightness_jitter=0.2)
    assert torch.equal(plain["ab"], jittered["ab"]) and torch.equal(plain["target"], jittered["target"])
    assert (plain["l"] - jittered["l"]).abs().mean() > 1e-3
    val = preprocess_batch(rgb, mask, 2, train=False, lightness_jitter=0.2)
    torch.testing.assert_close(val["l"], preprocess_batch(rgb, mask, 2, train=False)["l"])


@pytest.mark.parametrize(("field", "value", "message"), [
    ("crop_scale_min", 0.0, "crop_scale_min must be in"), ("crop_scale_min", 1.5, "crop_scale_min must be in"),
    ("lightness_jitter", -0.1, "lightness_jitter must be in"), ("lightness_jitter", 1.0, "lightness_jitter must be in"),
])
def test_out_of_range_augmentation_is_refused_by_name(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_the_defaults_are_the_augmentation_of_earlier_runs() -> None:
    """A TrainConfig saved before these knobs (no such keys) reads back with the crops of then and no jitter, so
    a run of then resumes and a benchmark row trained then is reused."""
    config = TrainConfig.from_dict({k: v for k, v in TrainConfig().to_dict().items()
                                    if k not in ("crop_scale_min", "lightness_jitter")})
    assert (config.crop_scale_min, config.lightness_jitter) == (0.5, 0.0)
