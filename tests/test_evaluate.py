"""evaluate(): metrics.json with every key, exact counts (bad files, gray sources, resized masks), agreement with a
single-process computation of the same protocol, and a readable grid.png."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semcolor.model.checkpoint import save
from semcolor.model.config import ModelConfig
from semcolor.model.metrics import BoundaryAccumulator, ColorAccumulator, SegmentationAccumulator
from semcolor.model.network import build_model

TOP_KEYS = {"pixel_accuracy", "iou", "miou", "boundary_iou", "boundary_tolerance_px", "mse", "psnr", "ssim", "colorfulness_pred", "colorfulness_true",
            "colorfulness_ratio", "gray_baseline", "counts", "bad_files", "checkpoint", "model_size", "n_classes"}
GRAY_KEYS = {"mse", "psnr", "ssim", "colorfulness"}
COUNT_KEYS = {"pairs", "evaluated", "color_evaluated", "skipped_gray", "bad", "mask_resized"}


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory) -> dict[str, str]:
    """7 synthetic pairs at 40 px, plus: a gray source, a mask of twice its image's size, a zero-byte image."""
    import torch

    from semcolor.data.synth import make_pair, write_synth

    root = tmp_path_factory.mktemp("eval")
    write_synth(str(root / "data"), n=7, size=40, seed=3)
    rgb, mask = make_pair(100, 40, seed=3)
    gray = np.asarray(Image.fromarray(rgb).convert("L").convert("RGB"))
    Image.fromarray(gray).save(root / "data" / "images" / "gray.png")
    Image.fromarray(mask).save(root / "data" / "masks" / "gray.png")
    rgb, mask = make_pair(101, 40, seed=3)
    Image.fromarray(rgb).save(root / "data" / "images" / "bigmask.png")
    Image.fromarray(mask).resize((80, 80), Image.Resampling.NEAREST).save(root / "data" / "masks" / "bigmask.png")
    (root / "data" / "images" / "empty.png").write_bytes(b"")
    Image.fromarray(mask).save(root / "data" / "masks" / "empty.png")
    torch.manual_seed(0)
    config = ModelConfig(arch="unet", input_size=32)
    save(build_model(config), config, str(root / "ckpt"))
    return {"images": str(root / "data" / "images"), "masks": str(root / "data" / "masks"),
            "checkpoint": str(root / "ckpt"), "root": str(root)}


def _single_process(data: dict[str, str]) -> tuple[SegmentationAccumulator, ColorAccumulator, ColorAccumulator,
                                                 BoundaryAccumulator]:
    from semcolor.core.decode import DataError
    from semcolor.data.pairs import load_pairs
    from semcolor.evaluation.job import (
        predict_full_resolution,
        read_pair,
        target_classes,
    )
    from semcolor.model.inference import load_colorizer

    colorizer = load_colorizer(data["checkpoint"], device="cpu")
    seg, col, gray = SegmentationAccumulator(2), ColorAccumulator(), ColorAccumulator()
    boundary = BoundaryAccumulator(2)
    pairs = load_pairs(data["images"], data["masks"])
    for key, image, mask_url in zip(*(pairs[c].to_pylist() for c in ("key", "image", "mask"))):
        try:
            sample = read_pair(key, image, mask_url)
        except DataError:
            continue
        rgb, mask = sample.rgb, sample.mask
        out = predict_full_resolution(colorizer, [rgb])[0]
        seg.update(out["mask"][None], target_classes(mask, 2)[None])
        boundary.update(out["mask"], target_classes(mask, 2))
        col.update(out["pred"], rgb)
        gray.update(out["gray"], rgb)
    return seg, col, gray, boundary


@pytest.mark.ray
def test_evaluate_writes_every_metric_and_a_grid(ray_local, eval_data) -> None:
    from semcolor.evaluation.job import evaluate

    out = Path(eval_data["root"]) / "out"
    metrics = evaluate(eval_data["checkpoint"], images=eval_data["images"], masks=eval_data["masks"], out=str(out),
                       batch_size=4, grid_rows=3)
    saved = json.loads((out / "metrics.json").read_text())
    assert TOP_KEYS <= set(saved)
    assert GRAY_KEYS <= set(saved["gray_baseline"]) and COUNT_KEYS <= set(saved["counts"])
    assert saved["counts"] == {"pairs": 10, "evaluated": 9, "color_evaluated": 8, "skipped_gray": 1, "bad": 1,
                               "bad:empty": 1, "mask_resized": 1}
    assert saved["bad_files"][0]["key"] == "empty" and saved["bad_files"][0]["kind"] == "empty"
    assert len(saved["iou"]) == 2 and saved["model_size"] == 32

    # Distributed partial accumulators merged on the driver == one process over the same pairs.
    seg, col, gray, boundary = _single_process(eval_data)
    assert metrics["pixel_accuracy"] == pytest.approx(seg.result()["pixel_accuracy"], abs=1e-3)
    assert metrics["boundary_iou"] == pytest.approx(boundary.result()["boundary_iou"], abs=1e-3)
    assert metrics["miou"] == pytest.approx(seg.result()["miou"], abs=1e-3)
    for key in ("mse", "psnr", "ssim", "colorfulness_pred", "colorfulness_true"):
        assert metrics[key] == pytest.approx(col.result()[key], rel=1e-3), key
    assert metrics["gray_baseline"]["psnr"] == pytest.approx(gray.result()["psnr"], rel=1e-9)
    assert metrics["gray_baseline"]["colorfulness"] < 1.0  # AB = 0 is (nearly) colorless

    grid = Image.open(out / "grid.png")
    grid.load()
    # grid_rows=3 rows of 5 panels (2.4 x 2.0 inches each, at 80 dpi), whatever the number of good pairs (9)
    assert grid.format == "PNG" and grid.size == (5 * 2.4 * 80, 3 * 2.0 * 80)


def test_select_pairs_keeps_the_training_validation_split(eval_data) -> None:
    from semcolor.data.pairs import is_validation
    from semcolor.evaluation.job import _select_pairs

    pairs = _select_pairs(eval_data["images"], eval_data["masks"], None, None, 0.5)
    assert all(is_validation(k, 0.5) for k in pairs["key"].to_pylist())
    assert _select_pairs(eval_data["images"], eval_data["masks"], None, 2, None).num_rows == 2
    with pytest.raises(ValueError, match="no pairs"):
        _select_pairs(eval_data["images"], eval_data["masks"], None, None, 1e-9)


def test_evaluate_rejects_a_folder_without_checkpoint(tmp_path, eval_data) -> None:
    from semcolor.evaluation.job import evaluate
    from semcolor.model.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="config.json"):
        evaluate(str(tmp_path), images=eval_data["images"], masks=eval_data["masks"], out=str(tmp_path / "o"))
