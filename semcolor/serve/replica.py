"""The Serve replica: a FastAPI app around one :class:`semcolor.core.colorizer.Colorizer` with dynamic batching.

Per request (in worker threads, so the event loop keeps accepting requests and forming batches):
decode the bytes (EXIF orientation, any mode -> RGB) -> full-resolution lightness ``l8`` -> ``l8`` at model
size. The model-size forward runs in a ``@serve.batch`` method that stacks concurrent requests into one
``Colorizer.predict`` call. Back per request: AB upsampled and merged with the full-resolution L, encoded.

Endpoints (see ``/docs``): ``POST /colorize``, ``POST /segment``, ``POST /predict``, ``GET /healthz``,
``GET /stats`` (batch sizes seen by this replica), ``GET /`` (web page).
"""

# No `from __future__ import annotations` here: FastAPI and Serve's ingress read the route annotations at runtime.
import asyncio
import base64
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from ray import serve

from semcolor import __version__
from semcolor.core.colorizer import warm_up
from semcolor.core.decode import DataError, decode_image
from semcolor.core.encode import encode_mask, encode_rgb
from semcolor.model.config import DEFAULT_VIVIDNESS, VIVIDNESS_RANGE, check_vividness
from semcolor.model.inference import load_colorizer, resolve_backend
from semcolor.serve.args import ServeArgs, ServiceSettings
from semcolor.serve.http import (
    MEDIA_TYPES,
    OutputFormat,
    RequestError,
    choose_format,
    read_image_bytes,
    status_for,
)


@dataclass
class BatchStats:
    """Batch sizes formed by one replica's ``@serve.batch`` forward, and the time spent in it."""

    sizes: Counter = field(default_factory=Counter)
    model_s: float = 0.0

    def record(self, batch_size: int, seconds: float) -> None:
        self.sizes[batch_size] += 1
        self.model_s += seconds

    def snapshot(self) -> dict[str, Any]:
        batches = sum(self.sizes.values())
        images = sum(size * count for size, count in self.sizes.items())
        return {
            "batches": batches,
            "images": images,
            "max_batch_size_seen": max(self.sizes, default=0),
            "mean_batch_size": images / batches if batches else 0.0,
            "batch_size_counts": {str(k): v for k, v in sorted(self.sizes.items())},
            "model_seconds": round(self.model_s, 4),
        }


@dataclass
class Prepared:
    """A decoded request: full-resolution lightness and its model-size copy."""

    l8: np.ndarray  # uint8 (H, W), L * 255 / 100
    l8_small: np.ndarray  # uint8 (S, S)
    decode_ms: float
    preprocess_ms: float


@dataclass
class Forward:
    """One request's slice of a batched forward."""

    ab8: np.ndarray  # int8 (2, S, S), LAB units
    fg8: np.ndarray  # uint8 (S, S)
    model_ms: float  # the whole batch's forward
    batch_size: int


class Timings(BaseModel):
    """Milliseconds spent per stage of one request."""

    read: float
    decode: float
    preprocess: float
    queue: float
    model: float
    merge: float
    encode: float
    total: float


class PredictResponse(BaseModel):
    """Both outputs of one image at its full resolution (as displayed, EXIF orientation applied)."""

    width: int
    height: int
    colorized_format: str = Field(description="png or jpeg")
    colorized: str = Field(description="the colorized image, base64")
    mask: str = Field(description="single-channel PNG, base64: 0/255 (binary models) or class ids")
    foreground_fraction: float = Field(description="share of pixels that are foreground (non-zero class)")
    batch_size: int = Field(description="images in the model forward this request rode in")
    timings_ms: Timings


class ErrorResponse(BaseModel):
    detail: str = Field(description="what went wrong and what to do")
    kind: str | None = Field(None, description="for decoding errors: empty, not_image, corrupt, too_large, unsupported")


IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image: raw bytes (any Content-Type) or a multipart/form-data field named 'file'.",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"}}},
            },
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in [
        (400, "empty body or malformed multipart"),
        (413, "body larger than max_body_mb, or more pixels than max_pixels"),
        (415, "not an image, or an unsupported pixel mode"),
        (422, "corrupt image or invalid parameter"),
    ]
}
FORMAT_QUERY = Query(None, description="png or jpeg; default: from the Accept header, else png")
VIVIDNESS_QUERY = Query(DEFAULT_VIVIDNESS, description=f"{VIVIDNESS_RANGE[0]} to {VIVIDNESS_RANGE[1]}: 0 = muted and "
                        "most accurate, 0.5 = as trained, 1 = rare saturated colors favoured (vivid); bins-head "
                        "models only, a regression model ignores it")


def _vividness(value: float) -> float:
    """The query's vividness, or a 422 that names the valid range."""
    try:
        return check_vividness(value)
    except ValueError as e:
        raise RequestError(422, str(e)) from e

api = FastAPI(
    title="semcolor",
    version=__version__,
    description="Colorize grayscale images and segment their foreground with one dual-head network. "
                "Send an image as the raw body or as a multipart field named 'file'.",
)


@api.exception_handler(RequestError)
async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


@api.exception_handler(DataError)
async def _data_error(_: Request, exc: DataError) -> JSONResponse:
    return JSONResponse({"detail": exc.reason, "kind": exc.kind}, status_code=status_for(exc))


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    reasons = ["{}: {}".format(".".join(str(p) for p in err.get("loc", ())), err.get("msg", "")) for err in exc.errors()]
    return JSONResponse({"detail": "; ".join(reasons)}, status_code=422)


T = TypeVar("T")


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


def _timed(timings: dict[str, float], phase: str, work: Callable[[], T]) -> T:
    """``work()``, its milliseconds recorded as ``timings[phase]`` (a request's Server-Timing)."""
    start = time.perf_counter()
    out = work()
    timings[phase] = _ms(start)
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@serve.deployment(name="Colorizer")
@serve.ingress(api)
class SemcolorService:
    """One replica: the model, the batcher, the routes."""

    def __init__(self, settings: ServiceSettings) -> None:
        import ray

        # auto: the GPU Ray gave this replica, else the CPU, decided without importing torch (an onnxruntime
        # replica never loads it)
        device = settings.device if settings.device != "auto" else ("cuda" if ray.get_gpu_ids() else "cpu")
        engine = resolve_backend(settings.backend, device, settings.precision)
        thread_setup = None
        if engine == "torch":
            import torch

            if device.startswith("cuda") and not torch.cuda.is_available():
                if ray.get_gpu_ids():  # Ray gave it a GPU its node cannot run
                    from semcolor.ray_env import cuda_problem

                    raise RuntimeError(cuda_problem("--gpus-per-replica"))
                raise RuntimeError(f"device={settings.device!r} but this replica sees no GPU; give it one with "
                                   "num_gpus (builder args) or ray_actor_options.num_gpus (config file)")
            thread_setup = torch.set_num_threads
        self.settings = settings
        self.model_threads = settings.torch_threads
        # Torch's intra-op thread count is per thread. The forward gets its own thread with all of them; the
        # per-request work (decode, merge, encode) runs one request per thread, single-threaded, in a pool of
        # the same size: parallel across requests, and never OpenMP teams oversubscribing the replica's CPUs.
        # onnxruntime takes its thread count from the session (``threads`` below).
        self._model_pool = ThreadPoolExecutor(1, thread_name_prefix="semcolor-model", initializer=thread_setup,
                                              initargs=(self.model_threads,) if thread_setup else ())
        self._cpu_pool = ThreadPoolExecutor(self.model_threads, thread_name_prefix="semcolor-cpu",
                                            initializer=thread_setup, initargs=(1,) if thread_setup else ())
        self.colorizer = load_colorizer(settings.checkpoint, device=device, size=settings.size,
                                        refine=settings.refine, backend=engine, threads=self.model_threads,
                                        tta=settings.tta, precision=settings.precision)
        self._forward.set_max_batch_size(settings.max_batch_size)
        self._forward.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        self.stats = BatchStats()
        self._idle: asyncio.Event | None = None
        self.page = (resources.files("semcolor.serve") / "static" / "index.html").read_text(encoding="utf-8")
        # Warm-up forward: the first call pays one-off allocation costs that would otherwise land on a request.
        size = self.colorizer.size
        self._model_pool.submit(self.colorizer.predict, np.zeros((1, size, size), dtype=np.uint8)).result()
        warm_up(size)  # the merge's LAB -> RGB table and compiled loops (about a second), here, not in a request

    # ---- batched model forward -------------------------------------------------------------------------
    # Ray 2.60's @serve.batch forms the next batch as soon as requests arrive, even while the previous batch
    # still runs (formed batches then wait their turn): under load that gives many batches of 1-2 queued
    # back to back. So requests wait here until the model is idle and are then released together: each
    # release wave joins one batch, and an idle model takes a lone request at once (no added latency).
    def _model_idle(self) -> asyncio.Event:
        if self._idle is None:  # created on the replica's event loop, on first use
            self._idle = asyncio.Event()
            self._idle.set()
        return self._idle

    async def _submit(self, l8_small: np.ndarray, vividness: float) -> Forward:
        """One request's model-size input -> its slice of a batched forward."""
        await self._model_idle().wait()
        return await self._forward((l8_small, vividness))

    @serve.batch(max_batch_size=ServeArgs.model_fields["max_batch_size"].default,
                 batch_wait_timeout_s=ServeArgs.model_fields["batch_wait_timeout_s"].default, max_concurrent_batches=1)
    async def _forward(self, items: list[tuple[np.ndarray, float]]) -> list[Forward]:
        """Stack concurrent requests' (S, S) inputs into one ``Colorizer.predict`` call (each with its own
        vividness)."""
        idle = self._model_idle()
        idle.clear()
        try:
            batch = np.stack([small for small, _ in items])
            vividness = np.array([v for _, v in items], dtype=np.float32)
            start = time.perf_counter()
            loop = asyncio.get_running_loop()
            ab8, fg8 = await loop.run_in_executor(self._model_pool, self.colorizer.predict, batch, vividness)
            seconds = time.perf_counter() - start
        finally:
            idle.set()
        self.stats.record(len(items), seconds)
        return [Forward(ab8[i], fg8[i], round(seconds * 1000.0, 3), len(items)) for i in range(len(items))]

    # ---- per-request stages (run in worker threads) ----------------------------------------------------
    async def _cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the replica's CPU pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._cpu_pool, fn, *args)

    def _prepare(self, data: bytes, filename: str) -> Prepared:
        start = time.perf_counter()
        rgb = decode_image(data, max_pixels=self.settings.max_pixels, key=filename)
        decode_ms = _ms(start)
        start = time.perf_counter()
        l8, l8_small = self.colorizer.prepare(rgb)
        return Prepared(l8=l8, l8_small=l8_small, decode_ms=decode_ms,
                        preprocess_ms=_ms(start))

    def _colorized(self, prep: Prepared, fwd: Forward) -> np.ndarray:
        return self.colorizer.merge(prep.l8, fwd.ab8, prep.l8_small)

    def _mask(self, prep: Prepared, fwd: Forward) -> np.ndarray:
        return self.colorizer.mask(prep.l8, fwd.fg8, prep.l8_small)

    async def _infer(self, request: Request, vividness: float = DEFAULT_VIVIDNESS
                     ) -> tuple[Prepared, Forward, dict[str, float]]:
        """Read, decode and run one request through the batched forward; returns its timings so far."""
        vividness = _vividness(vividness)
        start = time.perf_counter()
        data, filename = await read_image_bytes(request, self.settings.max_body_bytes)
        timings = {"read": _ms(start)}
        prep = await self._cpu(self._prepare, data, filename)
        queued = time.perf_counter()
        fwd = await self._submit(prep.l8_small, vividness)
        timings.update(decode=prep.decode_ms, preprocess=prep.preprocess_ms, model=fwd.model_ms,
                       queue=max(0.0, round(_ms(queued) - fwd.model_ms, 3)))
        return prep, fwd, timings

    def _encode(self, rgb: np.ndarray, fmt: OutputFormat) -> bytes:
        return encode_rgb(rgb, fmt, self.settings.jpeg_quality)

    def _image_response(self, content: bytes, fmt: OutputFormat, fwd: Forward, timings: dict[str, float]) -> Response:
        server_timing = ", ".join(f"{k};dur={v}" for k, v in timings.items())
        return Response(content, media_type=MEDIA_TYPES[fmt],
                        headers={"Server-Timing": server_timing, "X-Batch-Size": str(fwd.batch_size)})

    # ---- routes ------------------------------------------------------------------------------------------
    @api.post("/colorize", openapi_extra=IMAGE_BODY, responses={**ERRORS, 200: {
        "content": {"image/png": {}, "image/jpeg": {}}, "description": "the colorized image at the source's size"}})
    async def colorize(self, request: Request, format: str | None = FORMAT_QUERY,
                       vividness: float = VIVIDNESS_QUERY) -> Response:
        """Colorize an image; the result has the source's full resolution (EXIF orientation applied)."""
        total = time.perf_counter()
        fmt = choose_format(format, request.headers.get("accept"))
        prep, fwd, timings = await self._infer(request, vividness)

        def finish() -> bytes:
            rgb = _timed(timings, "merge", lambda: self._colorized(prep, fwd))
            return _timed(timings, "encode", lambda: self._encode(rgb, fmt))

        content = await self._cpu(finish)
        timings["total"] = _ms(total)
        return self._image_response(content, fmt, fwd, timings)

    @api.post("/segment", openapi_extra=IMAGE_BODY, responses={**ERRORS, 200: {
        "content": {"image/png": {}}, "description": "the foreground mask (0/255, or class ids) at the source's size"}})
    async def segment(self, request: Request) -> Response:
        """Segment an image's foreground; a single-channel PNG at the source's full resolution."""
        total = time.perf_counter()
        prep, fwd, timings = await self._infer(request)

        def finish() -> bytes:
            mask = _timed(timings, "merge", lambda: self._mask(prep, fwd))
            return _timed(timings, "encode", lambda: encode_mask(mask))

        content = await self._cpu(finish)
        timings["total"] = _ms(total)
        return self._image_response(content, "png", fwd, timings)

    @api.post("/predict", openapi_extra=IMAGE_BODY, response_model=PredictResponse, responses=ERRORS)
    async def predict(self, request: Request, format: str | None = FORMAT_QUERY,
                      vividness: float = VIVIDNESS_QUERY) -> PredictResponse:
        """Colorized image and mask, base64 in JSON, with per-stage timings in milliseconds."""
        total = time.perf_counter()
        fmt = choose_format(format, None)
        prep, fwd, timings = await self._infer(request, vividness)

        def finish() -> tuple[bytes, bytes, float]:
            rgb, mask = _timed(timings, "merge", lambda: (self._colorized(prep, fwd), self._mask(prep, fwd)))
            color_bytes, mask_bytes = _timed(timings, "encode", lambda: (self._encode(rgb, fmt), encode_mask(mask)))
            foreground = float(np.count_nonzero(mask == 255) / mask.size) if self.colorizer.n_classes == 2 \
                else float(np.count_nonzero(mask) / mask.size)
            return color_bytes, mask_bytes, foreground

        color_bytes, mask_bytes, foreground = await self._cpu(finish)
        timings["total"] = _ms(total)
        height, width = prep.l8.shape
        return PredictResponse(width=width, height=height, colorized_format=fmt, colorized=_b64(color_bytes),
                               mask=_b64(mask_bytes), foreground_fraction=round(foreground, 6),
                               batch_size=fwd.batch_size, timings_ms=Timings(**timings))

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness and the loaded model's settings."""
        return {
            "status": "ok",
            "version": __version__,
            "checkpoint": self.settings.checkpoint,
            **self.colorizer.predictor.describe(),
            "torch_threads": self.model_threads,
            "max_batch_size": self.settings.max_batch_size,
            "batch_wait_timeout_s": self.settings.batch_wait_timeout_s,
            "max_body_bytes": self.settings.max_body_bytes,
            "max_pixels": self.settings.max_pixels,
            "refine": self.settings.refine,
            "tta": self.settings.tta,
            "vividness": {"default": DEFAULT_VIVIDNESS, "range": list(VIVIDNESS_RANGE),
                          "applies": self.colorizer.predictor.describe().get("color_head") == "bins"},
        }

    @api.get("/stats")
    async def stats(self) -> dict[str, Any]:
        """Batch sizes formed by the replica that answers (one replica's view when there are several), with the
        replica's name and the Ray node it runs on."""
        import ray

        return {"replica": serve.get_replica_context().replica_tag, "node_id": ray.get_runtime_context().get_node_id(),
                **self.stats.snapshot()}

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(self) -> HTMLResponse:
        """The web page: choose an image, see original, colorized and mask, download the result."""
        return HTMLResponse(self.page)
