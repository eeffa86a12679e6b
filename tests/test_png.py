"""The PNG writer of bulk outputs, masks and Serve answers: lossless, deterministic, standard, Pillow-sized."""

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from semcolor.core.png import encode_png


def _chunks(data: bytes) -> list[bytes]:
    """Chunk types of a PNG, checking every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    kinds, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        assert int.from_bytes(data[at + 8 + length:at + 12 + length], "big") == zlib.crc32(kind + body)
        kinds.append(kind)
        at += 12 + length
    return kinds


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 9, 3), (7, 1, 3), (37, 53, 3), (1, 1), (41, 29), (256, 300)])
def test_round_trip_is_exact_for_rgb_and_gray(shape):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    data = encode_png(pixels)
    back = Image.open(io.BytesIO(data))
    assert back.mode == ("RGB" if len(shape) == 3 else "L")
    np.testing.assert_array_equal(np.asarray(back), pixels)
    assert _chunks(data) == [b"IHDR", b"IDAT", b"IEND"]  # nothing that could vary between runs
    assert encode_png(pixels.copy()) == data  # same pixels, same bytes


def test_a_photo_compresses_like_pillow_at_level_1():
    """Smooth content with detail (as outputs are): within 10 % of Pillow's adaptive-filter file at the old
    settings (zlib level 1, run-length matching)."""
    yy, xx = np.mgrid[0:300, 0:400]
    base = np.stack([128 + 90 * np.sin(xx / 23.0), 128 + 80 * np.cos(yy / 31.0), (xx + yy) * 255 // 700], -1)
    photo = np.clip(base + np.random.default_rng(0).normal(0, 4, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    ours = len(encode_png(photo))
    assert 0.5 * len(buf.getvalue()) < ours < 1.1 * len(buf.getvalue())


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((0, 4, 3), np.uint8), np.zeros(5, np.uint8)])
def test_wrong_arrays_are_refused(bad):
    with pytest.raises(ValueError, match="encode_png needs"):
        encode_png(bad)
