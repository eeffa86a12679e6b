"""The segmentation's region terms and the mixing of photos without masks into a batch: checked against hand
computations (no Ray)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from semcolor.core.decode import IGNORE_INDEX
from semcolor.data.preprocess import preprocess_batch
from semcolor.model.config import LossConfig
from semcolor.model.heads import RegressionColorHead
from semcolor.model.losses import multitask_loss
from semcolor.model.mask_losses import dice_loss, lovasz_softmax, masked_cross_entropy, region_loss


def _hard_logits(pred: torch.Tensor, n_classes: int = 2) -> torch.Tensor:
    """Class ids (B, H, W) -> logits whose softmax is one-hot to float precision."""
    return F.one_hot(pred, n_classes).permute(0, 3, 1, 2).float() * 100.0


def test_lovasz_softmax_of_hard_predictions_is_one_minus_the_iou():
    """At 0/1 probabilities the Lovasz extension equals the Jaccard loss: the mean over classes present of 1 - IoU."""
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2, :2] = 1  # 4 foreground pixels
    pred = torch.zeros(1, 4, 4, dtype=torch.long)
    pred[0, :2, :3] = 1  # 6 predicted: 4 right, 2 wrong
    iou_fg = 4 / 6
    iou_bg = 10 / 12  # background: 12 true, 10 predicted, all 10 right
    expected = ((1 - iou_fg) + (1 - iou_bg)) / 2
    assert lovasz_softmax(_hard_logits(pred), target).item() == pytest.approx(expected, abs=1e-5)


def test_lovasz_and_dice_skip_ignored_pixels_and_images_without_labels():
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    target[0, :2, :2] = 1
    pred = target.clone()
    pred[0, 3, 3] = 1  # a wrong pixel ...
    target_ignored = target.clone()
    target_ignored[0, 3, 3] = IGNORE_INDEX  # ... where the label says ignore: no error left
    target_ignored[1] = IGNORE_INDEX  # the second image is a photo without a mask
    logits = _hard_logits(pred)
    for loss in (lovasz_softmax, dice_loss):
        assert loss(logits, target_ignored).item() == pytest.approx(0.0, abs=1e-5)
        assert loss(logits, target).item() > 0.01  # counted when labelled
    nothing = torch.full((2, 4, 4), IGNORE_INDEX, dtype=torch.long)
    logits.requires_grad_(True)
    for kind in ("dice", "lovasz", "none"):
        zero = region_loss(kind, logits, nothing)
        zero.backward()  # connected to the graph, gradient zero
        assert zero.item() == 0.0 and float(logits.grad.abs().sum()) == 0.0


def test_dice_of_soft_predictions_is_its_formula():
    """1 - (2 sum(p g) + 1) / (sum p + sum g + 1) on the foreground, per image, averaged over images."""
    p_fg = torch.tensor([[[0.9, 0.2], [0.6, 0.1]], [[0.3, 0.3], [0.8, 0.5]]])
    logits = torch.stack([torch.log1p(-p_fg), torch.log(p_fg)], dim=1)  # softmax gives back p_fg
    target = torch.tensor([[[1, 0], [1, 0]], [[0, 1], [1, 1]]])
    expected = []
    for p, g in zip(p_fg, target.float()):
        expected.append(1 - (2 * (p * g).sum() + 1) / (p.sum() + g.sum() + 1))
    assert dice_loss(logits, target).item() == pytest.approx(float(torch.stack(expected).mean()), abs=1e-5)


def test_dice_charges_foreground_predicted_on_an_image_without_any():
    """An image whose labels are all background: predicting foreground on k of its pixels costs 1 - 1 / (k + 1)
    (eps = 1), predicting none costs nothing."""
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    pred = torch.zeros(1, 4, 4, dtype=torch.long)
    assert dice_loss(_hard_logits(pred), target).item() == pytest.approx(0.0, abs=1e-5)
    pred[0, 0, :3] = 1
    assert dice_loss(_hard_logits(pred), target).item() == pytest.approx(1 - 1 / 4, abs=1e-4)


def test_unknown_region_loss_names_the_choices():
    with pytest.raises(ValueError, match="dice"):
        region_loss("boundary", torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="mask_loss"):
        LossConfig(mask_loss="hinge")


def test_a_batch_mixing_photos_and_pairs_segments_on_masks_only_and_colors_on_all():
    """Two images: a pair (mask) and a photo without a mask. Segmentation loss = the cross-entropy of the pair's
    pixels alone (the photo's target is all ignore); colour loss = the mean over both images' pixels; both by hand."""
    gen = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8, generator=gen)
    mask = torch.zeros(2, 8, 8, dtype=torch.uint8)
    mask[0, 2:6, 2:6] = 255
    mask[1, :4] = 255  # a photo's mask is never read, whatever it holds
    inputs = preprocess_batch(rgb, mask, 2, train=False, labelled=torch.tensor([True, False]))
    assert (inputs["target"][1] == IGNORE_INDEX).all() and inputs["target"][0].sum() == 16
    seg_logits = torch.randn(2, 2, 8, 8, generator=gen)
    head = RegressionColorHead(4, ab_scale=110.0)
    raw = torch.tanh(torch.randn(2, 2, 8, 8, generator=gen))
    config = LossConfig(seg_weight=1.0, color_weight=0.5, color_loss="mse")
    total, parts = multitask_loss(seg_logits, raw, inputs["target"], inputs["ab"], config, head)

    log_p = seg_logits[0].log_softmax(dim=0)  # (2, 8, 8): the pair alone
    truth = inputs["target"][0]
    seg_by_hand = -sum(log_p[truth[i, j], i, j] for i in range(8) for j in range(8)) / 64
    color_by_hand = ((raw - inputs["ab"] / 110.0) ** 2).sum(dim=1).mean()  # (a, b) summed, all 128 pixels
    assert parts["seg"].item() == pytest.approx(float(seg_by_hand), rel=1e-5)
    assert parts["color"].item() == pytest.approx(float(color_by_hand), rel=1e-5)
    assert total.item() == pytest.approx(float(seg_by_hand + 0.5 * color_by_hand), rel=1e-5)
    # the photo alone: no segmentation loss at all, the colour loss still counts
    _, photo_parts = multitask_loss(seg_logits[1:], raw[1:], inputs["target"][1:], inputs["ab"][1:], config, head)
    assert photo_parts["seg"].item() == 0.0 and photo_parts["color"].item() > 0


def test_the_region_term_adds_to_the_cross_entropy_with_its_weight():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 2, 6, 6, generator=gen)
    target = (torch.rand(2, 6, 6, generator=gen) > 0.5).long()
    head = RegressionColorHead(4, ab_scale=110.0)
    raw, ab = torch.zeros(2, 2, 6, 6), torch.zeros(2, 2, 6, 6)
    _, parts = multitask_loss(logits, raw, target, ab, LossConfig(mask_loss="lovasz", mask_loss_weight=0.5), head)
    expected = masked_cross_entropy(logits, target) + 0.5 * lovasz_softmax(logits, target)
    assert parts["seg"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert math.isfinite(parts["seg"].item())
