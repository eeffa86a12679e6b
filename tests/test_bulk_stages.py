"""The bulk job's merge stage on its own (no Ray): records for every row, writes overlapping, failures named."""

import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from semcolor.bulk import stages
from semcolor.core import storage
from semcolor.core.lightness import rgb_to_l8

SIZE = 16


def _batch(tmp_path, n: int, bad_output: int | None = None) -> dict[str, np.ndarray]:
    """n ok rows of a 20 x 30 gray source at model size SIZE, each row's L, AB and mask its own; row
    ``bad_output`` writes under a file."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "a_file").write_bytes(b"x")
    outputs = [str(tmp_path / "out" / f"{i}.png") for i in range(n)]
    if bad_output is not None:
        outputs[bad_output] = str(tmp_path / "a_file" / "under_a_file.png")
    l8 = [np.tile(np.arange(30, dtype=np.uint8) * 7 + 5 * i, (20, 1)) for i in range(n)]
    return {
        "key": np.array([str(i) for i in range(n)], dtype=object),
        "source": np.array([f"src/{i}.png" for i in range(n)], dtype=object),
        "output": np.array(outputs, dtype=object),
        "mask": np.array([str(tmp_path / "out" / "masks" / f"{i}.png") for i in range(n)], dtype=object),
        "status": np.array(["ok"] * n, dtype=object),
        "kind": np.array([""] * n, dtype=object),
        "reason": np.array([""] * n, dtype=object),
        "width": np.full(n, 30, np.int32), "height": np.full(n, 20, np.int32),
        "source_bytes": np.full(n, 100, np.int64), "source_color": np.zeros(n, bool),
        "l8": np.array([row.tobytes() for row in l8], dtype=object),
        "small": np.zeros((n, SIZE, SIZE), np.uint8),
        "ab8": np.stack([np.array([20 - 9 * i, 9 * i - 15], np.int8)[:, None, None].repeat(SIZE, 1).repeat(SIZE, 2)
                         for i in range(n)]),
        "fg8": np.stack([np.full((SIZE, SIZE), 255 * (i % 2), np.uint8) for i in range(n)]),
        "seconds": np.zeros(n), "object_store_bytes": np.zeros(n, np.int64),
    }


def test_writes_run_together_and_every_row_gets_its_record(tmp_path, monkeypatch):
    """Three rows' writes wait for each other at a barrier: written one after another they would never meet."""
    meet = threading.Barrier(3)
    write = storage.write_bytes

    def write_together(url, data, s3=None):
        if not url.endswith("/masks/" + url.rsplit("/", 1)[-1]):  # the image, after its mask
            meet.wait(timeout=30)
        write(url, data, s3=s3)

    monkeypatch.setattr(storage, "write_bytes", write_together)
    started, clock_started = time.time(), time.perf_counter()
    records = stages.merge_encode_write(_batch(tmp_path, 3), "png", 90, 2, "run", io_threads=4).to_pylist()
    ended, took = time.time(), time.perf_counter() - clock_started
    assert [r["status"] for r in records] == ["ok"] * 3, records
    for r in records:
        image = Image.open(r["output"])
        assert image.size == (30, 20) and Image.open(r["mask"]).size == (30, 20)
        # the bytes of both files written for the key, the stage's time (on the stage's own clock: the wall clock
        # is slewed by a few ms now and then), a timestamp of this call
        assert r["output_bytes"] == os.path.getsize(r["output"]) + os.path.getsize(r["mask"])
        assert 0 < r["seconds"] <= took and started <= r["finished_at"] <= ended


def test_a_failed_write_is_that_rows_error_and_the_others_are_written(tmp_path):
    batch = _batch(tmp_path, 3, bad_output=1)
    batch["status"][2], batch["kind"][2], batch["reason"][2] = "error", "decode_failed", "not an image"
    records = stages.merge_encode_write(batch, "png", 90, 2, "run", io_threads=2).to_pylist()
    assert [r["status"] for r in records] == ["ok", "error", "error"]
    assert records[1]["kind"] == stages.WRITE_ERROR and "under_a_file.png" in records[1]["reason"]
    assert records[1]["output"] is None and records[1]["mask"] is None
    assert records[2]["kind"] == "decode_failed" and records[2]["reason"] == "not an image"
    assert (tmp_path / "out" / "0.png").exists() and not (tmp_path / "out" / "2.png").exists()


def test_the_bytes_written_do_not_depend_on_the_write_threads(tmp_path):
    """Rows that differ, written by 1 or 8 threads: each file holds its own row's merge (that row merged alone),
    image and mask, whatever the threads."""
    written = {}
    for threads in (1, 8):
        folder = tmp_path / str(threads)
        records = stages.merge_encode_write(_batch(folder, 4), "png", 90, 2, "run", io_threads=threads).to_pylist()
        assert [r["status"] for r in records] == ["ok"] * 4
        written[threads] = [(folder / sub / f"{i}.png").read_bytes() for i in range(4) for sub in ("out", "out/masks")]
    alone = []
    for i in range(4):
        folder = tmp_path / f"alone{i}"
        batch = _batch(folder, 4)
        stages.merge_encode_write({k: v[i:i + 1] for k, v in batch.items()}, "png", 90, 2, "run", io_threads=1)
        alone += [(folder / sub / f"{i}.png").read_bytes() for sub in ("out", "out/masks")]
    assert written[1] == written[8] == alone
    assert len(set(alone[0::2])) == 4 and len(set(alone[1::2])) == 2  # 4 different images, 2 different masks


def _with_sources(tmp_path, batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Color sources on disk for the batch's rows -> (the batch carrying their L, the batch as --full-res-l redecode
    sends it: l8 empty)."""
    (tmp_path / "src").mkdir(exist_ok=True)
    sources, l8s = [], []
    yy, xx = np.mgrid[0:20, 0:30]
    for i in range(len(batch["key"])):
        rgb = np.stack([xx * 8, yy * 12, (xx + yy + 9 * i) * 5], -1).astype(np.uint8)
        path = tmp_path / "src" / f"{i}.png"
        Image.fromarray(rgb).save(path)
        sources.append(str(path))
        l8s.append(rgb_to_l8(rgb).tobytes())
    carried = dict(batch, source=np.array(sources, dtype=object), l8=np.array(l8s, dtype=object))
    return carried, dict(carried, l8=np.array([b""] * len(sources), dtype=object))


def test_redecoded_sources_give_the_bytes_of_the_carried_l(tmp_path):
    carry, redecode = _with_sources(tmp_path, _batch(tmp_path, 2))
    carried = stages.merge_encode_write(carry, "png", 90, 2, "run").to_pylist()
    for url in list(redecode["output"]) + list(redecode["mask"]):
        os.replace(url, url + ".carried")
    records = stages.merge_encode_write(redecode, "png", 90, 2, "run").to_pylist()
    assert [r["status"] for r in records] == ["ok", "ok"]
    for a, b in zip(carried, records):
        assert a["output"] == b["output"] and a["mask"] == b["mask"]
        for url in (b["output"], b["mask"]):
            assert open(url, "rb").read() == open(url + ".carried", "rb").read()


def test_a_source_gone_or_changed_before_its_second_read_is_that_rows_error(tmp_path):
    _, batch = _with_sources(tmp_path, _batch(tmp_path, 3))
    (tmp_path / "src" / "0.png").unlink()
    Image.new("RGB", (31, 20)).save(tmp_path / "src" / "1.png")
    records = stages.merge_encode_write(batch, "png", 90, 2, "run").to_pylist()
    assert [r["status"] for r in records] == ["error", "error", "ok"]
    assert records[0]["kind"] == stages.READ_ERROR and "0.png" in records[0]["reason"]
    assert records[1]["kind"] == stages.DECODE_FAILED and "changed while the job ran" in records[1]["reason"]


def test_the_records_signals_of_a_hand_made_output(tmp_path):
    """A uniform prediction (L8 128, a = 40, b = 0): its colourfulness is 0.3 x |mean (rg, yb)| of the colour
    scikit-image gives for it; a mask half certain foreground, then one of 0.75 probability everywhere; sources
    gray and coloured through the decode stage."""
    from skimage.color import lab2rgb

    from semcolor.bulk import stages
    from semcolor.core.image_stats import colorfulness

    batch = _batch(tmp_path, 2)
    batch["small"][:] = 128
    batch["ab8"][:] = np.array([40, 0], np.int8)[None, :, None, None]
    batch["fg8"][0, :, : SIZE // 2], batch["fg8"][0, :, SIZE // 2:] = 255, 0
    batch["fg8"][1] = 191
    batch["source_color"] = np.array([True, False])
    records = stages.merge_encode_write(batch, "png", 90, 2, "run").to_pylist()
    rgb = np.round(lab2rgb(np.array([[[128 * 100 / 255, 40.0, 0.0]]])) * 255)[0, 0]
    rg, yb = rgb[0] - rgb[1], 0.5 * (rgb[0] + rgb[1]) - rgb[2]
    for record in records:
        assert record["colorfulness"] == pytest.approx(0.3 * np.hypot(rg, yb), abs=0.5)
        assert record["colorfulness"] == pytest.approx(colorfulness(np.tile(rgb, (4, 4, 1))), abs=0.5)
    assert records[0]["foreground_share"] == pytest.approx(0.5) and records[0]["mask_confidence"] == pytest.approx(1.0)
    assert records[1]["foreground_share"] == pytest.approx(1.0)
    assert records[1]["mask_confidence"] == pytest.approx(191 / 255, abs=1e-6)
    assert [r["source_color"] for r in records] == [True, False]

    failed = _batch(tmp_path / "failed", 1)
    failed["status"][0], failed["kind"][0], failed["reason"][0] = "error", "corrupt", "bad bytes"
    (record,) = stages.merge_encode_write(failed, "png", 90, 2, "run").to_pylist()
    assert (record["colorfulness"], record["foreground_share"], record["source_color"]) == (None, None, None)


def test_the_decode_stage_tells_colour_sources_from_gray_ones(tmp_path):
    from semcolor.bulk import stages

    gray = np.tile(np.arange(64, dtype=np.uint8)[None] * 3, (48, 1))
    color = np.stack([gray, gray, gray], -1)
    color[10:20, 30:40, 0] = 250  # a small red patch is enough
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(color).save(tmp_path / "color.png")
    keys = ["gray", "color"]
    row = {"key": keys, "source": [str(tmp_path / f"{k}.png") for k in keys], "output": ["", ""], "mask": ["", ""],
           "status": ["ok", "ok"], "kind": ["", ""], "reason": ["", ""]}
    out = stages.decode_rows({k: np.array(v, dtype=object) for k, v in row.items()}, size=32, max_pixels=10**8)
    assert list(out["source_color"]) == [False, True]


def test_the_decode_stage_decodes_a_row_while_later_rows_are_still_read(tmp_path, monkeypatch):
    """The last source's read waits until the first row was decoded: decoding only after every read ended would
    never meet it (the read would time out and be that row's error)."""
    first_decoded = threading.Event()
    read, decode = storage.read_bytes_or_error, stages.decode_image

    def read_after_the_first_decode(url, s3=None):
        if url.endswith("2.png") and not first_decoded.wait(timeout=20):
            return TimeoutError("the first row was not decoded while this read was in flight")
        return read(url, s3=s3)

    def decode_and_tell(data, max_pixels, key):
        image = decode(data, max_pixels=max_pixels, key=key)
        first_decoded.set()
        return image

    monkeypatch.setattr(storage, "read_bytes_or_error", read_after_the_first_decode)
    monkeypatch.setattr(stages, "decode_image", decode_and_tell)
    for i in range(3):
        Image.fromarray(np.full((20, 30), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    keys = ["0", "1", "2"]
    row = {"key": keys, "source": [str(tmp_path / f"{k}.png") for k in keys], "output": [""] * 3, "mask": [""] * 3,
           "status": ["ok"] * 3, "kind": [""] * 3, "reason": [""] * 3}
    out = stages.decode_rows({k: np.array(v, dtype=object) for k, v in row.items()}, size=16, max_pixels=10**8,
                             io_threads=3)
    assert list(out["status"]) == ["ok"] * 3, list(out["reason"])
    assert [int(s.max()) for s in out["small"]] == [int(rgb_to_l8(np.full((1, 1, 3), 40 * i, np.uint8))[0, 0])
                                                    for i in range(3)]
