"""semcolor.core.decode and semcolor.data.pairs: decoding, pairing, manifests, splits, preprocessing, the Ray pipeline."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from semcolor.core import color, decode, storage
from semcolor.data import pairs as data
from semcolor.data import pipeline
from semcolor.data.preprocess import preprocess_batch
from semcolor.data.synth import make_pair, write_synth


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height (pixels would fail to decode)."""
    raw = encode(Image.new("L", (4, 4)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


# ---------------------------------------------------------------- decode: modes, EXIF, limits

GRAY = np.array([[0, 100], [200, 255]], dtype=np.uint8)


def _palette_image() -> Image.Image:
    im = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), "P")
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    return im


MODE_CASES = {
    # mode: (image bytes, expected RGB of pixel (0, 1))
    "1": (encode(Image.fromarray(GRAY > 127)), (0, 0, 0)),
    "L": (encode(Image.fromarray(GRAY, "L")), (100, 100, 100)),
    "LA": (encode(Image.fromarray(np.dstack([GRAY, np.full_like(GRAY, 255)]), "LA")), (100, 100, 100)),
    "RGB": (encode(Image.fromarray(np.dstack([GRAY, GRAY // 2, 255 - GRAY]), "RGB")), (100, 50, 155)),
    "RGBA": (encode(Image.fromarray(np.dstack([GRAY, GRAY, GRAY, np.zeros_like(GRAY)]), "RGBA")), (255, 255, 255)),
    "P": (encode(_palette_image()), (0, 0, 255)),
    "CMYK": (encode(Image.new("CMYK", (2, 2), (0, 0, 0, 0)), "TIFF"), (255, 255, 255)),
    "I;16": (encode(Image.fromarray((GRAY.astype(np.uint16) * 257))), (100, 100, 100)),
    "I": (encode(Image.fromarray(GRAY.astype(np.int32) * 257), "TIFF"), (100, 100, 100)),
    "F": (encode(Image.fromarray(GRAY.astype(np.float32) / 255), "TIFF"), (100, 100, 100)),
}


@pytest.mark.parametrize("mode", sorted(MODE_CASES))
def test_decode_image_modes(mode: str) -> None:
    blob, expected = MODE_CASES[mode]
    assert Image.open(io.BytesIO(blob)).mode == mode
    rgb = decode.decode_image(blob)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 1]) == expected
    if mode == "1":  # its pixel (0, 1) is black: the white one too
        assert tuple(rgb[1, 0]) == (255, 255, 255)


def test_decode_16bit_scales_not_clips() -> None:
    ramp = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    assert decode.decode_image(encode(Image.fromarray(ramp)))[0, :, 0].tolist() == [0, 128, 255]
    wide = np.array([[-1000, 0, 1000]], dtype=np.int32)  # outside 16-bit: scaled from min..max
    assert decode.decode_image(encode(Image.fromarray(wide), "TIFF"))[0, :, 0].tolist() == [0, 128, 255]
    hdr = np.array([[0.0, 2.0, 4.0]], dtype=np.float32)
    assert decode.decode_image(encode(Image.fromarray(hdr), "TIFF"))[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_applied() -> None:
    arr = np.zeros((4, 6, 3), dtype=np.uint8)
    arr[:, :3] = (255, 0, 0)  # left half red
    arr[:, 3:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    blob = encode(Image.fromarray(arr), "JPEG", quality=100, exif=exif.tobytes())
    rgb = decode.decode_image(blob)
    assert rgb.shape == (6, 4, 3)
    assert rgb[0, :, 0].min() > 200 and rgb[-1, :, 2].min() > 200  # red on top, blue at the bottom
    mask = encode(Image.new("L", (4, 6)))  # saved as displayed: matches the oriented image
    assert not decode.decode_pair(blob, mask, 4).mask_resized


def test_pixel_limit_checked_before_decoding() -> None:
    huge = png_claiming(30_000, 30_000)  # 900 MP claimed, a few bytes of data
    with pytest.raises(decode.ImageTooLargeError, match="limit of 100000000"):
        decode.decode_image(huge, key="k")
    with pytest.raises(decode.ImageTooLargeError, match="MAX_IMAGE_PIXELS too"):  # Pillow's own guard
        decode.decode_image(huge, max_pixels=10**10)
    small = encode(Image.new("RGB", (20, 10)))
    with pytest.raises(decode.ImageTooLargeError, match="200 pixels exceeds the limit of 199"):
        decode.decode_image(small, max_pixels=199)
    assert decode.decode_image(small, max_pixels=200).shape == (10, 20, 3)
    with pytest.raises(ValueError, match="max_pixels must be positive"):
        decode.decode_image(small, max_pixels=0)


GOOD_PNG = encode(Image.fromarray(make_pair(0, 32)[0]))
GOOD_JPEG = encode(Image.fromarray(make_pair(0, 32)[0]), "JPEG")
BAD_FILES = {
    "empty": (b"", decode.EmptyFileError),
    "text": (b"hello, I am not a picture\n" * 4, decode.NotAnImageError),
    "truncated_png": (GOOD_PNG[: len(GOOD_PNG) // 2], decode.CorruptImageError),
    "truncated_jpeg": (GOOD_JPEG[: len(GOOD_JPEG) // 2], decode.CorruptImageError),
    "bomb": (png_claiming(20_000, 20_000), decode.ImageTooLargeError),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_typed_errors(name: str) -> None:
    blob, error = BAD_FILES[name]
    with pytest.raises(error) as info:
        decode.decode_image(blob, key=f"dir/{name}")
    assert info.value.key == f"dir/{name}" and str(info.value).startswith(f"dir/{name}: ")
    assert isinstance(info.value, ValueError) and info.value.kind == error.kind


def _pair_mask(mask: Image.Image) -> np.ndarray:
    """The mask as training reads it: :func:`decode.decode_pair` at the image's own size, beside a blank image of
    the mask's size."""
    return decode.decode_pair(encode(Image.new("RGB", mask.size)), encode(mask), None).mask


def test_decode_mask_modes() -> None:
    ids = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    assert _pair_mask(Image.fromarray(ids, "L")).tolist() == ids.tolist()
    palette = Image.fromarray(ids, "P")
    palette.putpalette(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8).tobytes())
    assert _pair_mask(palette).tolist() == ids.tolist()  # indices, not colors
    assert _pair_mask(Image.fromarray(ids > 1)).tolist() == [[0, 0], [255, 255]]
    assert _pair_mask(Image.fromarray(np.dstack([ids] * 3))).tolist() == ids.tolist()
    assert _pair_mask(Image.fromarray(ids.astype(np.uint16))).tolist() == ids.tolist()
    with pytest.raises(decode.UnsupportedModeError, match="mask: mask has color"):
        _pair_mask(Image.fromarray(np.dstack([ids, ids, ids * 0])))
    with pytest.raises(decode.UnsupportedModeError, match="0..256"):
        _pair_mask(Image.fromarray(np.array([[0, 256]], dtype=np.uint16)))


def test_decode_pair_resizes_and_counts_mask_size() -> None:
    rgb, mask = make_pair(3, 48)
    half = np.asarray(Image.fromarray(mask).resize((24, 24), Image.Resampling.NEAREST))
    sample = decode.decode_pair(encode(Image.fromarray(rgb)), encode(Image.fromarray(half)), 32)
    assert sample.rgb.shape == (32, 32, 3) and sample.mask.shape == (32, 32) and sample.mask_resized
    assert set(np.unique(sample.mask)) <= {0, 255}
    same = decode.decode_pair(encode(Image.fromarray(rgb)), encode(Image.fromarray(mask)), 48)
    assert not same.mask_resized and np.array_equal(same.rgb, rgb) and np.array_equal(same.mask, mask)
    with pytest.raises(decode.EmptyFileError, match="k: mask: zero-byte"):
        decode.decode_pair(encode(Image.fromarray(rgb)), b"", 32, key="k")


# ---------------------------------------------------------------- pairing and manifests


def _touch(root: Path, rel: str, payload: bytes = b"x") -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(payload)


def test_pairing_nested_orphans_and_ambiguous(tmp_path: Path, caplog) -> None:
    for rel in ("a.jpg", "n/b.png", "n/deep/c.JPEG", "only_image.png", "dup.jpg", "dup.png", "notes.txt"):
        _touch(tmp_path / "images", rel)
    for rel in ("a.png", "n/b.png", "n/deep/c.png", "only_mask.png", "dup.png"):
        _touch(tmp_path / "masks", rel)
    result = data.pair_prefixes(str(tmp_path / "images"), str(tmp_path / "masks"))
    assert result.pairs.column("key").to_pylist() == ["a", "n/b", "n/deep/c"]
    assert result.pairs.column("image").to_pylist()[2] == str(tmp_path / "images/n/deep/c.JPEG")
    assert result.orphan_images == [str(tmp_path / "images/only_image.png")]
    assert result.orphan_masks == [str(tmp_path / "masks/only_mask.png")]
    assert result.ambiguous == [str(tmp_path / f) for f in ("images/dup.jpg", "images/dup.png", "masks/dup.png")]
    assert "1 images without a mask" in caplog.text and "1 masks without an image" in caplog.text


@pytest.mark.parametrize("name", ["m.parquet", "m.csv"])
@pytest.mark.parametrize("where", ["local", "memory"])
def test_manifest_round_trip(tmp_path: Path, name: str, where: str) -> None:
    pairs = pa.table({"key": ["a", "n/b"], "image": ["s3://b/i/a.jpg", "/x/i/n/b.png"],
                      "mask": ["s3://b/m/a.png", "/x/m/n/b.png"]}, schema=data.PAIR_SCHEMA)
    url = str(tmp_path / name) if where == "local" else f"memory://manifests/{tmp_path.name}/{name}"
    data.write_manifest(pairs, url)
    assert data.read_manifest(url).equals(pairs)
    assert data.load_pairs(manifest=url, limit=1).column("key").to_pylist() == ["a"]


def test_csv_manifest_relative_paths_and_derived_keys(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("image,mask\nimages/a.jpg,masks/a.png\nimages/n/b.jpg,masks/n/b.png\n")
    pairs = data.read_manifest(str(tmp_path / "m.csv"))
    assert pairs.column("key").to_pylist() == ["a", "n/b"]
    assert pairs.column("mask").to_pylist()[1] == str(tmp_path / "masks/n/b.png")


def test_manifest_errors(tmp_path: Path) -> None:
    (tmp_path / "cols.csv").write_text("img,mask\na.jpg,a.png\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['image'\]"):
        data.read_manifest(str(tmp_path / "cols.csv"))
    (tmp_path / "dup.csv").write_text("key,image,mask\na,a.jpg,a.png\na,b.jpg,b.png\n")
    with pytest.raises(ValueError, match="duplicate key"):
        data.read_manifest(str(tmp_path / "dup.csv"))
    with pytest.raises(ValueError, match="no data source"):
        data.load_pairs(images="x")
    with pytest.raises(ValueError, match="not both"):
        data.load_pairs(images="x", masks="y", manifest="z")


def test_run_manifest_cli(tmp_path: Path, capsys) -> None:
    from semcolor.cli import main

    write_synth(str(tmp_path / "d"), 3, 16)
    out = str(tmp_path / "pairs.parquet")
    assert main(["manifest", "--images", str(tmp_path / "d/images"), "--masks", str(tmp_path / "d/masks"),
                 "--out", out]) == 0
    assert "wrote 3 pairs" in capsys.readouterr().out
    assert data.read_manifest(out).column("key").to_pylist() == ["000000", "000001", "000002"]
    (tmp_path / "empty").mkdir()
    assert main(["manifest", "--images", str(tmp_path / "d/images"), "--masks", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "none.parquet")]) == 1
    assert not (tmp_path / "none.parquet").exists()


# ---------------------------------------------------------------- split


def test_split_is_deterministic_and_complete() -> None:
    keys = [f"k{i:04d}" for i in range(2000)]
    pairs = pa.table({"key": keys, "image": keys, "mask": keys}, schema=data.PAIR_SCHEMA)
    train, val = data.split_pairs(pairs, 0.2)
    assert train.num_rows + val.num_rows == 2000 and 300 < val.num_rows < 500
    assert not set(train["key"].to_pylist()) & set(val["key"].to_pylist())
    assert data.split_pairs(pairs, 0.2)[1].equals(val)
    assert not data.split_pairs(pairs, 0.2, seed=1)[1].equals(val)
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\]"):
        data.is_validation("a", 1.5)


def test_split_golden_values() -> None:
    """SHA-256 of "seed:key", never Python's salted hash(): the same keys in every process and version."""
    expected = ["k1", "k2", "k3", "k5", "k6", "k10", "k11", "k12", "k13", "k14", "k15"]
    assert [k for k in (f"k{i}" for i in range(16)) if data.is_validation(k, 0.5)] == expected


# ---------------------------------------------------------------- preprocess_batch


def _batch(b: int = 3, h: int = 8, w: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB whose red channel encodes the column, and a mask that is foreground on the left third."""
    rgb = torch.zeros(b, h, w, 3, dtype=torch.uint8)
    rgb[..., 0] = (torch.arange(w) * 20).to(torch.uint8)
    mask = torch.zeros(b, h, w, dtype=torch.uint8)
    mask[:, :, : w // 3] = 255
    return rgb, mask


def test_preprocess_shapes_and_values() -> None:
    rgb, mask = _batch()
    out = preprocess_batch(rgb, mask, n_classes=2, train=False)
    assert out["l"].shape == (3, 1, 8, 12) and out["ab"].shape == (3, 2, 8, 12) and out["target"].shape == (3, 8, 12)
    assert out["target"].dtype == torch.int64 and out["l"].dtype == torch.float32
    lab = color.rgb_to_lab(color.uint8_to_float(rgb))
    assert torch.allclose(out["l"], lab[:, :1] / 100) and torch.allclose(out["ab"], lab[:, 1:])
    assert out["target"][0, 0].tolist() == [1] * 4 + [0] * 8
    gray = preprocess_batch(torch.full((1, 4, 4, 3), 128, dtype=torch.uint8),
                                 torch.zeros(1, 4, 4, dtype=torch.uint8), 2, train=False)
    assert gray["ab"].abs().max() < 0.1 and 0.5 < gray["l"].mean() < 0.6


def test_preprocess_multiclass_ignore_and_invalid() -> None:
    mask = torch.tensor([[[0, 1, 2, 255]]], dtype=torch.uint8)
    rgb = torch.zeros(1, 1, 4, 3, dtype=torch.uint8)
    assert preprocess_batch(rgb, mask, 3, train=False)["target"].tolist() == [[[0, 1, 2, 255]]]
    assert preprocess_batch(rgb, mask, 2, train=False)["target"].tolist() == [[[0, 0, 0, 1]]]
    with pytest.raises(ValueError, match=r"mask values \[7\] are neither class ids 0..2 nor 255"):
        preprocess_batch(rgb, torch.tensor([[[0, 1, 7, 255]]], dtype=torch.uint8), 3, train=False)
    with pytest.raises(ValueError, match="rgb must be uint8"):
        preprocess_batch(rgb.float(), mask, 3, train=False)
    with pytest.raises(ValueError, match="n_classes must be >= 2"):
        preprocess_batch(rgb, mask, 1, train=False)


def test_preprocess_flip_and_crop_move_image_and_mask_together() -> None:
    rgb, mask = _batch(b=16)
    g = torch.Generator().manual_seed(0)
    out = preprocess_batch(rgb, mask, 2, train=True, crop=6, generator=g)
    assert out["l"].shape == (16, 1, 6, 6) and out["target"].shape == (16, 6, 6)
    flipped = 0
    for i in range(16):
        # L grows with the red channel, i.e. with the source column: a flip reverses its order
        row_l = out["l"][i, 0, 0]
        left_to_right = bool(row_l[-1] > row_l[0])
        flipped += not left_to_right
        # the mask's foreground (source columns 0..3) must sit where L is smallest
        fg = out["target"][i, 0].bool()
        if fg.any() and (~fg).any():
            assert row_l[fg].max() < row_l[~fg].min()
    assert 0 < flipped < 16
    again = preprocess_batch(rgb, mask, 2, train=True, crop=6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again["l"], out["l"]) and torch.equal(again["target"], out["target"])
    center = preprocess_batch(rgb, mask, 2, train=False, crop=6)
    assert torch.equal(center["target"][0, 0], torch.tensor([1, 0, 0, 0, 0, 0]))  # columns 3..8
    with pytest.raises(ValueError, match="crop must be in 1..8"):
        preprocess_batch(rgb, mask, 2, train=True, crop=9)


# ---------------------------------------------------------------- Ray Data pipeline (integration)


def _rows(ds) -> dict[str, dict]:
    return {r["key"]: r for r in ds.take_all()}


def _assert_synth_rows(rows: dict[str, dict], n: int, size: int) -> None:
    assert sorted(rows) == [f"{i:06d}" for i in range(n)]
    for key, row in rows.items():
        rgb, mask = make_pair(int(key), size)
        assert row["rgb"].dtype == np.uint8 and row["rgb"].shape == (size, size, 3)
        assert row["mask"].dtype == np.uint8 and row["mask"].shape == (size, size)
        assert np.array_equal(row["rgb"], rgb) and np.array_equal(row["mask"], mask)
        assert set(row) == {"key", "rgb", "mask"}


@pytest.mark.ray
@pytest.mark.s3
def test_local_s3_and_manifest_give_identical_rows(tmp_path: Path, ray_local, s3_prefix: str) -> None:
    n, size = 10, 32
    local = str(tmp_path / "synth")
    write_synth(local, n, size)
    for url in storage.list_files(local):  # upload the local folder to S3
        storage.write_bytes(storage.join(s3_prefix, storage.relative_key(url, local) + ".png"), storage.read_bytes(url))
    manifest = storage.join(s3_prefix, "pairs.parquet")
    data.write_manifest(data.load_pairs(images=f"{s3_prefix}/images", masks=f"{s3_prefix}/masks"), manifest)
    sources = {
        "local": data.load_pairs(images=f"{local}/images", masks=f"{local}/masks"),
        "s3": data.load_pairs(images=f"{s3_prefix}/images", masks=f"{s3_prefix}/masks"),
        "manifest": data.load_pairs(manifest=manifest),
    }
    assert sources["manifest"].column("image").to_pylist()[0] == f"{s3_prefix}/images/000000.png"
    results = {name: pipeline.load_dataset(pairs, size, rows_per_block=4) for name, pairs in sources.items()}
    for name, (ds, report) in results.items():
        assert report.counts() == {"ok": n, "mask_resized": 0, "error": 0}, name
        _assert_synth_rows(_rows(ds), n, size)


@pytest.mark.ray
def test_mixed_folder_counts_every_bad_file(tmp_path: Path, ray_local) -> None:
    root = tmp_path / "mixed"
    write_synth(str(root), 6, 32)
    rgb, mask = make_pair(99, 32)
    good_image, good_mask = encode(Image.fromarray(rgb)), encode(Image.fromarray(mask))
    small_mask = encode(Image.fromarray(mask).resize((16, 16), Image.Resampling.NEAREST))
    color_mask = encode(Image.fromarray(np.dstack([mask, mask // 2, mask])))
    bad = {  # key: (image bytes, mask bytes, expected kind or None when the pair is good)
        "corrupt": (good_image[: len(good_image) // 2], good_mask, "corrupt"),
        "empty": (b"", good_mask, "empty"),
        "text": (b"not an image at all", good_mask, "not_image"),
        "bomb": (png_claiming(20_000, 20_000), good_mask, "too_large"),
        "badmask": (good_image, b"garbage", "not_image"),
        "colormask": (good_image, color_mask, "unsupported"),
        "nested/resized": (good_image, small_mask, None),
    }
    for key, (image_bytes, mask_bytes, _) in bad.items():
        _touch(root / "images", f"{key}{'.jpg' if key == 'text' else '.png'}", image_bytes)
        _touch(root / "masks", f"{key}.png", mask_bytes)
    pairs = data.load_pairs(images=str(root / "images"), masks=str(root / "masks"))
    missing = pa.table({"key": ["missing"], "image": [str(root / "images/000000.png")],
                        "mask": [str(root / "masks/gone.png")]}, schema=data.PAIR_SCHEMA)
    ds, report = pipeline.load_dataset(pa.concat_tables([pairs, missing]), 32, rows_per_block=3)
    assert report.counts() == {"ok": 7, "mask_resized": 1, "error": 7, "error:corrupt": 1, "error:empty": 1,
                               "error:not_image": 2, "error:read_error": 1, "error:too_large": 1,
                               "error:unsupported": 1}
    by_key = {e["key"]: e for e in report.errors}
    assert {k: by_key[k]["kind"] for k in bad if bad[k][2]} == {k: v[2] for k, v in bad.items() if v[2]}
    assert by_key["badmask"]["reason"].startswith("mask: ") and by_key["text"]["reason"].startswith("image: ")
    assert by_key["missing"]["mask"].endswith("gone.png") and "FileNotFoundError" in by_key["missing"]["reason"]
    rows = _rows(ds)
    assert sorted(rows) == [f"{i:06d}" for i in range(6)] + ["nested/resized"]
    assert set(np.unique(rows["nested/resized"]["mask"]).tolist()) <= {0, 255}
    _assert_synth_rows({k: v for k, v in rows.items() if k != "nested/resized"}, 6, 32)


@pytest.mark.ray
def test_preserve_order_keeps_the_pairs_order_through_filter_select_and_materialize(tmp_path: Path,
                                                                                   ray_local) -> None:
    """Validation relies on it (every worker the same batches in the same order) instead of a sort (a shuffle of
    tasks). The input is not in key order, so a sort anywhere, or a filter or select that reorders, fails here."""
    write_synth(str(tmp_path / "synth"), 24, 16)
    pairs = data.load_pairs(images=str(tmp_path / "synth/images"), masks=str(tmp_path / "synth/masks"))
    order = np.random.default_rng(3).permutation(pairs.num_rows)  # not sorted: the order is the input's, not keys'
    broken = pa.table({"key": ["broken"], "image": [str(tmp_path / "none.png")], "mask": [str(tmp_path / "no.png")]},
                      schema=data.PAIR_SCHEMA)
    pairs = pa.concat_tables([pairs.take(order[:10]), broken, pairs.take(order[10:])])
    ds, report = pipeline.load_dataset(pairs, 16, rows_per_block=1, preserve_order=True)
    assert report.counts()["error"] == 1
    keys = [r["key"] for r in ds.select_columns(["key"]).materialize().take_all()]
    assert keys == [k for k in pairs["key"].to_pylist() if k != "broken"]


@pytest.mark.ray
def test_ecssd_subset_reads(ecssd_dir: Path, ray_local) -> None:
    pairs = data.load_pairs(images=str(ecssd_dir / "images"), masks=str(ecssd_dir / "masks"), limit=20)
    assert pairs.num_rows == 20
    ds, report = pipeline.load_dataset(pairs, 64)
    assert report.counts() == {"ok": 20, "mask_resized": 0, "error": 0}
    batches = list(ds.drop_columns(["key"]).iter_torch_batches(batch_size=8))
    assert sum(len(b["rgb"]) for b in batches) == 20
    out = preprocess_batch(batches[0]["rgb"], batches[0]["mask"], 2, train=True, crop=48)
    assert out["l"].shape == (8, 1, 48, 48) and out["target"].float().mean() > 0.05
    assert 0.0 <= float(out["l"].min()) and float(out["l"].max()) <= 1.0 and out["ab"].abs().max() < 130


def test_pairs_dataset_refuses_empty_input() -> None:
    empty = pa.table({"key": [], "image": [], "mask": []}, schema=data.PAIR_SCHEMA)
    with pytest.raises(ValueError, match="no pairs to read"):
        pipeline.pairs_dataset(empty, 32)


@pytest.mark.ray
def test_ab_prior_pass_on_ray_equals_numpy_histogram(ray_local) -> None:
    """The distributed prior pass (Ray Data map_batches, histograms summed) counts exactly what a NumPy 2-D
    histogram of the same pixels' AB counts on the grid's cells."""
    import ray

    from semcolor.core import ab_grid
    from semcolor.data.color_prior import ab_counts

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(40, 24, 24, 3), dtype=np.uint8)
    rgb[:20, :12] = (200, 40, 30)  # a frequent color, so that counts are far from uniform
    ds = ray.data.from_numpy(rgb).rename_columns({"data": "rgb"}).repartition(5)
    bins = ab_grid.gamut_bins()
    counts = ab_counts(ds, bins)

    ab = color.rgb_to_lab(color.uint8_to_float(torch.from_numpy(rgb)))[:, 1:].permute(0, 2, 3, 1).reshape(-1, 2)
    edges = (np.arange(-ab_grid.CELL_SPAN, ab_grid.CELL_SPAN + 2) - 0.5) * ab_grid.GRID
    hist, _, _ = np.histogram2d(ab[:, 0].numpy() / ab_grid.GRID, ab[:, 1].numpy() / ab_grid.GRID,
                                bins=[edges / ab_grid.GRID] * 2)
    side = 2 * ab_grid.CELL_SPAN + 1
    cells = (bins / ab_grid.GRID).long() + ab_grid.CELL_SPAN
    expected = hist.reshape(side * side)[(cells[:, 0] * side + cells[:, 1]).numpy()]
    assert counts.sum() == rgb.shape[0] * 24 * 24 == hist.sum()  # every pixel falls in an in-gamut bin
    np.testing.assert_array_equal(counts, expected.astype(np.int64))


def test_random_resized_crop_keeps_image_and_mask_aligned() -> None:
    """The image is the mask (white where foreground): after augmentation, L still says foreground exactly where
    the target does (but at the few pixels a bilinear resize blends on the boundary), and crops really happened."""
    rng = np.random.default_rng(0)
    masks = np.zeros((12, 48, 48), np.uint8)
    for i in range(12):
        top, left = rng.integers(0, 24, 2)
        masks[i, top:top + 20, left:left + 16] = 255
    mask = torch.from_numpy(masks)
    rgb = mask[..., None].expand(-1, -1, -1, 3).contiguous()
    g = torch.Generator().manual_seed(1)
    out = preprocess_batch(rgb, mask, 2, train=True, generator=g, resized_crop_scale=(0.3, 0.6))
    assert out["l"].shape == (12, 1, 48, 48) and out["target"].shape == (12, 48, 48)
    bright = out["l"][:, 0] > 0.5
    agree = (bright == out["target"].bool()).float().mean().item()
    assert agree > 0.97, agree
    assert (out["target"].float().mean(dim=(1, 2)) != (mask > 127).float().mean(dim=(1, 2))).sum() >= 10  # zoomed
    again = preprocess_batch(rgb, mask, 2, train=True, generator=torch.Generator().manual_seed(1),
                             resized_crop_scale=(0.3, 0.6))
    assert torch.equal(again["target"], out["target"])  # seeded: repeatable
