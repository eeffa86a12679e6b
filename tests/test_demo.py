"""`semcolor demo`: the contact sheet, the output-folder guard, and the whole demo in its fast mode."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from semcolor.demo.contact_sheet import BACKGROUND, contact_sheet
from semcolor.demo.demo import MARKER, _prepare_out


def _cell(sheet: np.ndarray, row: int, col: int, cell: int, pad: int, label_height: int) -> np.ndarray:
    """The cell x cell pixels of (row, col): below the header line, rows of cell + label + pad, columns of cell +
    pad, everything after one pad."""
    top = label_height + pad + row * (cell + label_height + pad)
    left = pad + col * (cell + pad)
    return sheet[top:top + cell, left:left + cell]


def test_contact_sheet_layout():
    """2 rows x 3 columns of 40 px cells: the sheet's size follows; each image sits in its own cell, fitted with its
    aspect kept and centred; an empty cell and the margins are the background."""
    tall = np.full((50, 20, 3), (200, 30, 90), np.uint8)  # fitted to 16 x 40: 12 px of background each side
    rows = [("a", [np.full((10, 30), 80, np.uint8), tall, None]),
            ("b", [np.full((5, 5), 1, np.uint8), None, np.zeros((7, 9, 3), np.uint8)])]
    sheet = contact_sheet(rows, ["in", "out", "mask"], cell=40, pad=4, label_height=10)
    assert sheet.dtype == np.uint8 and sheet.shape == (10 + 4 + 2 * (40 + 10 + 4), 4 + 3 * 44, 3)

    def cell(r, c):
        return _cell(sheet, r, c, 40, 4, 10)

    wide = cell(0, 0)  # 30 x 10 fitted to 40 x 13 (rounded), centred: rows 13..25 gray 80, the rest background
    assert (wide[14:26] == 80).all() and (wide[:12] == BACKGROUND).all() and (wide[28:] == BACKGROUND).all()
    assert (cell(0, 1)[:, 13:27] == (200, 30, 90)).all() and (cell(0, 1)[:, :11] == BACKGROUND).all()
    assert (cell(0, 2) == BACKGROUND).all() and (cell(1, 1) == BACKGROUND).all()  # None: empty cells
    assert (cell(1, 0) == 1).all()  # a square fills its cell
    assert (cell(1, 2)[8:32, 2:38] == 0).all()
    assert (sheet[:, :4] == BACKGROUND).all() and (sheet[:, -4:] == BACKGROUND).all()  # the side margins
    label_strip = sheet[10 + 4 + 40:10 + 4 + 40 + 10, 4:44]  # under row a's first cell: its label, drawn in TEXT
    assert (label_strip != BACKGROUND).any(axis=-1).sum() > 5
    with pytest.raises(ValueError, match="headers"):
        contact_sheet([("a", [None])], ["in", "out"])
    with pytest.raises(ValueError, match="at least one row"):
        contact_sheet([], ["in"])


def test_score_row_measures_against_the_truth():
    """PSNR of the colorized image and of the gray input (AB = 0) against scikit-image's, and the mask IoU by hand."""
    from skimage.color import lab2rgb, rgb2lab
    from skimage.metrics import peak_signal_noise_ratio

    from semcolor.demo.demo import score_row

    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    colorized = np.clip(original.astype(int) + rng.integers(-20, 21, original.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((32, 48), np.uint8)
    truth[:, :24] = 255  # the left half of the columns
    predicted = np.full((32, 48), 100, np.uint8)  # under 128: background
    predicted[:, 12:36] = 200  # overlap: 12 columns, union: 36 (and 24 of 48 columns agree: accuracy 1/2)
    score = score_row(original, colorized, predicted, truth)
    assert score.psnr == pytest.approx(peak_signal_noise_ratio(original, colorized, data_range=255), rel=1e-9)
    lab = rgb2lab(original)
    lab[..., 1:] = 0
    gray = np.round(np.clip(lab2rgb(lab), 0, 1) * 255).astype(np.uint8)
    assert score.gray_psnr == pytest.approx(peak_signal_noise_ratio(original, gray, data_range=255), abs=0.1)
    assert score.gray_psnr < score.psnr - 3  # the random colors are far from gray
    assert score.iou == pytest.approx(1 / 3)
    assert score_row(original, colorized, np.zeros_like(truth), np.zeros_like(truth)).iou == 1.0  # nothing to find


def _check_sheet(out, settings) -> None:
    """``out/contact_sheet.png`` as the demo writes it for ``settings``: a row per input (the scans, then the
    photos), input | colorized | mask | original in 224 px cells (write_sheet's; pad and label height
    contact_sheet's defaults, 6 and 18); the input cell gray, the colorized and original cells those images."""
    from semcolor.data.synth import make_pair
    from semcolor.demo.demo import SCAN_SEED

    keys = [f"scans/scan{i:02d}" for i in range(settings.scans)] + [f"photos/{name}" for name in settings.photos]
    sheet = np.asarray(Image.open(out / "contact_sheet.png").convert("RGB"))
    assert sheet.shape == (18 + 6 + len(keys) * (224 + 18 + 6), 6 + 4 * (224 + 6), 3)
    for row, key in enumerate(keys):
        cells = [_cell(sheet, row, col, 224, 6, 18).astype(float) for col in range(4)]
        assert np.abs(cells[0] - cells[0].mean(axis=-1, keepdims=True)).max() <= 1, key  # the input is gray
        assert cells[0].std() > 5, key  # and not empty
        shown = {1: np.asarray(Image.open(out / "colorized" / f"{key}.png").convert("RGB"))}
        if key.startswith("scans/"):  # the original: the scan's truth, square like its cell
            shown[3] = make_pair(int(key[-2:]), settings.scan_size, seed=SCAN_SEED)[0]
        for col, image in shown.items():
            assert np.abs(cells[col].mean(axis=(0, 1)) - image.mean(axis=(0, 1))).max() < 3, (key, col)


def test_write_sheet_places_every_input_and_scores_the_scans(tmp_path):
    """Outputs unlike their originals (inverted colors; scan00's mask the truth, scan01's its inverse): each in its
    own cell, and each scan scored against its own truth."""
    from skimage.metrics import peak_signal_noise_ratio

    from semcolor.demo.demo import DemoSettings, write_inputs, write_sheet

    settings = DemoSettings(synth_n=0, synth_size=0, epochs=0, batch_size=0, lr=0.0, photos=("astronaut",), scans=2,
                            scan_size=64)
    originals, truths = write_inputs(tmp_path, settings)
    assert set(truths) == {"scans/scan00", "scans/scan01"}
    masks = {"scans/scan00": truths["scans/scan00"], "scans/scan01": 255 - truths["scans/scan01"]}
    for key, rgb in originals.items():
        for folder in (tmp_path / "colorized", tmp_path / "colorized" / "masks"):
            (folder / key).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - rgb).save(tmp_path / "colorized" / f"{key}.png")
        if key in masks:
            Image.fromarray(masks[key]).save(tmp_path / "colorized" / "masks" / f"{key}.png")
    path, scores = write_sheet(tmp_path, originals, truths, tmp_path / "colorized")
    assert path == tmp_path / "contact_sheet.png"
    _check_sheet(tmp_path, settings)
    sheet = np.asarray(Image.open(path).convert("RGB")).astype(float)
    for row, key in enumerate(masks):  # the mask column shows each scan's own mask
        assert abs(_cell(sheet, row, 2, 224, 6, 18).mean() - masks[key].mean()) < 3, key
    assert (_cell(sheet, 2, 2, 224, 6, 18) == BACKGROUND).all()  # the photo has no mask: an empty cell
    assert set(scores) == set(truths)
    for key, score in scores.items():
        assert score.psnr == pytest.approx(peak_signal_noise_ratio(originals[key], 255 - originals[key],
                                                                   data_range=255), rel=1e-9)
    assert (scores["scans/scan00"].iou, scores["scans/scan01"].iou) == (1.0, 0.0)


def test_demo_refuses_a_foreign_folder_and_replaces_its_own(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not a semcolor demo folder"):
        _prepare_out(foreign)
    assert (foreign / "thesis.tex").exists()
    own = tmp_path / "demo"
    _prepare_out(own)
    (own / "old.png").write_bytes(b"x")
    _prepare_out(own)
    assert (own / MARKER).exists() and not (own / "old.png").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_demo_fast_runs_end_to_end(ray_local, quick_ray_train, tmp_path, capsys):
    from semcolor.demo.demo import run_demo

    out = tmp_path / "demo"
    assert run_demo(argparse.Namespace(out=str(out), fast=True, address=None, num_cpus=None)) == 0
    printed = capsys.readouterr().out
    assert "contact sheet" in printed and "done 4, skipped 0, failed 0" in printed
    assert (out / "runs" / "demo" / "best" / "model.safetensors").exists()
    from semcolor.demo.demo import FAST

    _check_sheet(out, FAST)
    # Its brief training already learns the synthetic world: unseen scans beat their gray input and get masks
    # (looser than the full demo's targets of +3 dB and IoU 0.8).
    mean = json.loads((out / "scores.json").read_text())["mean"]
    assert mean["psnr"] >= mean["gray_psnr"] + 1.0, mean
    assert mean["iou"] >= 0.5, mean
    for key in ("photos/astronaut", "scans/scan00", "scans/scan01", "scans/scan02"):
        source = Image.open(out / "inputs" / f"{key}.png")
        assert Image.open(out / "colorized" / f"{key}.png").size == source.size
        assert Image.open(out / "colorized" / "masks" / f"{key}.png").size == source.size
