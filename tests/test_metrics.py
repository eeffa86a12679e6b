"""Metric unit tests: agreement with scikit-image, IoU by hand, merge == one pass, gray sources skipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from semcolor.model.metrics import (
    BoundaryAccumulator,
    boundary_band,
    PSNR_CAP_DB,
    ColorAccumulator,
    SegmentationAccumulator,
    colorfulness,
    is_grayscale,
    psnr,
)


def _images(seed: int, n: int, h: int = 24, w: int = 31) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    noise = rng.integers(-40, 41, size=truth.shape)
    pred = np.clip(truth.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    return pred, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_psnr_matches_skimage(seed: int) -> None:
    pred, truth = _images(seed, 1)
    assert psnr(pred[0], truth[0]) == pytest.approx(peak_signal_noise_ratio(truth[0], pred[0], data_range=255),
                                                   rel=1e-12)


def test_psnr_of_identical_images_is_capped() -> None:
    _, truth = _images(0, 1)
    assert psnr(truth[0], truth[0]) == PSNR_CAP_DB


def test_color_accumulator_averages_skimage_per_image() -> None:
    pred, truth = _images(3, 4)
    acc = ColorAccumulator()
    acc.update(pred, truth)
    out = acc.result()
    assert out["images"] == 4 and out["skipped_gray"] == 0
    exp_psnr = np.mean([peak_signal_noise_ratio(t, p, data_range=255) for p, t in zip(pred, truth)])
    exp_ssim = np.mean([structural_similarity(p, t, channel_axis=-1, data_range=255) for p, t in zip(pred, truth)])
    exp_mse = np.mean([np.mean((p.astype(float) - t.astype(float)) ** 2) for p, t in zip(pred, truth)])
    assert out["psnr"] == pytest.approx(exp_psnr, rel=1e-12)
    assert out["ssim"] == pytest.approx(exp_ssim, rel=1e-12)
    assert out["mse"] == pytest.approx(exp_mse, rel=1e-12)
    assert out["colorfulness_pred"] == pytest.approx(np.mean([colorfulness(p) for p in pred]))
    assert out["colorfulness_true"] == pytest.approx(np.mean([colorfulness(t) for t in truth]))


def test_colorfulness_of_gray_is_zero_and_of_color_positive() -> None:
    gray = np.full((8, 8, 3), 120, dtype=np.uint8)
    assert colorfulness(gray) == 0.0
    red = np.zeros((8, 8, 3), dtype=np.uint8)
    red[..., 0] = 200
    assert colorfulness(red) > 50


def test_color_accumulator_skips_gray_sources() -> None:
    pred, truth = _images(4, 3)
    gray_truth = np.repeat(truth[:1, ..., :1], 3, axis=-1)  # R = G = B
    assert is_grayscale(gray_truth[0])
    acc = ColorAccumulator()
    acc.update(np.concatenate([pred, pred[:1]]), np.concatenate([truth, gray_truth]))
    ref = ColorAccumulator()
    ref.update(pred, truth)
    assert acc.skipped_gray == 1 and acc.count == 3
    np.testing.assert_allclose(acc.sums, ref.sums)


def test_color_accumulator_rejects_wrong_dtype() -> None:
    pred, truth = _images(5, 1)
    with pytest.raises(ValueError, match="uint8"):
        ColorAccumulator().update(pred.astype(np.float32), truth)


def test_iou_on_a_hand_made_confusion() -> None:
    # 3 classes; rows = truth, cols = prediction.
    matrix = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]], dtype=np.int64)
    acc = SegmentationAccumulator(3, matrix.copy())
    out = acc.result()
    # IoU_c = tp / (row + col - tp)
    expected = [5 / (6 + 7 - 5), 3 / (6 + 4 - 3), 4 / (4 + 5 - 4)]
    np.testing.assert_allclose(out["iou"], expected)
    assert out["miou"] == pytest.approx(np.mean(expected))
    assert out["pixel_accuracy"] == pytest.approx(12 / 16)


def test_confusion_from_update_matches_hand_count_and_ignores_255() -> None:
    target = np.array([[0, 0, 1, 255], [1, 1, 0, 255]], dtype=np.uint8)[None]
    pred = np.array([[0, 1, 1, 1], [1, 0, 0, 0]], dtype=np.uint8)[None]
    acc = SegmentationAccumulator(2)
    acc.update(pred, target)
    np.testing.assert_array_equal(acc.matrix, [[2, 1], [1, 2]])  # (t, p): 00 01 11 10 00 11


def test_absent_class_iou_is_nan_and_left_out_of_miou() -> None:
    acc = SegmentationAccumulator(3, np.array([[4, 0, 0], [0, 2, 0], [0, 0, 0]], dtype=np.int64))
    out = acc.result()
    assert np.isnan(out["iou"][2])
    assert out["miou"] == pytest.approx(1.0)


def test_merged_accumulators_equal_one_pass() -> None:
    rng = np.random.default_rng(7)
    target = rng.integers(0, 3, size=(6, 16, 16))
    target[0, :2] = 255
    pred = rng.integers(0, 3, size=(6, 16, 16))
    rgb_pred, rgb_true = _images(8, 6, 16, 16)

    whole_seg, whole_col = SegmentationAccumulator(3), ColorAccumulator()
    whole_seg.update(pred, target)
    whole_col.update(rgb_pred, rgb_true)

    parts_seg = [SegmentationAccumulator(3) for _ in range(3)]
    parts_col = [ColorAccumulator() for _ in range(3)]
    for i, (s, c) in enumerate(zip(parts_seg, parts_col)):
        s.update(pred[i * 2:(i + 1) * 2], target[i * 2:(i + 1) * 2])
        c.update(rgb_pred[i * 2:(i + 1) * 2], rgb_true[i * 2:(i + 1) * 2])
    merged_seg = parts_seg[0] + parts_seg[1] + parts_seg[2]
    merged_col = parts_col[0].merge(parts_col[1]).merge(parts_col[2])
    np.testing.assert_array_equal(merged_seg.matrix, whole_seg.matrix)
    assert merged_col.result() == pytest.approx(whole_col.result())

    # The tensor round trip used by torch.distributed.all_reduce (a sum of tensors) gives the same.
    seg_sum = sum(p.to_tensor() for p in parts_seg)
    col_sum = sum(p.to_tensor() for p in parts_col)
    np.testing.assert_array_equal(SegmentationAccumulator.from_tensor(3, seg_sum).matrix, whole_seg.matrix)
    assert ColorAccumulator.from_tensor(col_sum).result() == pytest.approx(whole_col.result())


def test_merge_refuses_different_class_counts() -> None:
    with pytest.raises(ValueError, match="merge"):
        SegmentationAccumulator(2).merge(SegmentationAccumulator(3))


def test_to_tensor_is_float64_for_exact_sums() -> None:
    assert SegmentationAccumulator(2).to_tensor().dtype == torch.float64
    assert ColorAccumulator().to_tensor().dtype == torch.float64


def _ring(top: int, left: int, side: int, d: int, shape=(48, 48)) -> np.ndarray:
    """The contour band of a side x side square by slicing: the square minus its inner square d pixels in."""
    m = np.zeros(shape, bool)
    m[top:top + side, left:left + side] = True
    m[top + d:top + side - d, left + d:left + side - d] = False
    return m


def _square(top: int, left: int, side: int, shape=(48, 48)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[top:top + side, left:left + side] = 1
    return m


@pytest.mark.parametrize("shift", [0, 1, 3, 7, 30])
def test_boundary_iou_of_a_shifted_square_is_its_formula(shift: int) -> None:
    """Truth a 20 px square, prediction the same square `shift` px to the right: boundary IoU at d = 5 equals
    |ring_t & ring_p| / |ring_t | ring_p| with the rings cut by hand (5 px inside each square's edge)."""
    acc = BoundaryAccumulator(2, d=5)
    acc.update(_square(10, 10 + shift, 20, (48, 64)), _square(10, 10, 20, (48, 64)))
    truth, pred = _ring(10, 10, 20, 5, (48, 64)), _ring(10, 10 + shift, 20, 5, (48, 64))
    expected = (truth & pred).sum() / (truth | pred).sum()
    assert acc.result()["boundary_iou"] == pytest.approx(expected)
    assert (shift == 0) == (acc.result()["boundary_iou"] == 1.0)
    assert (shift == 30) == (acc.result()["boundary_iou"] == 0.0)  # disjoint bands
    np.testing.assert_array_equal(boundary_band(_square(10, 10, 20) == 1, 5), _ring(10, 10, 20, 5))


def test_boundary_iou_leaves_ignored_pixels_out() -> None:
    """A predicted contour over pixels labelled 255 (ignore) costs nothing: the same figure as without them."""
    truth, pred = _square(10, 10, 20), _square(10, 13, 20)
    clean = BoundaryAccumulator(2, d=5)
    clean.update(pred, truth)
    with_ignore = truth.copy()
    extra = pred.copy()
    extra[40:46, 2:30] = 1  # a predicted blob ...
    with_ignore[38:48, :32] = 255  # ... where nothing is labelled
    ignored = BoundaryAccumulator(2, d=5)
    ignored.update(extra, with_ignore)
    assert ignored.result()["boundary_iou"] == pytest.approx(clean.result()["boundary_iou"])


def test_boundary_iou_sums_bands_over_images_and_merges_by_sums() -> None:
    """Two images with different ratios: the dataset's figure divides summed intersections by summed unions (not
    a mean of ratios); accumulators merged equal one pass; a mask filling the image has no contour."""
    a_pred, a_true = _square(10, 13, 20), _square(10, 10, 20)
    b_pred, b_true = _square(5, 5, 30), _square(5, 5, 30)
    one = BoundaryAccumulator(2, d=5)
    one.update(np.stack([a_pred, b_pred]), np.stack([a_true, b_true]))
    ta, pa, tb = _ring(10, 10, 20, 5), _ring(10, 13, 20, 5), _ring(5, 5, 30, 5)
    expected = ((ta & pa).sum() + tb.sum()) / ((ta | pa).sum() + tb.sum())
    assert one.result()["boundary_iou"] == pytest.approx(expected)
    assert expected != pytest.approx(((ta & pa).sum() / (ta | pa).sum() + 1.0) / 2)  # not a mean of ratios
    first, second = BoundaryAccumulator(2, d=5), BoundaryAccumulator(2, d=5)
    first.update(a_pred, a_true)
    second.update(b_pred, b_true)
    merged = BoundaryAccumulator.from_tensor(2, (first + second).to_tensor(), d=5)
    assert merged.result()["boundary_iou"] == pytest.approx(expected)
    assert not boundary_band(np.ones((8, 8), bool)).any() and not boundary_band(np.zeros((8, 8), bool)).any()
