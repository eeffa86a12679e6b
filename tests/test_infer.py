"""Bulk colorization: planning, records, deterministic encoding (unit), and the Ray Data job end to end:
local and S3, full resolution on odd sizes and EXIF, resume exactly once, a bad-input corpus, dead actors
and a killed driver."""

from __future__ import annotations

from collections import Counter

import io
import os
import signal
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from helpers import ok_counts
from PIL import Image

from semcolor.bulk.job import drop_done, plan_inputs
from semcolor.bulk.records import RECORD_SCHEMA, latest_by_key, read_records
from semcolor.core import storage
from semcolor.core.encode import encode_mask, encode_rgb
from semcolor.core.lightness import rgb_to_l8
from semcolor.model import checkpoint
from semcolor.model.config import ModelConfig
from semcolor.model.network import build_model

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    """One random-init model at size 64 for the whole module (weights=None)."""
    torch.manual_seed(0)
    config = ModelConfig(arch="unet", input_size=64)
    return checkpoint.save(build_model(config), config, str(tmp_path_factory.mktemp("ckpt") / "model"))


def _save(path: Path, image: Image.Image, fmt: str, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **kwargs)
    return path


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth color image (compresses well, realistic enough for codecs) with some noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), (xx + yy) * 127 // max(1, h + w - 2)], -1)
    return np.clip(base + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb stand-in)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + "IHDR"
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def _size(url: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(storage.read_bytes(url))).size


# ---------------------------------------------------------------- unit: no Ray


def test_fast_rgb_to_l8_matches_the_lab_formula():
    from semcolor.core import color

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 97, 3), dtype=np.uint8)
    lab_l = color.rgb_to_lab(color.uint8_to_float(torch.from_numpy(rgb)[None]))[0, 0].numpy()
    expected = np.clip(np.rint(lab_l * 2.55), 0, 255).astype(np.uint8)
    got = rgb_to_l8(rgb)
    assert np.abs(got.astype(int) - expected).max() <= 1
    assert (got != expected).mean() < 1e-3
    gray = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    np.testing.assert_array_equal(rgb_to_l8(gray), rgb_to_l8(np.repeat(gray[..., None], 3, axis=2)))


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_encoding_is_deterministic_and_keeps_size(fmt):
    rgb = _rgb(37, 51)
    a, b = encode_rgb(rgb, fmt, 85), encode_rgb(rgb.copy(), fmt, 85)
    assert a == b
    assert Image.open(io.BytesIO(a)).size == (51, 37)
    if fmt == "png":
        assert b"tIME" not in a and b"tEXt" not in a
    mask = encode_mask(np.full((3, 4), 255, np.uint8))
    assert Image.open(io.BytesIO(mask)).mode == "L"
    with pytest.raises(ValueError, match="supported"):
        encode_rgb(rgb, "gif")
    with pytest.raises(ValueError, match="quality"):
        encode_rgb(rgb, "jpg", 0)


def _records(rows: list[dict]) -> pa.Table:
    defaults = {f.name: None for f in RECORD_SCHEMA}
    return pa.Table.from_pylist([{**defaults, **r} for r in rows], schema=RECORD_SCHEMA)


def test_large_jobs_run_in_waves_of_bounded_blocks():
    from semcolor.bulk.job import WAVE_BLOCKS, waves

    assert waves(3, 16) == [(0, 3)]
    assert waves(16 * WAVE_BLOCKS, 16) == [(0, 16 * WAVE_BLOCKS)]
    planned = waves(1_000_000, 16)
    assert planned[0] == (0, 16 * WAVE_BLOCKS) and len(planned) == -(-1_000_000 // (16 * WAVE_BLOCKS))
    assert sum(rows for _, rows in planned) == 1_000_000
    assert all(a + n == b for (a, n), (b, _) in zip(planned, planned[1:]))  # contiguous, in key order


def test_stage_tasks_fit_beside_the_model_actors():
    from semcolor.bulk.job import stage_task_cpus

    assert stage_task_cpus(8.0, 2.0) == 1.0
    assert stage_task_cpus(2.0, 1.0) == 0.5  # a decode and a merge task both fit beside the actor
    assert stage_task_cpus(1.0, 0.25) == 0.375  # a 1-CPU local Ray: still one of each
    assert stage_task_cpus(1.0, 1.0) == 0.25  # actors told to take it all: tasks at the floor, not at 0


def test_latest_ok_wins_and_errors_are_kept_until_ok():
    records = _records([
        {"key": "a", "status": "ok", "output": "o1", "finished_at": 1.0},
        {"key": "a", "status": "error", "finished_at": 5.0},
        {"key": "a", "status": "ok", "output": "o2", "finished_at": 3.0},
        {"key": "b", "status": "error", "reason": "old", "finished_at": 1.0},
        {"key": "b", "status": "error", "reason": "new", "finished_at": 2.0},
    ])
    latest = {r["key"]: r for r in latest_by_key(records).to_pylist()}
    assert latest["a"]["status"] == "ok" and latest["a"]["output"] == "o2"
    assert latest["b"]["reason"] == "new"
    assert ok_counts(records) == {"a": 2}


def test_compaction_keeps_each_keys_latest_record_in_one_file(tmp_path):
    """Records of three runs in several files (and one truncated file) -> one compacted file with the same latest
    record per key; the unreadable file stays; compacting again changes nothing."""
    import pyarrow.parquet as pq

    from semcolor.bulk.records import compact_records, done_outputs, record_files

    dst = tmp_path / "dst"
    runs = [
        [{"key": "a", "status": "error", "finished_at": 1.0}, {"key": "b", "status": "ok", "output": "b1",
                                                                "finished_at": 1.0}],
        [{"key": "a", "status": "ok", "output": "a2", "finished_at": 2.0}],
        [{"key": "c", "status": "error", "reason": "corrupt", "finished_at": 3.0},
         {"key": "b", "status": "ok", "output": "b3", "finished_at": 3.0}],
    ]
    for i, rows in enumerate(runs):
        for j, row in enumerate(rows):
            (dst / "_manifest" / f"run{i}").mkdir(parents=True, exist_ok=True)
            pq.write_table(_records([row]), dst / "_manifest" / f"run{i}" / f"part{j}.parquet")
    (dst / "_manifest" / "run2" / "truncated.parquet").write_bytes(b"PAR1\x00")
    before = read_records(str(dst))
    assert compact_records(str(dst)) == (6, 3)
    _, paths = record_files(str(dst))
    assert len(paths) == 2 and any("truncated" in p for p in paths)  # one compacted file + the unreadable one
    after = read_records(str(dst))
    assert after.num_rows == 3
    assert done_outputs(after) == done_outputs(before) == {"a": ("a2", None), "b": ("b3", None)}
    assert {r["key"]: r["reason"] for r in latest_by_key(after).to_pylist()}["c"] == "corrupt"
    assert ok_counts(after) == {"a": 1, "b": 1}


def test_plan_lists_images_skips_dst_and_marks_duplicate_keys(tmp_path):
    src = tmp_path / "src"
    for name in ("a.jpg", "sub/b.png", "c.png", "c.jpg"):
        _save(src / name, Image.new("RGB", (4, 4)), "PNG")
    (src / "notes.txt").write_text("not an input")
    _save(src / "out" / "a.png", Image.new("RGB", (4, 4)), "PNG")  # DST inside SRC: never an input
    work, ignored = plan_inputs(str(src), str(src / "out"), "png", masks=True)
    rows = {r["key"]: r for r in work.to_pylist()}
    assert ignored == 1
    assert set(rows) == {"a", "sub/b", "c", "c.png"}
    assert rows["c.png"]["status"] == "error" and rows["c.png"]["kind"] == "duplicate_key"
    assert rows["sub/b"]["output"] == str(src / "out" / "sub" / "b.png")
    assert rows["sub/b"]["mask"] == str(src / "out" / "masks" / "sub" / "b.png")
    limited, _ = plan_inputs(str(src), str(tmp_path / "dst"), "jpg", masks=False, limit=2)
    assert limited.num_rows == 2 and limited["mask"].to_pylist() == ["", ""]


def test_plan_reads_a_csv_manifest_with_relative_paths(tmp_path):
    _save(tmp_path / "imgs" / "x.png", Image.new("RGB", (4, 4)), "PNG")
    _save(tmp_path / "imgs" / "deep" / "y.png", Image.new("RGB", (4, 4)), "PNG")
    (tmp_path / "list.csv").write_text("image\nimgs/x.png\nimgs/deep/y.png\n")
    work, ignored = plan_inputs(str(tmp_path / "list.csv"), str(tmp_path / "dst"), "png", masks=False)
    assert ignored == 0
    assert sorted(work["key"].to_pylist()) == ["deep/y", "x"]
    assert all(Path(s).is_file() for s in work["source"].to_pylist())


def test_drop_done_skips_same_output_and_redoes_changed_format_or_missing_mask(tmp_path):
    from semcolor.bulk.records import manifest_url

    dst = str(tmp_path / "dst")
    storage.makedirs(manifest_url(dst))
    rec = _records([{"key": "a", "status": "ok", "output": storage.join(dst, "a.png"), "finished_at": 1.0},
                    {"key": "b", "status": "error", "finished_at": 1.0}])
    import pyarrow.parquet as pq

    pq.write_table(rec, os.path.join(manifest_url(dst), "r.parquet"))
    (Path(manifest_url(dst)) / "truncated.parquet").write_bytes(b"PAR1 not really")  # a killed write
    src = tmp_path / "src"
    for k in ("a", "b", "c"):
        _save(src / f"{k}.png", Image.new("RGB", (4, 4)), "PNG")
    work, _ = plan_inputs(str(src), dst, "png", masks=False)
    assert drop_done(work, dst)["key"].to_pylist() == ["b", "c"]
    work, _ = plan_inputs(str(src), dst, "jpg", masks=False)
    assert drop_done(work, dst)["key"].to_pylist() == ["a", "b", "c"]
    work, _ = plan_inputs(str(src), dst, "png", masks=True)
    assert drop_done(work, dst)["key"].to_pylist() == ["a", "b", "c"]


# ---------------------------------------------------------------- Ray Data job


def _odd_sources(src: Path) -> dict[str, tuple[int, int]]:
    """A few odd-sized sources, one EXIF-rotated; returns key -> expected output (width, height)."""
    expected = {}
    for i, (h, w) in enumerate([(37, 53), (101, 23), (64, 64), (257, 129), (5, 300)]):
        _save(src / f"odd{i}.png", Image.fromarray(_rgb(h, w, i)), "PNG")
        expected[f"odd{i}"] = (w, h)
    rotated = Image.fromarray(_rgb(20, 30, 9))  # stored 30 wide x 20 high, displayed rotated: 20 x 30
    exif = rotated.getexif()
    exif[0x0112] = 6
    _save(src / "nested" / "rotated.jpg", rotated, "JPEG", exif=exif.tobytes())
    expected["nested/rotated"] = (20, 30)
    return expected


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "_manifest" not in p.parts and not p.name.startswith(".")}


@pytest.mark.ray
def test_local_full_resolution_then_rerun_does_nothing(ray_local, tiny_checkpoint, tmp_path):
    from semcolor.bulk.job import colorize

    src, dst = tmp_path / "src", tmp_path / "dst"
    expected = _odd_sources(src)
    summary = colorize(str(src), str(dst), tiny_checkpoint, batch_size=4, masks=True)
    assert (summary.done, summary.failed, summary.skipped) == (len(expected), 0, 0)
    assert 0 < summary.object_store_bytes_per_row < 1e6
    # decode runs in its own CPU tasks, not fused into the model actor (different resource requests)
    assert {"MapBatches(decode_rows)", "MapBatches(ColorizeActor)"} <= set(summary.stage_cpu_seconds)
    for key, size in expected.items():
        assert _size(str(dst / f"{key}.png")) == size, key
        assert stat.S_IMODE(os.stat(dst / f"{key}.png").st_mode) == storage.FILE_MODE  # 0644 under umask 022
        mask = Image.open(dst / "masks" / f"{key}.png")
        assert mask.size == size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
    records = read_records(str(dst))
    assert set(records["key"].to_pylist()) == set(expected)
    assert all(s > 0 for s in records["seconds"].to_pylist())
    before = _tree_bytes(dst)

    again = colorize(str(src), str(dst), tiny_checkpoint, batch_size=4, masks=True)
    assert (again.done, again.failed, again.skipped) == (0, 0, len(expected))
    assert _tree_bytes(dst) == before
    assert read_records(str(dst)).num_rows == len(expected)  # nothing new recorded

    # --full-res-l redecode: the merge decodes each source again; the same bytes, and the full-resolution L no
    # longer travels between the stages (model-size arrays only)
    redecoded = tmp_path / "redecoded"
    other = colorize(str(src), str(redecoded), tiny_checkpoint, batch_size=4, masks=True, full_res_l="redecode")
    assert (other.done, other.failed) == (len(expected), 0)
    assert _tree_bytes(redecoded) == before
    carried = sum(w * h for w, h in expected.values()) / len(expected)
    assert other.object_store_bytes_per_row == pytest.approx(summary.object_store_bytes_per_row - 2 * carried)


def _corpus(src: Path) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """The robustness corpus -> (ok key -> output (width, height), error key -> kind)."""
    ok: dict[str, tuple[int, int]] = {}
    rng = np.random.default_rng(3)
    _save(src / "gray.png", Image.fromarray(rng.integers(0, 256, (31, 17), dtype=np.uint8)), "PNG")
    ok["gray"] = (17, 31)
    _save(src / "deep16.png", Image.fromarray((np.arange(40 * 24).reshape(24, 40) * 60).astype(np.uint16)), "PNG")
    ok["deep16"] = (40, 24)
    _save(src / "cmyk.jpg", Image.new("CMYK", (33, 21), (10, 200, 30, 5)), "JPEG")
    ok["cmyk"] = (33, 21)
    _save(src / "palette.png", Image.fromarray(_rgb(19, 45)).convert("P", palette=Image.Palette.ADAPTIVE), "PNG")
    ok["palette"] = (45, 19)
    rgba = np.dstack([_rgb(22, 26), rng.integers(0, 256, (22, 26), dtype=np.uint8)])
    _save(src / "rgba.png", Image.fromarray(rgba), "PNG")
    ok["rgba"] = (26, 22)
    _save(src / "tiny.png", Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")
    ok["tiny"] = (1, 1)
    yy, xx = np.mgrid[0:2000, 0:3000]
    big = np.stack([(xx // 24) % 256, (yy // 16) % 256, ((xx + yy) // 40) % 256], -1).astype(np.uint8)
    _save(src / "large.jpg", Image.fromarray(big), "JPEG", quality=80)
    ok["large"] = (3000, 2000)
    good = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(good, format="JPEG")
    (src / "corrupt.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (src / "empty.png").write_bytes(b"")
    (src / "text.jpg").write_bytes(b"this is not an image at all\n")
    (src / "bomb.png").write_bytes(_png_claiming(9000, 9000))
    (src / "README.txt").write_text("ignored: no image extension")
    errors = {"corrupt": "corrupt", "empty": "empty", "text": "not_image", "bomb": "too_large"}
    return ok, errors


@pytest.mark.ray
def test_bad_input_corpus_is_accounted_exactly(ray_local, tiny_checkpoint, tmp_path):
    from semcolor.bulk.job import colorize

    src, dst = tmp_path / "src", tmp_path / "dst"
    ok, errors = _corpus(src)
    summary = colorize(str(src), str(dst), tiny_checkpoint, batch_size=4, format="jpg", max_pixels=50_000_000)
    assert summary.inputs == len(ok) + len(errors) and summary.ignored == 1
    assert (summary.done, summary.failed) == (len(ok), len(errors))
    latest = {r["key"]: r for r in latest_by_key(read_records(str(dst))).to_pylist()}
    assert set(latest) == set(ok) | set(errors)  # outputs + error records == inputs
    for key, kind in errors.items():
        assert latest[key]["status"] == "error" and latest[key]["kind"] == kind, latest[key]
        assert latest[key]["reason"] and latest[key]["output"] is None
        assert not (dst / f"{key}.jpg").exists()
    for key, size in ok.items():
        assert latest[key]["status"] == "ok", latest[key]
        assert (latest[key]["width"], latest[key]["height"]) == size
        assert _size(str(dst / f"{key}.jpg")) == size, key
    assert "9000x9000" in latest["bomb"]["reason"]
    written = {p.stem for p in dst.glob("*.jpg")}
    assert written == set(ok)
    # every ok record carries its output's signals; the report counts what the records say and shows sampled outputs
    for key in ok:
        signals = [latest[key][c] for c in ("colorfulness", "foreground_share", "mask_confidence")]
        assert all(v is not None and np.isfinite(v) for v in signals) and 0.5 <= signals[2] <= 1.0, key
    from semcolor.bulk.report import build_report

    page, figures = build_report(read_records(str(dst)), samples=3)
    assert (figures["ok"], figures["errors"]) == (len(ok), len(errors))
    assert figures["error_kinds"] == dict(Counter(errors.values()))
    assert all(len(keys) == min(3, len(ok)) for keys in figures["sampled"].values())
    assert page.count("<img src=\"data:image/jpeg;base64,") == 4 * min(3, len(ok))  # every sampled output read


@pytest.mark.ray
@pytest.mark.s3
def test_s3_to_s3(ray_local, tiny_checkpoint, s3_request_log, s3_prefix, monkeypatch):
    """Every request is a round trip to the store: each output and each record file goes up in one PUT (no multipart
    upload, no folder markers, no bucket checks per block), each source comes in one HEAD and one GET."""
    from semcolor.benchmarks._latency_proxy import read_request_log
    from semcolor.bulk import job
    from semcolor.bulk.job import colorize
    from semcolor.bulk.records import record_files

    monkeypatch.setattr(job, "COMPACT_ABOVE", 1)  # the run ends by compacting its record files into one

    src, dst = storage.join(s3_prefix, "scans"), storage.join(s3_prefix, "color")
    sizes = {"a": (41, 27), "deep/b": (13, 77), "c": (100, 99)}
    for key, (w, h) in sizes.items():
        buf = io.BytesIO()
        Image.fromarray(_rgb(h, w)).save(buf, format="JPEG")
        storage.write_bytes(storage.join(src, f"{key}.jpg"), buf.getvalue())
    before = len(read_request_log(s3_request_log))
    summary = colorize(src, dst, tiny_checkpoint, batch_size=2, masks=True, format="webp")
    assert (summary.done, summary.failed) == (3, 0), summary.failure_examples
    assert "MapBatches(merge_encode_write)->Write" in summary.stage_cpu_seconds  # records written in the merge task
    assert "Write" not in summary.stage_cpu_seconds
    requests = read_request_log(s3_request_log)[before:]
    methods = [method for _, method, _ in requests]
    deleted = methods.count("DELETE")  # the compaction removes the record files (and Arrow keeps their folder)
    requests = requests[:methods.index("DELETE")] if deleted else requests  # the job's own work
    assert not [target for _, method, target in requests if method == "PUT" and target.endswith("/")]  # markers
    job_requests = Counter((method, target.split("?")[0].rsplit("/", 1)[0].split("/", 3)[-1])  # (method, folder)
                           for _, method, target in requests)
    assert job_requests[("GET", "scans")] == job_requests[("HEAD", "scans")] == 2  # a, c
    assert job_requests[("PUT", "color")] == 2 and job_requests[("PUT", "color/masks")] == 2  # a, c
    assert job_requests[("PUT", "color/deep")] == 1 and job_requests[("PUT", "color/masks/deep")] == 1  # deep/b
    # a record file per block the merge tasks got (Ray Data may hand one task both blocks of 2 and 1 rows), then,
    # with more than one, the compacted one
    record_puts = job_requests[("PUT", "color/_manifest")]
    assert (record_puts, deleted) in ((1, 0), (2 + 1, 2)), (record_puts, deleted)
    assert not [k for k in job_requests if k[0] == "POST"]  # no multipart upload, no batch delete
    for key, size in sizes.items():
        assert _size(storage.join(dst, f"{key}.webp")) == size
        assert _size(storage.join(dst, "masks", f"{key}.png")) == size
    assert len(record_files(dst)[1]) == 1 and ok_counts(read_records(dst)) == dict.fromkeys(sizes, 1)
    assert colorize(src, dst, tiny_checkpoint, batch_size=2, masks=True, format="webp").skipped == 3


@pytest.mark.ray
def test_actor_death_is_retried_without_lost_or_duplicated_keys(ray_local, tiny_checkpoint, tmp_path):
    from faults import FailingColorizeActor, write_plan

    from semcolor.bulk.job import ColorizeConfig, run_job

    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(10):
        _save(src / f"k{i:02d}.png", Image.fromarray(_rgb(20 + i, 30 - i, i)), "PNG")
    marker = tmp_path / "fault.marker"
    write_plan(tiny_checkpoint, "actor", after_batches=2, marker=marker)
    config = ColorizeConfig(src=str(src), dst=str(dst), checkpoint=tiny_checkpoint, batch_size=2)
    summary = run_job(config, model_stage=FailingColorizeActor)
    assert marker.exists()  # the actor did die once
    assert (summary.done, summary.failed) == (10, 0)
    assert ok_counts(read_records(str(dst))) == {f"k{i:02d}": 1 for i in range(10)}


@pytest.mark.ray
@pytest.mark.slow
def test_killed_driver_then_rerun_finishes_every_key_once_byte_identical(ray_local, tiny_checkpoint, tmp_path):
    import ray

    from semcolor.bulk.job import colorize

    src, dst = tmp_path / "src", tmp_path / "dst"
    keys = [f"s{i:02d}" for i in range(16)]
    for i, key in enumerate(keys):
        _save(src / f"{key}.png", Image.fromarray(_rgb(31 + i, 45 - i, i)), "PNG")
    # The driver: this job in its own process, joined to the session Ray; its model actor SIGKILLs it midway.
    driver = (
        "import faults, os, sys, ray\n"
        "from semcolor.bulk.job import ColorizeConfig, run_job\n"
        f"faults.write_plan({tiny_checkpoint!r}, 'driver', after_batches=3, marker={str(tmp_path / 'kill.marker')!r},"
        " driver_pid=os.getpid())\n"
        f"ray.init(address={ray.get_runtime_context().gcs_address!r},"
        f" runtime_env={{'env_vars': {{'PYTHONPATH': {str(REPO_ROOT / 'tests')!r}}}}})\n"
        f"run_job(ColorizeConfig(src={str(src)!r}, dst={str(dst)!r}, checkpoint={tiny_checkpoint!r}, batch_size=2),"
        " model_stage=faults.FailingColorizeActor)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")])}
    proc = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-3000:]
    first = _tree_bytes(dst) if dst.exists() else {}
    recorded_before = set(ok_counts(read_records(str(dst)))) if dst.exists() else set()
    assert len(recorded_before) < len(keys)  # it really stopped midway

    summary = colorize(str(src), str(dst), tiny_checkpoint, batch_size=2)
    assert summary.skipped == len(recorded_before)
    assert summary.done == len(keys) - len(recorded_before) and summary.failed == 0
    assert ok_counts(read_records(str(dst))) == {k: 1 for k in keys}  # every key exactly once
    after = _tree_bytes(dst)
    assert set(after) == {f"{k}.png" for k in keys}
    # every output, kept from the killed run or written by the rerun, is the bytes an uninterrupted run writes
    reference = colorize(str(src), str(tmp_path / "reference"), tiny_checkpoint, batch_size=2)
    assert reference.done == len(keys)
    assert after == _tree_bytes(tmp_path / "reference")
    assert all(after[name] == data for name, data in first.items())  # the killed run's files were not changed
