"""Copy-paste augmentation (no Ray): a donor's foreground and its mask pasted together, only between labelled
images, as `semcolor train --copy-paste` passes it to the preprocessing."""

from __future__ import annotations

import pytest
import torch

from semcolor.core.decode import IGNORE_INDEX
from semcolor.data.copy_paste import copy_paste
from semcolor.data.preprocess import preprocess_batch
from semcolor.train.config import TrainConfig


def _square_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 16 x 16 images: 0 a dark field with no foreground, 1 a bright field with a 4 x 4 foreground square of
    its own colour at rows 2-5, columns 3-6."""
    rgb = torch.zeros(2, 16, 16, 3, dtype=torch.uint8)
    rgb[0] = 10
    rgb[1] = 200
    rgb[1, 2:6, 3:7] = torch.tensor([250, 20, 30], dtype=torch.uint8)
    mask = torch.zeros(2, 16, 16, dtype=torch.uint8)
    mask[1, 2:6, 3:7] = 255
    return rgb, mask


def test_the_pasted_pixels_and_the_pasted_mask_are_the_same_pixels() -> None:
    """At scale 1 the donor's square lands, pixel for pixel, where the draws place it: hand computation of the
    offset from the generator's four draws per sample; everything else of the recipient is unchanged."""
    rgb, mask = _square_batch()
    out_rgb, out_mask = copy_paste(rgb, mask, 1.0, 2, torch.Generator().manual_seed(4), scale=(1.0, 1.0))
    u = torch.rand(2, 4, generator=torch.Generator().manual_seed(4)).double()
    top, left = int(u[0, 2] * 1), int(u[0, 3] * 1)  # a full-size donor has one place: (0, 0)
    assert (top, left) == (0, 0)
    pasted = torch.zeros(16, 16, dtype=torch.bool)
    pasted[2:6, 3:7] = True
    assert torch.equal(out_mask[0] == 255, pasted)
    assert torch.equal(out_rgb[0][pasted], rgb[1][pasted]) and bool((out_rgb[0][~pasted] == 10).all())
    # sample 1's donor is sample 0, which has no foreground: unchanged
    assert torch.equal(out_rgb[1], rgb[1]) and torch.equal(out_mask[1], mask[1])
    assert torch.equal(rgb, _square_batch()[0]), "the inputs are not changed in place"


def test_a_scaled_donor_keeps_its_mask_on_its_pixels() -> None:
    """Scaled by 0.5 the square is 2 x 2 somewhere in the recipient: the mask's area is the scaled square's, and
    the recipient's pixels changed exactly where the mask did (reddish: the antialiased square's colour)."""
    rgb, mask = _square_batch()
    out_rgb, out_mask = copy_paste(rgb, mask, 1.0, 2, torch.Generator().manual_seed(0), scale=(0.5, 0.5))
    changed = (out_rgb[0] != 10).any(dim=-1)
    assert int((out_mask[0] == 255).sum()) == 4
    assert torch.equal(out_mask[0] == 255, changed)
    assert bool((out_rgb[0][changed][:, 0] > out_rgb[0][changed][:, 1]).all())


def test_probability_zero_or_unlabelled_images_paste_nothing() -> None:
    rgb, mask = _square_batch()
    same_rgb, same_mask = copy_paste(rgb, mask, 0.0, 2, torch.Generator().manual_seed(0))
    assert same_rgb is rgb and same_mask is mask
    for labelled in (torch.tensor([False, True]), torch.tensor([True, False])):  # recipient / donor without mask
        out_rgb, out_mask = copy_paste(rgb, mask, 1.0, 2, torch.Generator().manual_seed(0), labelled=labelled)
        assert torch.equal(out_rgb, rgb) and torch.equal(out_mask, mask)


def test_class_id_masks_paste_the_donor_ids_and_never_ignore() -> None:
    """With class ids the pasted values are the donor's own (3 here); its ignore pixels (255) are not pasted."""
    rgb, mask = _square_batch()
    mask[1, 2:6, 3:7] = 3
    mask[1, 10:12, 10:12] = IGNORE_INDEX
    _, out_mask = copy_paste(rgb, mask, 1.0, 4, torch.Generator().manual_seed(4), scale=(1.0, 1.0))
    assert int((out_mask[0] == 3).sum()) == 16 and not bool((out_mask[0] == IGNORE_INDEX).any())


def test_preprocess_pastes_only_in_training_and_the_targets_follow() -> None:
    """In training with probability 1 a sample's target gains the pasted foreground; at validation nothing moves."""
    rgb, mask = _square_batch()
    trained = preprocess_batch(rgb, mask, 2, train=True, generator=torch.Generator().manual_seed(1),
                               copy_paste_probability=1.0)
    assert int(trained["target"][0].sum()) > 0  # sample 0 had no foreground of its own
    val = preprocess_batch(rgb, mask, 2, train=False, copy_paste_probability=1.0)
    assert int(val["target"][0].sum()) == 0


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_an_out_of_range_share_is_refused_by_name(value: float) -> None:
    with pytest.raises(ValueError, match="copy_paste is a share"):
        TrainConfig(copy_paste=value)
    rgb, mask = _square_batch()
    with pytest.raises(ValueError, match="copy-paste probability"):
        copy_paste(rgb, mask, value, 2)
