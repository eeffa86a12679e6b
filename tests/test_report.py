"""`semcolor report`: the tails sampled right, errors counted, only sampled outputs read, and 1 M records in about
a minute (no Ray)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from semcolor.bulk.records import RECORD_SCHEMA
from semcolor.bulk.report import build_report, sample_rows
from semcolor.cli import main


def _records(n: int, dst: Path | None = None, seed: int = 0) -> pa.Table:
    """n records: ok ones with signals (keys k0000...), every 10th an error of kind corrupt or read_error; the
    outputs exist as small JPEGs under ``dst`` when given."""
    rng = np.random.default_rng(seed)
    keys = [f"k{i:07d}" for i in range(n)]
    error = np.arange(n) % 10 == 9
    outputs = [None if e else (str(dst / f"{k}.jpg") if dst else f"/nowhere/{k}.jpg") for k, e in zip(keys, error)]
    if dst is not None:
        dst.mkdir(parents=True, exist_ok=True)
        for i, url in enumerate(outputs):
            if url:
                Image.fromarray(np.full((30, 40, 3), (i * 7) % 255, np.uint8)).save(url)
    signal = {"colorfulness": rng.uniform(0, 60, n), "foreground_share": rng.uniform(0, 1, n),
              "mask_confidence": rng.uniform(0.5, 1, n)}
    columns = {
        "key": keys, "source": [f"/src/{k}.png" for k in keys], "output": outputs, "mask": [None] * n,
        "status": np.where(error, "error", "ok"), "kind": np.where(error, np.where(np.arange(n) % 20 == 9,
                                                                                   "corrupt", "read_error"), ""),
        "reason": np.where(error, "broken", ""), "width": np.full(n, 4000, np.int32),
        "height": np.full(n, 3000, np.int32), "source_bytes": np.full(n, 10**6), "output_bytes": np.full(n, 10**6),
        "seconds": rng.uniform(0.1, 1.0, n), "object_store_bytes": np.zeros(n, np.int64), "run_id": ["r"] * n,
        "finished_at": np.arange(n, dtype=np.float64),
        **{k: pa.array(np.where(error, np.nan, v), pa.float32(), mask=error) for k, v in signal.items()},
        "source_color": pa.array(np.arange(n) % 3 == 0, mask=error),
    }
    return pa.table(columns, schema=RECORD_SCHEMA)


def test_tails_and_middle_are_sampled_from_the_signals():
    table = pa.table({"key": list("abcdef"), "v": pa.array([0.9, None, 0.1, 0.5, 0.7, 0.3], pa.float32())})
    assert sample_rows(table, "v", "low", 2)["key"].to_pylist() == ["c", "f"]
    assert sample_rows(table, "v", "high", 3)["key"].to_pylist() == ["a", "e", "d"]
    assert sample_rows(table, "v", "mid", 1)["key"].to_pylist() == ["d"]  # median of the 5 non-null values: 0.5
    assert sample_rows(table, "v", "low", 0).num_rows == 0


def test_report_counts_errors_and_shows_the_worst_outputs_first(tmp_path):
    records = _records(60, tmp_path / "dst")
    page, figures = build_report(records, samples=4)
    assert (figures["keys"], figures["ok"], figures["errors"]) == (60, 54, 6)
    assert figures["error_kinds"] == {"corrupt": 3, "read_error": 3}
    ok = records.filter(pa.compute.equal(records["status"], "ok")).to_pylist()
    least_confident = sorted(ok, key=lambda r: r["mask_confidence"])[:4]
    assert figures["sampled"]["least confident masks"] == [r["key"] for r in least_confident]
    largest = sorted(ok, key=lambda r: -r["foreground_share"])[:4]
    assert figures["sampled"]["largest masks"] == [r["key"] for r in largest]
    assert figures["source_color"] == sum(1 for r in ok if r["source_color"])
    assert page.count('<img src="data:image/jpeg;base64,') == 16 and "Errors by kind" in page
    assert page.index(least_confident[0]["key"]) < page.index(least_confident[1]["key"])


def test_a_million_records_in_about_a_minute(tmp_path, capsys):
    """1 M generated records (one Parquet file): the page is written, with each group's outputs missing (nothing
    else is read: no output exists), in well under two minutes (a loose bound; the figure is in the bench)."""
    dst = tmp_path / "dst"
    (dst / "_manifest").mkdir(parents=True)
    pq.write_table(_records(1_000_000), dst / "_manifest" / "part-0.parquet")
    out = tmp_path / "report.html"
    started = time.perf_counter()
    assert main(["report", str(dst), "--out", str(out), "--samples", "6"]) == 0
    seconds = time.perf_counter() - started
    line = capsys.readouterr().out
    assert "1,000,000 keys, 900,000 ok, 100,000 errors" in line, line
    page = out.read_text()
    assert page.count('class="missing"') == 24 and "FileNotFoundError" in page
    assert seconds < 120, seconds


def test_a_folder_without_records_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no records under _manifest/" in err
