"""JPEG decode in the model actor (nvJPEG on a GPU; here torchvision's CPU decoder through the same code), the
Pillow fallback for what the device decoder refuses, and the decode stage that defers JPEGs (no Ray)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from semcolor.bulk import jpeg_decode, stages
from semcolor.bulk.job import ColorizeConfig
from semcolor.core.decode import decode_image
from semcolor.core.lightness import rgb_to_l8


def _jpeg(h: int, w: int, seed: int, orientation: int | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([128 + 100 * np.sin(xx / 9.0 + seed), 128 + 90 * np.cos(yy / 7.0), (xx + yy) % 256], -1)
    rgb = np.clip(rgb + rng.normal(0, 5, rgb.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90, exif=exif)
    return buf.getvalue()


def _pillow_l8(data: bytes) -> np.ndarray:
    return rgb_to_l8(decode_image(data))


def test_a_batch_decodes_on_the_device_like_pillow_with_exif_orientation():
    blobs = [_jpeg(40, 64, 0), _jpeg(33, 50, 1, orientation=6)]  # 6: rotated 90 degrees clockwise
    out = jpeg_decode.decode_to_l8(blobs, ["a", "b"], "cpu", max_pixels=10**8)
    assert [o.decoder for o in out] == ["libjpeg", "libjpeg"] and all(o.error is None for o in out)
    assert out[0].l8.shape == (40, 64) and out[1].l8.shape == (50, 33)  # the second one turned upright
    for o, data in zip(out, blobs):
        diff = np.abs(o.l8.astype(int) - _pillow_l8(data).astype(int))
        assert diff.mean() < 0.5 and diff.max() <= 3  # two libjpeg-turbo builds, one lightness formula
        assert o.color


def test_what_the_device_decoder_refuses_goes_to_pillow_and_what_pillow_refuses_is_an_error(monkeypatch):
    """The device decoder refuses the whole list (one bad image does that), then image 1 alone: images 0 and 2 are
    decoded on the device one by one, image 1 by Pillow; a JPEG truncated after its header fails both: an error."""
    import torchvision.io

    blobs = [_jpeg(24, 24, 0), _jpeg(24, 24, 1), _jpeg(24, 24, 2)]
    truncated = _jpeg(24, 24, 3)[:200]
    real = torchvision.io.decode_jpeg

    def refusing(data, **kwargs):
        if isinstance(data, list) or bytes(data.numpy()) in (blobs[1], truncated):
            raise RuntimeError("nvjpeg: unsupported")
        return real(data, **kwargs)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", refusing)
    out = jpeg_decode.decode_to_l8([*blobs, truncated], list("abcd"), "cpu", max_pixels=10**8)
    assert [o.decoder for o in out] == ["libjpeg", "pillow", "libjpeg", "pillow"]
    np.testing.assert_array_equal(out[1].l8, _pillow_l8(blobs[1]))  # exactly the CPU layout's decode
    assert out[3].l8 is None and out[3].error is not None and out[3].error.kind in ("corrupt", "truncated")


def test_the_decode_stage_defers_sound_jpegs_and_decodes_the_rest(tmp_path):
    (tmp_path / "a.jpg").write_bytes(_jpeg(40, 64, 0))
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "big.jpg").write_bytes(_jpeg(300, 400, 1))
    keys = ["a", "b", "big"]
    sources = [str(tmp_path / n) for n in ("a.jpg", "b.png", "big.jpg")]
    row = {"key": keys, "source": sources, "output": [""] * 3, "mask": [""] * 3, "status": ["ok"] * 3,
           "kind": [""] * 3, "reason": [""] * 3}
    out = stages.decode_rows({k: np.array(v, dtype=object) for k, v in row.items()}, size=32, max_pixels=100_000,
                             defer_jpeg=True)
    assert len(out["jpeg"][0]) > 0 and out["width"][0] == 0 and not out["l8"][0]  # for the actor
    assert not len(out["jpeg"][1]) and (out["width"][1], out["height"][1]) == (30, 20)  # a PNG: decoded here
    assert out["status"][2] == "error" and out["kind"][2] == "too_large"  # the header check stays on CPU
    assert not len(out["jpeg"][2])


def test_the_actor_decodes_deferred_jpegs_like_the_cpu_layout(tmp_path, monkeypatch):
    """The same sources through decode -> actor with and without deferring: the same sizes and predictions within
    a level; an undecodable JPEG becomes an error row there."""
    from semcolor.model import checkpoint, torch_predictor
    from semcolor.model.config import ModelConfig
    from semcolor.model.network import build_model

    torch.manual_seed(0)
    config = ModelConfig(arch="unet", input_size=32)
    ckpt = checkpoint.save(build_model(config), config, str(tmp_path / "model"))
    monkeypatch.setattr(torch_predictor, "make_deterministic", lambda: None)  # no global torch flags here
    (tmp_path / "a.jpg").write_bytes(_jpeg(40, 64, 0))
    (tmp_path / "b.jpg").write_bytes(_jpeg(50, 30, 1, orientation=8))
    (tmp_path / "bad.jpg").write_bytes(_jpeg(24, 24, 2)[:200])
    keys = ["a", "b", "bad"]
    row = {"key": keys, "source": [str(tmp_path / f"{k}.jpg") for k in keys], "output": [""] * 3,
           "mask": [""] * 3, "status": ["ok"] * 3, "kind": [""] * 3, "reason": [""] * 3}
    actor = stages.ColorizeActor(ckpt, size=32, device="cpu", backend="torch")
    runs = {}
    for defer in (False, True):
        batch = stages.decode_rows({k: np.array(v, dtype=object) for k, v in row.items()}, size=32,
                                   max_pixels=10**8, defer_jpeg=defer)
        runs[defer] = actor(batch)
    cpu, dev = runs[False], runs[True]
    assert list(dev["status"]) == ["ok", "ok", "error"] and dev["kind"][2] == cpu["kind"][2]
    for i in range(2):
        assert (dev["width"][i], dev["height"][i]) == (cpu["width"][i], cpu["height"][i])
        assert np.abs(dev["small"][i].astype(int) - cpu["small"][i].astype(int)).max() <= 3
        assert np.abs(dev["ab8"][i].astype(int) - cpu["ab8"][i].astype(int)).max() <= 3
        assert len(dev["l8"][i]) == dev["width"][i] * dev["height"][i] and dev["source_color"][i]
    assert not any(len(j) for j in dev["jpeg"])  # the bytes go no further than the actor


def test_the_jpeg_decoder_follows_the_actors_device_unless_told():
    base = dict(src="s", dst="d", checkpoint="c")
    assert not ColorizeConfig(**base).decodes_jpeg_in_actor  # CPU actors: the decode tasks decode
    assert ColorizeConfig(**base, gpus_per_actor=1.0).decodes_jpeg_in_actor  # GPU actors: nvJPEG
    assert not ColorizeConfig(**base, gpus_per_actor=1.0, jpeg_decode="cpu").decodes_jpeg_in_actor
    assert ColorizeConfig(**base, jpeg_decode="actor").decodes_jpeg_in_actor
    with pytest.raises(ValueError, match="jpeg_decode"):
        ColorizeConfig(**base, jpeg_decode="gpu")
