"""The quality table's arithmetic: the frontier along the vividness knob, and rows kept from an earlier table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semcolor.benchmarks.quality import frontier, kept_rows


def test_frontier_interpolates_between_the_vividness_values_around_the_target() -> None:
    points = [(0.0, 0.4, 0.6), (0.5, 0.7, -0.2), (1.0, 1.0, -2.0)]
    f = frontier(points, target=0.6)
    assert f is not None
    assert f["vividness"] == pytest.approx(0.5 * (0.2 / 0.3))
    assert f["psnr_minus_gray"] == pytest.approx(0.6 + (0.2 / 0.3) * (-0.8))
    assert frontier(points, target=1.2) is None  # never reached


def _table(out: Path, protocol: dict, names: list[str]) -> None:
    rows = [{"row": n, "miou": 0.5, "detail": {}} for n in names]
    (out / "quality.json").write_text(json.dumps({"protocol": protocol, "rows": rows}))


def test_rows_not_rerun_are_kept_only_from_a_table_of_the_same_protocol(tmp_path: Path) -> None:
    protocol = {"epochs": 44, "size": 96}
    assert kept_rows(str(tmp_path), protocol, ["bins"]) == []  # no earlier table
    _table(tmp_path, protocol, ["regression", "regression bilinear", "bins v=0", "bins v=0.45 bilinear"])
    kept = kept_rows(str(tmp_path), protocol, ["bins"])
    assert [r["row"] for r in kept] == ["regression", "regression bilinear"]
    assert kept_rows(str(tmp_path), {**protocol, "epochs": 20}, ["bins"]) == []
