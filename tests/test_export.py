"""The model outside Ray: `semcolor export` to ONNX (verified against torch, refused when it disagrees), the
onnxruntime predictor through the Colorizer, its export cache, the README's torch-free example, and (Ray) the bulk
job and the Serve replica on ``--backend onnxruntime``.

Tolerance everywhere: ab8 and fg8 within 1 of torch's (LAB unit / probability level), as the export checks.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semcolor.cli import main
from semcolor.core.cache import CACHE_ENV
from semcolor.core.colorizer import Colorizer
from semcolor.core.lab_table import lab_table
from semcolor.model import checkpoint, export
from semcolor.model.config import ModelConfig
from semcolor.model.export import ExportError, export_checkpoint
from semcolor.model.inference import load_predictor, resolve_backend
from semcolor.model.network import build_model
from semcolor.model.export_cache import export_cache_path
from semcolor.model.onnx_format import META_CONFIG, META_VERIFIED
from semcolor.model.onnx_predictor import OnnxPredictor, load_onnx_predictor
from semcolor.model.torch_predictor import TorchPredictor, load_torch_predictor

REPO_ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1
# Each export traces, converts and verifies the model: ~20-40 s on 2 idle cores, several minutes on a loaded machine.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """Two random-init models at size 64: a unet with the bins head and the full-resolution mask branch (2 classes,
    a photo-like AB prior so that vividness matters) and a resnet34 with the regression head, the mask at 1/4 and 3
    classes."""
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    bins_config = ModelConfig(arch="unet", input_size=64, seg_stride=1)
    bins = build_model(bins_config)
    centres = bins.color_head.bins
    prior = torch.exp(-centres.square().sum(dim=1) / (2 * 15.0**2))
    bins.color_head.set_color_space(centres, prior / prior.sum())
    regression_config = ModelConfig(arch="resnet34", input_size=64, color_head="regression", n_classes=3,
                                    seg_stride=4, seg_decoder="own")  # and the mask on a decoder of its own
    return {"bins": checkpoint.save(bins, bins_config, str(root / "bins")),
            "regression": checkpoint.save(build_model(regression_config), regression_config, str(root / "regression"))}


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory) -> dict[str, str]:
    """Both models exported once: the bins one through the CLI, the regression one through the function."""
    root = tmp_path_factory.mktemp("onnx")
    paths = {name: str(root / f"{name}.onnx") for name in checkpoints}
    assert main(["export", "--checkpoint", checkpoints["bins"], "--out", paths["bins"]]) == 0
    report = export_checkpoint(checkpoints["regression"], paths["regression"])
    assert report.verification.max_diff["ab8"] <= TOLERANCE and report.bytes == Path(paths["regression"]).stat().st_size
    return paths


def _scene(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth color image with noise, uint8 (H, W, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 90 * np.sin(xx / 13.0), 128 + 90 * np.cos(yy / 17.0), (xx + yy) * 255 // (h + w)], -1)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- unit: no Ray


@pytest.mark.parametrize("name", ["bins", "regression"])
def test_export_matches_torch_on_odd_sizes_batches_and_vividness(checkpoints, exported, name):
    import onnx

    proto = onnx.load(exported[name], load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    config = ModelConfig.from_dict(json.loads(meta[META_CONFIG]))
    verified = json.loads(meta[META_VERIFIED])
    assert max(verified["max_diff"].values()) <= TOLERANCE and len(verified["cases"]) >= 5
    inputs = {i.name: i.type.tensor_type for i in proto.graph.input}
    assert list(inputs) == ["l8", "vividness"] and [o.name for o in proto.graph.output] == ["ab8", "fg8"]
    assert inputs["l8"].elem_type == onnx.TensorProto.UINT8 and inputs["vividness"].elem_type == onnx.TensorProto.FLOAT
    assert all(d.dim_param for d in inputs["l8"].shape.dim)  # batch, height and width are dynamic

    reference = load_torch_predictor(checkpoints[name], device="cpu")
    predictor = load_onnx_predictor(exported[name], threads=2)
    assert predictor.config == reference.config == config
    assert (predictor.size, predictor.n_classes) == (64, config.n_classes)
    rng = np.random.default_rng(1)
    for n, h, w in [(1, 97, 131), (3, 97, 131), (2, 64, 64), (2, 33, 200)]:
        l8 = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
        vividness = rng.uniform(0, 1, n).astype(np.float32)
        for want, got in zip(reference.predict(l8, vividness), predictor.predict(l8, vividness)):
            assert (got.dtype, got.shape) == (want.dtype, want.shape)
            assert np.abs(got.astype(np.int16) - want.astype(np.int16)).max() <= TOLERANCE, (n, h, w)
    l8 = rng.integers(0, 256, (1, 64, 64), dtype=np.uint8)
    muted, vivid = predictor.predict(l8, 0.0)[0], predictor.predict(l8, 1.0)[0]
    assert np.array_equal(muted, vivid) == (name == "regression")  # vividness reaches the bins decoding only


def test_a_graph_that_disagrees_is_refused_and_nothing_is_written(checkpoints, exported, tmp_path, monkeypatch,
                                                                 capsys):
    """A broken graph (the mask head's foreground bias and the color head's bias perturbed after export) fails
    the verification: ExportError names both outputs and the difference; the old file stays as it was."""
    import onnx
    from onnx import numpy_helper

    good = onnx.load(exported["bins"])

    def broken_to_onnx(model, config):
        proto = onnx.ModelProto()
        proto.CopyFrom(good)
        for init in proto.graph.initializer:
            if init.name in ("model.seg_head.body.2.bias", "model.color_head.body.2.bias"):
                values = numpy_helper.to_array(init).copy()
                values += np.linspace(0, 4, values.size, dtype=values.dtype)  # foreground and vivid bins favoured
                init.CopyFrom(numpy_helper.from_array(values, init.name))
        return proto

    monkeypatch.setattr(export, "to_onnx", broken_to_onnx)
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the previous export")
    with pytest.raises(ExportError) as err:
        export_checkpoint(checkpoints["bins"], str(out))
    message = str(err.value)
    assert message.startswith("the ONNX graph disagrees with torch")
    assert re.search(r"ab8 differs by up to \d+ \(tolerance 1\)", message)
    assert re.search(r"fg8 differs by up to \d+ \(tolerance 1\)", message)
    assert out.read_bytes() == b"the previous export" and sorted(tmp_path.iterdir()) == [out]  # no temp file left
    assert main(["export", "--checkpoint", checkpoints["bins"], "--out", str(tmp_path / "cli.onnx")]) == 2
    assert "semcolor export: the ONNX graph disagrees with torch" in capsys.readouterr().err
    assert not (tmp_path / "cli.onnx").exists()


def test_export_wants_an_onnx_suffix(checkpoints, tmp_path, capsys):
    assert main(["export", "--checkpoint", checkpoints["bins"], "--out", str(tmp_path / "model.bin")]) == 2
    assert "must end with .onnx" in capsys.readouterr().err


def test_onnxruntime_colorizer_matches_torch_and_reruns_byte_identical(checkpoints, exported):
    torch_colorizer = Colorizer(load_torch_predictor(checkpoints["bins"], device="cpu"))
    onnx_colorizer = Colorizer(load_predictor(exported["bins"], device="cpu", backend="onnxruntime", threads=1))
    assert onnx_colorizer.predictor.describe()["backend"] == "onnxruntime"
    images = [_scene(97, 131, 0), _scene(64, 64, 1)[..., 0], _scene(200, 45, 2)]
    small = np.stack([onnx_colorizer.prepare(image)[1] for image in images])
    vividness = np.array([0.0, 0.5, 1.0], np.float32)
    ab8, fg8 = onnx_colorizer.predict(small, vividness)
    for want, got in zip(torch_colorizer.predict(small, vividness), (ab8, fg8)):
        assert np.abs(got.astype(np.int16) - want.astype(np.int16)).max() <= TOLERANCE
    for i in range(len(images)):  # the same bytes whatever the batch
        one = onnx_colorizer.predict(small[i:i + 1], float(vividness[i]))
        assert np.array_equal(one[0][0], ab8[i]) and np.array_equal(one[1][0], fg8[i])
    first = onnx_colorizer.colorize_many(images, 0.7)
    again = onnx_colorizer.colorize_many(images, 0.7)
    reference = torch_colorizer.colorize_many(images, 0.7)
    for (rgb, mask), (rgb2, mask2), (rgb_t, mask_t), image in zip(first, again, reference, images):
        assert rgb.tobytes() == rgb2.tobytes() and mask.tobytes() == mask2.tobytes()  # byte-identical rerun
        assert rgb.shape[:2] == image.shape[:2] and np.abs(rgb.astype(int) - rgb_t.astype(int)).max() <= 3
        assert (mask == mask_t).mean() >= 0.99


def test_backend_resolution_and_the_export_cache(checkpoints, exported, tmp_path, monkeypatch):
    """CUDA runs torch whatever was asked, auto means onnxruntime on CPU; a checkpoint on onnxruntime is exported
    once into the cache (the export is faked here by copying the verified file) and reused; a .onnx file refuses
    backend torch."""
    assert resolve_backend("onnxruntime", "cuda") == resolve_backend("auto", "cuda:1") == "torch"
    assert resolve_backend("onnxruntime", "cpu") == resolve_backend("auto", "cpu") == "onnxruntime"
    assert resolve_backend("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="supported"):
        resolve_backend("tensorrt", "cpu")
    with pytest.raises(ValueError, match="backend onnxruntime"):
        load_predictor(exported["bins"], device="cpu", backend="torch")

    calls: list[str] = []

    def fake_export(ckpt: str, out: str, threads=None):
        calls.append(ckpt)
        Path(out).write_bytes(Path(exported["bins"]).read_bytes())

    monkeypatch.setattr(export, "export_checkpoint", fake_export)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    first = load_predictor(checkpoints["bins"], device="cpu", backend="onnxruntime", size=96, threads=1)
    second = load_predictor(checkpoints["bins"], device="cpu", backend="auto")
    assert isinstance(first, OnnxPredictor) and calls == [checkpoints["bins"]]  # exported once, then reused
    assert isinstance(second, OnnxPredictor) and first.source == second.source
    assert first.source.startswith(str(tmp_path / "cache" / "onnx"))
    assert (first.size, second.size) == (96, 64)
    assert isinstance(load_predictor(checkpoints["bins"], device="cpu"), TorchPredictor)  # the library's default
    assert isinstance(load_predictor(exported["bins"], device="cpu", backend="auto"), OnnxPredictor)  # a .onnx file


def _fake_checkpoints(root: Path, names: str) -> dict[str, str]:
    """Checkpoint folders whose bytes differ (the cache key hashes them); nothing loadable."""
    made = {}
    for name in names:
        (root / name).mkdir()
        (root / name / "config.json").write_text(f'{{"name": "{name}"}}')
        (root / name / "model.safetensors").write_bytes(name.encode())
        made[name] = str(root / name)
    return made


def test_the_export_cache_keeps_the_most_recently_used_exports(tmp_path, monkeypatch):
    """With room for 2 exports: a, b exported; a used again; c exported removes b (the least recently used), not a;
    b used again is exported again. Uses microseconds apart are ordered (the clock's time, not the file system's
    coarse "now"); temp files of writes in flight stay; a bad setting is refused with its name."""
    from semcolor.model import export_cache

    def fake_export(ckpt: str, out: str, threads=None):
        exports.append(Path(ckpt).name)
        Path(out).write_bytes(b"onnx of " + ckpt.encode())

    exports: list[str] = []
    monkeypatch.setattr(export, "export_checkpoint", fake_export)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(export_cache.EXPORTS_KEPT_ENV, "2")
    ckpts = _fake_checkpoints(tmp_path, "abc")
    paths = {name: export_cache_path(ckpts[name]) for name in "abc"}
    in_flight = Path(paths["a"]).parent / f".{Path(paths['a']).name}.x1y2.tmp"
    in_flight.write_bytes(b"partial")
    legacy_locks = [Path(paths["b"] + ".lock"), Path(paths["a"]).parent / ("0" * 24 + ".onnx.lock")]
    for lock in legacy_locks:  # an earlier version's per-export lock files: b's, and one whose export is gone
        lock.write_bytes(b"")
    for name in "aba":
        assert export_cache.cached_export(ckpts[name]) == paths[name]
    assert exports == ["a", "b"]  # a's second use found its export
    assert export_cache.read_cached_export(ckpts["c"]) == (paths["c"], b"onnx of " + ckpts["c"].encode())
    assert exports == ["a", "b", "c"]
    kept = sorted(p.name for p in Path(paths["a"]).parent.glob("*.onnx"))
    assert kept == sorted(Path(paths[name]).name for name in "ac") and in_flight.exists()
    assert not any(lock.exists() for lock in legacy_locks)
    export_cache.cached_export(ckpts["b"])
    assert exports == ["a", "b", "c", "b"] and not Path(paths["a"]).exists()  # a was older than c
    monkeypatch.setenv(export_cache.EXPORTS_KEPT_ENV, "0")
    with pytest.raises(ValueError, match=export_cache.EXPORTS_KEPT_ENV):
        export_cache.cached_export(ckpts["b"])  # refused on a cache hit too


def test_an_export_waits_for_a_reader_before_it_evicts(tmp_path, monkeypatch):
    """Room for 1 export: while a reader holds the folder's shared lock (between finding a's export and reading it),
    another process's export of b waits; the reader reads a whole, then b is written and a evicted."""
    import threading

    from semcolor.model import export_cache

    def fake_export(ckpt: str, out: str, threads=None):
        exports.append(Path(ckpt).name)
        Path(out).write_bytes(b"onnx of " + ckpt.encode())

    exports: list[str] = []
    monkeypatch.setattr(export, "export_checkpoint", fake_export)
    monkeypatch.setenv(export_cache.EXPORTS_KEPT_ENV, "1")
    ckpts = _fake_checkpoints(tmp_path, "ab")
    cache = str(tmp_path / "cache")
    path_a = export_cache.cached_export(ckpts["a"], cache)
    writer = threading.Thread(target=export_cache.cached_export, args=(ckpts["b"], cache))
    real_read = export_cache.storage.read_bytes
    waited = []

    def read_while_another_exports(url: str, **kwargs) -> bytes:
        if url == path_a:  # another process's export of b, between this reader's lookup and its read
            writer.start()
            writer.join(timeout=0.5)
            waited.append(writer.is_alive() and exports == ["a"])
        return real_read(url, **kwargs)

    monkeypatch.setattr(export_cache.storage, "read_bytes", read_while_another_exports)
    assert export_cache.read_cached_export(ckpts["a"], cache) == (path_a, b"onnx of " + ckpts["a"].encode())
    assert waited == [True], "the export did not wait for the reader"
    writer.join(timeout=30)
    assert exports == ["a", "b"] and not Path(path_a).exists()
    assert [p.name for p in Path(path_a).parent.glob("*.onnx")] == [Path(export_cache_path(ckpts["b"], cache)).name]


def test_a_read_only_cache_is_used_as_it_is(checkpoints, exported, tmp_path, monkeypatch):
    """An export in a cache this process cannot write (no lock file, file times unchangeable): found and loaded."""
    from semcolor.model import export_cache

    cache = tmp_path / "cache"
    cached = export_cache_path(checkpoints["bins"], str(cache))
    shutil.copyfile(exported["bins"], cached)

    def read_only_utime(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    real_open = open

    def read_only_open(file, mode="r", *args, **kwargs):
        if str(file).startswith(str(cache)) and any(m in mode for m in "wax+"):
            raise OSError(30, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(export_cache.os, "utime", read_only_utime)
    monkeypatch.setattr("builtins.open", read_only_open)
    predictor = load_onnx_predictor(checkpoints["bins"], cache_dir=str(cache), threads=1)
    assert predictor.source == cached and not (cache / "onnx" / export_cache.EXPORT_LOCK).exists()


def test_the_bulk_driver_exports_only_for_cpu_actors_on_onnxruntime(monkeypatch):
    """`export_for_cpu_actors`: a checkpoint directory on auto or onnxruntime is exported before the actors start;
    torch, a .onnx file, or --precision bf16 (torch) exports nothing."""
    from semcolor.bulk import job
    from semcolor.model import export_cache

    calls: list[str] = []
    monkeypatch.setattr(export_cache, "cached_export", lambda ckpt, *a, **k: calls.append(ckpt) or "x.onnx")
    for checkpoint_url, backend in (("ckpt", "auto"), ("ckpt", "onnxruntime"), ("ckpt", "torch"),
                                    ("model.onnx", "auto")):
        job.export_for_cpu_actors(checkpoint_url, backend)
    assert calls == ["ckpt", "ckpt"]
    job.export_for_cpu_actors("ckpt", "auto", "bf16")  # bf16 runs torch: nothing to export
    assert calls == ["ckpt", "ckpt"]


def test_a_cpu_actor_on_onnxruntime_and_the_cpu_stages_run_without_torch(checkpoints, exported, tmp_path,
                                                                          monkeypatch):
    """The bulk job's CPU path imports no torch: with the export and the LAB table cached, a model actor (backend auto, device cpu)
    loads and predicts, and the decode and merge stages run, in a process where importing torch fails."""
    cache = tmp_path / "cache"
    # the module's export of the same checkpoint, where the cache keeps it (the export itself: the tests above)
    cached = export_cache_path(checkpoints["bins"], str(cache))
    shutil.copyfile(exported["bins"], cached)
    assert load_onnx_predictor(checkpoints["bins"], cache_dir=str(cache)).source == cached  # found, not re-exported
    monkeypatch.setenv(CACHE_ENV, str(cache))
    lab_table.cache_clear()
    lab_table()  # saved in the cache, as the bulk job's driver does before its workers start
    script = f"""
import sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
import io, os
import numpy as np
from PIL import Image
os.environ[{CACHE_ENV!r}] = {str(cache)!r}
from semcolor.bulk.stages import ColorizeActor, decode_rows, merge_encode_write
buf = io.BytesIO()
Image.new("RGB", (90, 70), (200, 120, 40)).save(buf, format="PNG")
open("a.png", "wb").write(buf.getvalue())
batch = {{"key": np.array(["a"], object), "source": np.array([os.path.abspath("a.png")], object),
         "output": np.array([os.path.abspath("a_out.png")], object), "mask": np.array([os.path.abspath("a_mask.png")],
         object), "status": np.array(["ok"], object), "kind": np.array([""], object),
         "reason": np.array([""], object)}}
rows = decode_rows(batch, size=64, max_pixels=10**8)
actor = ColorizeActor({checkpoints["bins"]!r}, size=64, device="cpu", threads=1, backend="auto")
rows = actor(rows)
records = merge_encode_write(rows, "png", 90, 2, "run")
assert records["status"].to_pylist() == ["ok"], records.to_pylist()
print(actor.colorizer.predictor.describe()["backend"], Image.open("a_out.png").size)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["onnxruntime", "(90,", "70)"]


def _readme_example() -> str:
    """The Python block of the README's section "The model without Ray (ONNX)"."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### The model without Ray (ONNX)", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_colorizes_without_torch_or_ray(exported, tmp_path):
    """The README's example runs with torch and Ray unimportable and gives what the Colorizer gives (bilinear)."""
    (tmp_path / "model.onnx").write_bytes(Path(exported["bins"]).read_bytes())
    scan = _scene(150, 211, 3).mean(axis=2).astype(np.uint8)
    Image.fromarray(scan).convert("RGB").save(tmp_path / "scan.jpg", quality=92)
    (tmp_path / "example.py").write_text(_readme_example())
    blocked = "import sys; sys.modules.update(torch=None, ray=None); exec(open('example.py').read())"
    result = subprocess.run([sys.executable, "-c", blocked], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    rgb = np.asarray(Image.open(tmp_path / "scan_color.png"))
    mask = np.asarray(Image.open(tmp_path / "scan_mask.png"))
    colorizer = Colorizer(load_onnx_predictor(str(tmp_path / "model.onnx"), threads=1), refine="bilinear")
    want_rgb, want_mask = colorizer.colorize(np.asarray(Image.open(tmp_path / "scan.jpg").convert("RGB")), 0.5)
    assert rgb.shape == want_rgb.shape and mask.shape == want_mask.shape
    assert np.abs(rgb.astype(int) - want_rgb.astype(int)).max() <= 2
    assert (mask == want_mask).mean() >= 0.99


# ---------------------------------------------------------------- integration: Ray


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(int)


@pytest.mark.ray
def test_bulk_onnxruntime_backend_matches_torch(ray_local, checkpoints, tmp_path, monkeypatch):
    """`--backend onnxruntime` from a checkpoint directory: exported once into $SEMCOLOR_CACHE (verified; by the
    driver, as this Ray has one node) and colorized within tolerance of the torch backend's outputs."""
    from semcolor.bulk.job import colorize

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    sizes = {"a": (97, 131), "b": (64, 64), "c": (40, 210)}
    for key, (h, w) in sizes.items():
        Image.fromarray(_scene(h, w, ord(key))).save(src / f"{key}.png")
    runs = {}
    for backend in ("torch", "onnxruntime"):
        dst = tmp_path / backend
        summary = colorize(str(src), str(dst), checkpoints["bins"], batch_size=2, masks=True, backend=backend,
                           vividness=0.8)
        assert (summary.done, summary.failed) == (len(sizes), 0), summary.failure_examples
        runs[backend] = dst
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1  # exported once
    for key, (h, w) in sizes.items():
        torch_rgb, onnx_rgb = _png(runs["torch"] / f"{key}.png"), _png(runs["onnxruntime"] / f"{key}.png")
        assert onnx_rgb.shape == torch_rgb.shape == (h, w, 3)
        assert np.abs(onnx_rgb - torch_rgb).max() <= 3
        masks = [_png(runs[b] / "masks" / f"{key}.png") for b in runs]
        assert (masks[0] == masks[1]).mean() >= 0.99


@pytest.fixture(scope="module")
def onnx_service(ray_local, exported) -> Iterator[str]:
    """`semcolor serve --checkpoint model.onnx --backend onnxruntime --no-blocking` on 127.0.0.1:<free port>."""
    from conftest import served

    with served("--checkpoint", exported["bins"], "--backend", "onnxruntime", "--max-batch-size", "4") as url:
        yield url


@pytest.mark.ray
def test_serve_onnxruntime_backend_answers_the_same_routes(onnx_service, checkpoints):
    import base64

    import httpx

    image = _scene(75, 101, 7)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    body = buf.getvalue()
    want_rgb, want_mask = Colorizer(load_torch_predictor(checkpoints["bins"], device="cpu")).colorize(image, 0.3)
    with httpx.Client(base_url=onnx_service, timeout=120) as client:
        health = client.get("/healthz").json()
        assert (health["status"], health["backend"], health["device"]) == ("ok", "onnxruntime", "cpu")
        r = client.post("/colorize", params={"vividness": 0.3}, content=body, headers={"Content-Type": "image/png"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
        rgb = np.asarray(Image.open(io.BytesIO(r.content))).astype(int)
        assert rgb.shape == want_rgb.shape and np.abs(rgb - want_rgb.astype(int)).max() <= 3
        r = client.post("/segment", content=body)
        assert r.status_code == 200
        assert (np.asarray(Image.open(io.BytesIO(r.content))) == want_mask).mean() >= 0.99
        r = client.post("/predict", params={"vividness": 0.3}, files={"file": ("x.png", body, "image/png")})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert (doc["width"], doc["height"]) == (101, 75)
        assert Image.open(io.BytesIO(base64.b64decode(doc["colorized"]))).size == (101, 75)
        assert client.post("/colorize", content=b"not an image").status_code in (415, 422)
        assert client.get("/stats").json()["images"] >= 3
        assert client.get("/").status_code == 200
