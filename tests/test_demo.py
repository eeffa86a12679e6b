"""`semcolor demo`: the contact sheet, the output-folder guard, and the whole demo in its fast mode."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from semcolor.demo.contact_sheet import contact_sheet
from semcolor.demo.demo import MARKER, _prepare_out


def test_contact_sheet_layout():
    rows = [("a", [np.zeros((10, 30), np.uint8), np.full((50, 20, 3), 200, np.uint8), None]),
            ("b", [np.ones((5, 5), np.uint8), None, np.zeros((7, 9, 3), np.uint8)])]
    sheet = contact_sheet(rows, ["in", "out", "mask"], cell=40, pad=4, label_height=10)
    assert sheet.dtype == np.uint8 and sheet.shape == (10 + 4 + 2 * (40 + 10 + 4), 4 + 3 * 44, 3)
    with pytest.raises(ValueError, match="headers"):
        contact_sheet([("a", [None])], ["in", "out"])


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
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width > 400 and sheet.height > 400
    # Its brief training already learns the synthetic world: unseen scans beat their gray input and get masks
    # (looser than the full demo's targets of +3 dB and IoU 0.8).
    mean = json.loads((out / "scores.json").read_text())["mean"]
    assert mean["psnr"] >= mean["gray_psnr"] + 1.0, mean
    assert mean["iou"] >= 0.5, mean
    for key in ("photos/astronaut", "scans/scan00", "scans/scan01", "scans/scan02"):
        source = Image.open(out / "inputs" / f"{key}.png")
        assert Image.open(out / "colorized" / f"{key}.png").size == source.size
        assert Image.open(out / "colorized" / "masks" / f"{key}.png").size == source.size
