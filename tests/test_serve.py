"""The Serve endpoint: typed builder args, HTTP API over a real `serve.run` on loopback, limits, batching.

Unit tests (no Ray) cover argument validation and format negotiation. The `ray` tests deploy a tiny
random-weight checkpoint once per module through `semcolor serve --no-blocking` (the CLI path) on
127.0.0.1 and a free port, speak HTTP to it, and delete the app and shut Serve down at the end.
"""

import base64
import inspect
import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from conftest import served
from PIL import Image

from semcolor.serve.args import ServeArgs
from semcolor.serve.builder import app, parse_replicas, run_serve
from semcolor.serve.http import RequestError, choose_format

MAX_BODY_MB = 1
MAX_PIXELS = 1_000_000


# ---- helpers ---------------------------------------------------------------------------------------------
def encode(array: np.ndarray, fmt: str = "PNG", **save_kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **save_kwargs)
    return buf.getvalue()


def gray(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth gradient plus noise, uint8 (H, W)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :] * np.ones((height, 1), np.float32)
    return np.clip(ramp + rng.normal(0, 20, (height, width)), 0, 255).astype(np.uint8)


def decoded(content: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(content))
    image.load()
    return image


# ---- unit: arguments and negotiation (no Ray) ------------------------------------------------------------
def test_builder_is_typed_so_serve_validates_its_args():
    # Serve converts the args dict to the builder's pydantic annotation only when it is the class itself.
    (param,) = inspect.signature(app).parameters.values()
    assert param.annotation is ServeArgs


def test_serve_args_convert_command_line_strings_and_refuse_unknown_keys():
    args = ServeArgs.model_validate({"checkpoint": "s3://b/ckpt", "max_batch_size": "16",
                                     "batch_wait_timeout_s": "0.02", "num_replicas": "auto",
                                     "autoscaling_config": '{"max_replicas": 4}'})
    assert (args.max_batch_size, args.batch_wait_timeout_s, args.num_replicas) == (16, 0.02, "auto")
    opts = args.deployment_options()
    assert opts["autoscaling_config"] == {"max_replicas": 4} and "num_replicas" not in opts
    assert opts["max_ongoing_requests"] >= args.max_batch_size
    with pytest.raises(ValueError, match="batch_wait_timeout"):
        ServeArgs.model_validate({"checkpoint": "x", "batch_wait_timeout": 0.01})
    with pytest.raises(ValueError, match="either num_replicas"):
        ServeArgs(checkpoint="x", num_replicas=2, autoscaling_config={"max_replicas": 4})
    with pytest.raises(ValueError, match="max_batch_size"):
        ServeArgs(checkpoint="x", max_batch_size=0)


def test_settings_and_gpu_options():
    args = ServeArgs(checkpoint="x", num_gpus=1, num_cpus=2, max_body_mb=2, num_replicas=3)
    opts = args.deployment_options()
    assert opts["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 1} and opts["num_replicas"] == 3
    settings = args.settings()
    assert settings.max_body_bytes == 2 * 1024 * 1024 and settings.torch_threads == 2


def test_project_serve_config_args_validate():
    import yaml
    from conftest import REPO_ROOT

    path = REPO_ROOT / "cluster" / "serve_config.yaml"
    apps = [a for a in yaml.safe_load(path.read_text())["applications"] if a["import_path"] == "semcolor.serve:app"]
    assert apps, f"no application in {path} imports semcolor.serve:app"
    for entry in apps:
        ServeArgs.model_validate(entry.get("args", {})).deployment_options()


def test_parse_replicas():
    assert parse_replicas("3", 8) == {"num_replicas": 3}
    assert parse_replicas("1:4", 8) == {"autoscaling_config": {"min_replicas": 1, "max_replicas": 4,
                                                               "target_ongoing_requests": 8}}
    for bad in ("x", "4:1", "1:2:3"):
        with pytest.raises(ValueError, match="--replicas"):
            parse_replicas(bad, 8)


@pytest.mark.parametrize("query,accept,expected", [
    (None, None, "png"), (None, "*/*", "png"), (None, "image/jpeg", "jpeg"), (None, "text/html", "png"),
    (None, "image/png;q=0.5, image/jpeg", "jpeg"), (None, "image/jpeg;q=0.2, image/*", "png"),
    ("jpg", "image/png", "jpeg"), ("PNG", "image/jpeg", "png"),
])
def test_choose_format(query, accept, expected):
    assert choose_format(query, accept) == expected


def test_choose_format_rejects_unknown():
    with pytest.raises(RequestError) as info:
        choose_format("gif", None)
    assert info.value.status_code == 422 and "png, jpeg" in info.value.detail


def _request(body: bytes, headers: dict[str, str], chunk: int = 1 << 16):
    """A starlette Request whose body arrives in chunks, as from a server."""
    from starlette.requests import Request

    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]

    async def receive():
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/colorize", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    return Request(scope, receive)


def _read(body: bytes, headers: dict[str, str], max_bytes: int = 1000) -> tuple[bytes, str]:
    import asyncio

    from semcolor.serve.http import read_image_bytes

    return asyncio.run(read_image_bytes(_request(body, headers, chunk=100), max_bytes))


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> tuple[bytes, dict]:
    lines = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        lines.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(lines) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_read_image_bytes_raw_and_multipart():
    assert _read(b"abc", {"Content-Type": "image/png"}) == (b"abc", "image")
    body, headers = _multipart([("note", None, b"hi"), ("upload", "scan.jpg", b"JPEGDATA"), ("b", "x.png", b"2")])
    assert _read(body, headers) == (b"JPEGDATA", "scan.jpg")  # the first file part, whatever its name


@pytest.mark.parametrize("body,headers,status,word", [
    (b"", {}, 400, "empty"),
    (b"x" * 1001, {}, 413, "limit"),  # no Content-Length: counted as it arrives
    (b"x" * 10, {"Content-Length": "5000"}, 413, "5000 bytes"),  # declared size refused before reading
    (b"x", {"Content-Length": "many"}, 400, "content-length"),
    (b"--zz\r\ngarbage", {"Content-Type": "multipart/form-data; boundary=zz"}, 400, "multipart"),
    (b"--zz\r\n", {"Content-Type": "multipart/form-data"}, 400, "multipart"),  # no boundary
    (_multipart([("note", None, b"hi")])[0], _multipart([])[1], 400, "no file part"),
    (_multipart([("file", "x.png", b"")])[0], _multipart([])[1], 400, "empty"),
])
def test_read_image_bytes_errors(body, headers, status, word):
    with pytest.raises(RequestError) as info:
        _read(body, headers)
    assert info.value.status_code == status and word in info.value.detail.lower()


class _FakeClock:
    """perf_counter for the replica module: seconds move only when a stage says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# Seconds each stage takes on the fake clock: powers of two, so a stage timed with its neighbour's time, or twice,
# gives a value no right timing gives.
STAGE_S = {"read": 0.001, "decode": 0.002, "preprocess": 0.004, "queue": 0.008, "model": 0.016, "merge_rgb": 0.032,
           "merge_mask": 0.064, "encode_rgb": 0.128, "encode_mask": 0.256}


def _timed_replica(monkeypatch):
    """The replica class's own route code on an instance without Ray: every stage it calls moves a fake clock by
    its STAGE_S (read, decode and encode are the real functions; the model is a stand-in that waits ``queue`` for
    its batch and then runs ``model``)."""
    import asyncio
    import types
    from concurrent.futures import ThreadPoolExecutor

    from semcolor.serve import replica

    cls = replica.SemcolorService.func_or_class
    # Serve's ingress copies the class (cloudpickle): its methods read their own copy of the module's globals
    namespaces = {id(g): g for g in (vars(replica), cls._infer.__globals__)}.values()

    def patch(name, value):
        for namespace in namespaces:
            monkeypatch.setitem(namespace, name, value)

    clock = _FakeClock()
    patch("time", types.SimpleNamespace(perf_counter=clock.perf_counter))

    def timed(fn, stage):
        if asyncio.iscoroutinefunction(fn):
            async def run_async(*args, **kwargs):
                out = await fn(*args, **kwargs)
                clock.advance(STAGE_S[stage])
                return out
            return run_async

        def run(*args, **kwargs):
            out = fn(*args, **kwargs)
            clock.advance(STAGE_S[stage])
            return out
        return run

    for name, stage in (("read_image_bytes", "read"), ("decode_image", "decode"), ("encode_rgb", "encode_rgb"),
                        ("encode_mask", "encode_mask")):
        patch(name, timed(getattr(replica, name), stage))

    class Colorizer:
        n_classes = 2
        prepare = staticmethod(timed(lambda rgb: (rgb[..., 0], np.zeros((8, 8), np.uint8)), "preprocess"))
        merge = staticmethod(timed(lambda l8, ab8, small: np.zeros((*l8.shape, 3), np.uint8), "merge_rgb"))
        # the left half foreground (255), the right half another nonzero value: a binary mask's background
        mask = staticmethod(timed(lambda l8, fg8, small: np.where(np.arange(l8.shape[1]) < l8.shape[1] // 2, 255,
                                                                  7).astype(np.uint8)[None].repeat(l8.shape[0], 0),
                                  "merge_mask"))

    async def submit(l8_small, vividness):
        clock.advance(STAGE_S["queue"])  # waiting for the model and for the batch to form
        clock.advance(STAGE_S["model"])  # the batch's forward, timed by _forward itself
        return replica.Forward(np.zeros((2, 8, 8), np.int8), np.zeros((8, 8), np.uint8),
                               STAGE_S["model"] * 1000.0, 3)

    # without __init__ (no model, no Ray); no __del__ either (the wrapper's would shut down an ASGI app never started)
    service = object.__new__(type("UnstartedReplica", (cls,), {"__del__": lambda self: None}))
    service.settings = types.SimpleNamespace(max_body_bytes=1 << 20, max_pixels=MAX_PIXELS, jpeg_quality=90)
    service.colorizer = Colorizer()
    service._cpu_pool = ThreadPoolExecutor(1)
    service._submit = submit
    return service


def _ms(*stages: str) -> float:
    return sum(STAGE_S[s] for s in stages) * 1000.0


def test_each_stage_of_a_request_is_timed_apart(monkeypatch):
    """/predict's timings_ms and /colorize's and /segment's Server-Timing: each stage its own milliseconds, the
    queue without the model's, the total all of them."""
    import asyncio

    service = _timed_replica(monkeypatch)
    body, headers = encode(gray(12, 10)), {"Content-Type": "image/png"}
    before = {"read": _ms("read"), "decode": _ms("decode"), "preprocess": _ms("preprocess"), "queue": _ms("queue"),
              "model": _ms("model")}
    start = ("read", "decode", "preprocess", "queue", "model")
    try:
        doc = asyncio.run(service.predict(_request(body, headers), format=None, vividness=0.5))
        assert doc.timings_ms.model_dump() == pytest.approx({
            **before, "merge": _ms("merge_rgb", "merge_mask"), "encode": _ms("encode_rgb", "encode_mask"),
            "total": _ms(*start, "merge_rgb", "merge_mask", "encode_rgb", "encode_mask")}, abs=1e-3)
        assert (doc.width, doc.height, doc.batch_size, doc.foreground_fraction) == (10, 12, 3, 0.5)
        for route, merge, encode_stage in ((service.colorize, "merge_rgb", "encode_rgb"),
                                           (service.segment, "merge_mask", "encode_mask")):
            kwargs = {"format": None, "vividness": 0.5} if route == service.colorize else {}
            response = asyncio.run(route(_request(body, headers), **kwargs))
            header = dict(item.split(";dur=") for item in response.headers["server-timing"].split(", "))
            assert {k: float(v) for k, v in header.items()} == pytest.approx({
                **before, "merge": _ms(merge), "encode": _ms(encode_stage), "total": _ms(*start, merge, encode_stage)},
                abs=1e-3)
            assert response.headers["x-batch-size"] == "3"
    finally:
        service._cpu_pool.shutdown()


def test_no_blocking_without_a_cluster_is_refused(monkeypatch, capsys):
    from semcolor.cli import build_parser

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("ray.is_initialized", lambda: False)
    args = build_parser().parse_args(["serve", "--checkpoint", "x", "--no-blocking"])
    assert run_serve(args) == 2
    assert "needs a running Ray cluster" in capsys.readouterr().err


# ---- integration: a deployed app ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_url(ray_local, tmp_path_factory) -> Iterator[str]:
    """`semcolor serve --no-blocking` with a tiny checkpoint on 127.0.0.1:<free port>; removed afterwards."""
    import torch

    from semcolor.model import checkpoint
    from semcolor.model.config import ModelConfig
    from semcolor.model.network import build_model

    ckpt = str(tmp_path_factory.mktemp("serve") / "ckpt")
    config = ModelConfig(arch="resnet34", input_size=64)
    torch.manual_seed(0)
    model = build_model(config)
    # a prior like photos' (mostly near gray): vividness then has a real effect even on an untrained head
    bins = model.color_head.bins
    prior = torch.exp(-bins.square().sum(dim=1) / (2 * 15.0**2))
    model.color_head.set_color_space(bins, prior / prior.sum())
    checkpoint.save(model, config, ckpt)
    # torch: the routes do not depend on the backend (test_export serves the same routes on onnxruntime)
    with served("--checkpoint", ckpt, "--backend", "torch", "--max-batch-size", "8", "--batch-wait-timeout",
                "0.05", "--max-body-mb", str(MAX_BODY_MB), "--max-pixels", str(MAX_PIXELS)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60) as c:
        yield c


@pytest.mark.ray
@pytest.mark.parametrize("height,width,mode", [(64, 64, "L"), (37, 53, "L"), (101, 7, "RGB"), (1, 45, "L")])
def test_colorize_returns_png_at_source_size(client, height, width, mode):
    image = gray(height, width)
    if mode == "RGB":
        image = np.stack([image, image[::-1], 255 - image], axis=2)
    r = client.post("/colorize", content=encode(image), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    out = decoded(r.content)
    assert (out.format, out.mode, out.size) == ("PNG", "RGB", (width, height))
    assert "model;dur=" in r.headers["server-timing"]


@pytest.mark.ray
def test_colorize_multipart_upload_and_jpeg_output(client):
    body = encode(np.stack([gray(40, 60)] * 3, axis=2), "JPEG", quality=90)
    r = client.post("/colorize", files={"file": ("scan.jpg", body, "image/jpeg")})
    assert r.status_code == 200 and decoded(r.content).size == (60, 40)
    r = client.post("/colorize?format=jpeg", content=body)
    assert r.headers["content-type"] == "image/jpeg" and decoded(r.content).format == "JPEG"
    r = client.post("/colorize", content=body, headers={"Accept": "image/jpeg"})
    assert r.headers["content-type"] == "image/jpeg" and decoded(r.content).size == (60, 40)


@pytest.mark.ray
def test_exif_rotated_jpeg_comes_back_as_displayed(client):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display: stored 40 wide x 30 high, shown 30 x 40
    body = encode(gray(30, 40), "JPEG", exif=exif.tobytes())
    r = client.post("/colorize", content=body)
    assert r.status_code == 200, r.text
    assert decoded(r.content).size == (30, 40)
    r = client.post("/segment", content=body)
    assert decoded(r.content).size == (30, 40)


@pytest.mark.ray
def test_segment_returns_a_full_resolution_binary_mask(client):
    r = client.post("/segment", content=encode(gray(45, 77)))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    mask = decoded(r.content)
    assert (mask.mode, mask.size) == ("L", (77, 45))
    assert set(np.unique(np.asarray(mask))) <= {0, 255}


@pytest.mark.ray
def test_predict_returns_both_images_and_timings(client):
    r = client.post("/predict", content=encode(gray(33, 71)))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert (doc["width"], doc["height"], doc["colorized_format"]) == (71, 33, "png")
    assert decoded(base64.b64decode(doc["colorized"])).size == (71, 33)
    mask = decoded(base64.b64decode(doc["mask"]))
    assert (mask.mode, mask.size) == ("L", (71, 33))
    assert doc["foreground_fraction"] == pytest.approx((np.asarray(mask) == 255).mean(), abs=1e-6)  # of this mask
    assert doc["batch_size"] >= 1
    timings = doc["timings_ms"]
    assert set(timings) == {"read", "decode", "preprocess", "queue", "model", "merge", "encode", "total"}
    assert timings["model"] > 0
    # the stages run one after another inside the request (each rounded to 0.001 ms): together within its total
    assert sum(v for k, v in timings.items() if k != "total") <= timings["total"] + 0.01, timings


@pytest.mark.ray
def test_vividness_is_per_request_deterministic_and_range_checked(client):
    """?vividness= changes the colors (the bins head's annealed mean), the same value gives the same bytes even
    when requests of different vividness share a batch, and an out-of-range value gets a 422 naming the range."""
    from semcolor.model.metrics import colorfulness

    body = encode(gray(48, 64, seed=3))
    solo = {v: client.post(f"/colorize?vividness={v}", content=body).content for v in (0.0, 1.0)}
    assert solo[0.0] != solo[1.0]
    assert colorfulness(np.asarray(decoded(solo[1.0]))) > colorfulness(np.asarray(decoded(solo[0.0])))
    values = [0.0, 1.0] * 6
    with ThreadPoolExecutor(len(values)) as pool:
        answers = list(pool.map(lambda v: client.post(f"/colorize?vividness={v}", content=body), values))
    assert max(int(r.headers["x-batch-size"]) for r in answers) > 1  # mixed values did share batches
    assert all(r.content == solo[v] for r, v in zip(answers, values))
    for route in ("/colorize", "/predict"):
        for bad in ("1.5", "-0.1"):
            r = client.post(f"{route}?vividness={bad}", content=body)
            assert r.status_code == 422 and "[0.0, 1.0]" in r.json()["detail"], r.text
        r = client.post(f"{route}?vividness=vivid", content=body)
        assert r.status_code == 422 and "vividness" in r.json()["detail"]
    from semcolor.model.config import DEFAULT_VIVIDNESS

    assert client.get("/healthz").json()["vividness"] == {"default": DEFAULT_VIVIDNESS, "range": [0.0, 1.0],
                                                          "applies": True}


@pytest.mark.ray
def test_health_page_and_openapi(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["size"] == 64 and health["max_pixels"] == MAX_PIXELS
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="file"' in page.text and 'id="colorized"' in page.text and 'id="vividness"' in page.text
    spec = client.get("/openapi.json").json()
    assert {"/colorize", "/segment", "/predict", "/healthz", "/stats"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/colorize"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def _chunks(total: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    for _ in range(total // chunk):
        yield b"\0" * chunk


BAD_INPUTS = {
    # name: (request kwargs, expected status, a word of the reason)
    "empty body": (dict(content=b""), 400, "empty"),
    "empty multipart file": (dict(files={"file": ("x.png", b"", "image/png")}), 400, "empty"),
    "multipart without a file": (dict(data={"note": "hi"}, files={"other": (None, "x")}), 400, "file"),
    "malformed multipart": (dict(content=b"--zz\r\ngarbage",
                                 headers={"Content-Type": "multipart/form-data; boundary=zz"}), 400, "multipart"),
    "text, not an image": (dict(content=b"hello, this is not an image"), 415, "not a recognized image"),
    "truncated png": (dict(content=encode(gray(64, 64))[:200]), 422, "decode"),
    "declared body too large": (dict(content=b"\0" * (MAX_BODY_MB * 1024 * 1024 + 1)), 413, "limit"),
    "chunked body too large": (dict(content=_chunks(2 * MAX_BODY_MB * 1024 * 1024)), 413, "limit"),
    "too many pixels": (dict(content=encode(np.zeros((1000, 1001), np.uint8))), 413, "pixels"),
    "unknown format": (dict(params={"format": "gif"}, content=encode(gray(8, 8))), 422, "format"),
    "invalid content-length": (dict(content=b"x", headers={"Content-Length": "abc"}), 400, "content-length"),
}


@pytest.mark.ray
@pytest.mark.parametrize("name, path", [(name, path) for name in BAD_INPUTS
                                        for path in ("/colorize", "/segment", "/predict")
                                        if not (name == "unknown format" and path == "/segment")])
def test_bad_input_gets_4xx_with_a_json_reason(base_url, name, path):
    """Every bad input on every route (/segment takes no format) is a 4xx with a JSON reason, never a 500."""
    kwargs, status, word = BAD_INPUTS[name]
    if name == "chunked body too large":
        kwargs = dict(content=_chunks(2 * MAX_BODY_MB * 1024 * 1024))  # a generator is consumed once
    if name == "invalid content-length":
        status_line = _raw_post(base_url, path, b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nx")
        # uvicorn's HTTP parser refuses the request itself; either way a 400 and never a 500
        assert status_line.startswith(b"HTTP/1.1 400"), status_line
        return
    with httpx.Client(base_url=base_url, timeout=60) as c:
        r = c.post(path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    assert isinstance(detail, str) and word.lower() in detail.lower(), detail


def _raw_post(base_url: str, path: str, request: bytes) -> bytes:
    """Send bytes as they are (httpx would fix a bad header) and return the status line."""
    import socket

    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request.replace(b"%s", path.encode()))
        return sock.recv(4096).split(b"\r\n", 1)[0]


@pytest.mark.ray
def test_concurrent_requests_are_batched(client, base_url):
    before = client.get("/stats").json()
    bodies = [encode(gray(30 + i % 7, 40 + i % 5, seed=i)) for i in range(64)]

    def post(body: bytes) -> tuple[int, tuple[int, int], tuple[int, int]]:
        with httpx.Client(base_url=base_url, timeout=120) as c:
            r = c.post("/colorize", content=body)
        expected = Image.open(io.BytesIO(body)).size
        return r.status_code, decoded(r.content).size if r.status_code == 200 else (0, 0), expected

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(post, bodies))
    assert [status for status, _, _ in results] == [200] * 64
    assert all(got == expected for _, got, expected in results)
    after = client.get("/stats").json()
    assert after["images"] - before["images"] == 64
    new_counts = {int(k): v - before["batch_size_counts"].get(k, 0) for k, v in after["batch_size_counts"].items()}
    assert max(k for k, v in new_counts.items() if v > 0) > 1, json.dumps(after)
    assert after["max_batch_size_seen"] <= 8
