"""Photos without masks: listing a prefix or a manifest, `semcolor manifest` without --masks, the train options
and errors that name the input (no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from semcolor.core.decode import OK
from semcolor.data.manifest import run_manifest
from semcolor.data.pairs import read_manifest, write_manifest
from semcolor.data.photos import list_photos, load_photos
from semcolor.data.pipeline import decode_photo_batch
from semcolor.train.config import TrainConfig


def _photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        path = folder / ("sub" if i % 2 else "") / f"p{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(path)
        paths.append(path)
    (folder / "notes.txt").write_text("not an image")
    return paths


def test_a_prefix_lists_its_images_by_relative_key(tmp_path):
    _photos(tmp_path / "photos", 3)
    table = list_photos(str(tmp_path / "photos"))
    assert table.column_names == ["key", "image"]
    assert sorted(table["key"].to_pylist()) == ["p0", "p2", "sub/p1"]
    two = load_photos([str(tmp_path / "photos"), str(tmp_path / "photos")])
    assert two.num_rows == 6  # sources concatenate in the order given, keys prefixed by their source's number
    assert two["key"].to_pylist()[:3] == [f"1:{k}" for k in table["key"].to_pylist()]
    assert len(set(two["key"].to_pylist())) == 6


@pytest.mark.parametrize("make, match", [
    (lambda root: str(root / "missing"), "--photos .*missing: no such folder or prefix"),
    (lambda root: (root / "empty").mkdir() or str(root / "empty"), "--photos .*empty: no image files"),
])
def test_a_bad_or_empty_prefix_is_one_line_that_names_it(tmp_path, make, match):
    url = make(tmp_path)
    with pytest.raises(ValueError, match=match) as info:
        load_photos([url])
    assert "\n" not in str(info.value)


def test_manifest_without_masks_lists_photos_and_pairs_refuse_it(tmp_path, capsys):
    from argparse import Namespace

    _photos(tmp_path / "photos", 3)
    out = str(tmp_path / "photos.parquet")
    assert run_manifest(Namespace(images=str(tmp_path / "photos"), masks=None, out=out)) == 0
    assert "3 photos without masks" in capsys.readouterr().out
    table = list_photos(out)
    assert table.num_rows == 3 and all(Path(u).exists() for u in table["image"].to_pylist())
    with pytest.raises(ValueError, match="3 row.* without a mask; photos without masks train with --photos"):
        read_manifest(out)
    # a CSV manifest with a mask column of empty values reads the same; one with masks is not a photo manifest
    csv = str(tmp_path / "photos.csv")
    write_manifest(pa.table({"key": ["a"], "image": [table["image"][0].as_py()], "mask": [""]}), csv)
    assert list_photos(csv).num_rows == 1
    write_manifest(pa.table({"key": ["a"], "image": ["a.jpg"], "mask": ["a.png"]}), csv)
    with pytest.raises(ValueError, match="1 row.* have a mask"):
        list_photos(csv)


def test_photo_rows_decode_at_training_size_and_bad_ones_are_recorded(tmp_path):
    paths = _photos(tmp_path / "photos", 2)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    urls = [str(p) for p in paths] + [str(tmp_path / "bad.jpg"), str(tmp_path / "gone.jpg")]
    rows = decode_photo_batch({"key": np.array(["a", "b", "bad", "gone"], object),
                               "image": np.array(urls, object)}, size=16)
    assert rows["rgb"].shape == (4, 16, 16, 3) and rows["rgb"].dtype == np.uint8
    assert list(rows["status"]) == [OK, OK, "error", "error"]
    assert (rows["rgb"][1] == 40).all()  # the second photo's uniform value, resized
    assert rows["kind"][3] == "read_error" and rows["reason"][2].startswith("image:")


def test_train_options_for_photos_and_their_share():
    config = TrainConfig(photos=["s3://b/photos"], photos_share=0.25, batch_size=16)
    assert (config.photo_batch, config.pair_batch) == (4, 12)
    assert TrainConfig(batch_size=16).photo_batch == 0  # no photos: every row of a batch is a pair
    with pytest.raises(ValueError, match="photos_share"):
        TrainConfig(photos=["p"], photos_share=1.0)
    with pytest.raises(ValueError, match="leaves 0 photos"):
        TrainConfig(photos=["p"], photos_share=0.1, batch_size=4)
    with pytest.raises(ValueError, match="--photos needs a URL"):
        TrainConfig(photos=[""])
    with pytest.raises(ValueError, match="--color-mask foreground"):  # photos have no foreground: nothing learnt
        TrainConfig(photos=["p"], color_mask="foreground")
