"""`semcolor bench serve`: latency and throughput of the Serve endpoint, batched vs unbatched, vs the model bound.

On a local Ray the app is deployed twice on 127.0.0.1 and a free port, side by side: ``/batched``
(``max_batch_size=--batch-size``) and ``/unbatched`` (``max_batch_size=1``), each one replica with ``--threads``
torch threads, serving a random-weight model (architecture: ModelConfig's default; resolution ``--size``).
For each source size (256x256 and 1024x1024 = 1 MP grayscale JPEGs of a real photo) and concurrency
(1, 8, 32), a bounded closed loop of POST /colorize requests (PNG back; ``max(24, 3 x concurrency)``
requests, or ``max(concurrency, --limit)`` with ``--limit``, at most ``SEMCOLOR_BENCH_CELL_SECONDS`` = 60 s)
runs against each mode in turn, the order flipping at every concurrency (batched, unbatched | unbatched,
batched | ...), so load from elsewhere falls on both alike. Measured per cell: latency p50/p95/p99, images/s,
the mean batch formed and ``busy``, the fraction of the cell's wall time the replica's forward was running
(both from the replica's /stats; near 1, the server is model-bound).

The bound: ``Colorizer.predict`` images/s in this process at the same size and threads, at batch 1 (the
unbatched mode's bound) or ``--batch-size`` (the batched one's), the best of :data:`BOUND_ROUNDS` rounds of at least
:data:`BOUND_SECONDS` s after one untimed warm-up call (:mod:`semcolor.benchmarks._bound`), measured while the apps
idle immediately before and immediately after each cell (a bound between two cells of the same mode serves both).
Ratio: a cell's efficiency = its images/s / the mean of the two bounds around it. Also reported: per-image decode /
preprocess / merge / encode ms in this process (one torch thread, as in the replica's request threads), which the
bound leaves out. The load generator shares the machine's cores with the server; each cell records the 1-minute
load average.

Prints a table and writes ``OUT/serve.json`` (with the environment block of :mod:`semcolor.benchmarks._report`).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from semcolor.benchmarks._bound import predict_bound, statistic
from semcolor.benchmarks._local import free_port
from semcolor.benchmarks._report import stage_seconds, write_result
from semcolor.core.colorizer import Colorizer
from semcolor.model.inference import load_colorizer

CONCURRENCY = (1, 8, 32)
SOURCE_SIDES = (256, 1024)  # 1024 x 1024 = 1 MP
APP_NAME = "semcolor-bench"
BATCH_WAIT_S = 0.005
BOUND_ROUNDS = 2
BOUND_SECONDS = 1.0
"""A bound is the best of BOUND_ROUNDS rounds of at least BOUND_SECONDS each (:mod:`semcolor.benchmarks._bound`)."""
DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ecssd"


@dataclass
class Cell:
    """One (source size, mode, concurrency) measurement."""

    source: str
    mode: str
    max_batch_size: int
    concurrency: int
    requests: int
    seconds: float
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float
    model_busy: float  # fraction of the wall time the replica's forward was running
    load_average: float  # 1-minute load average at the end of the cell
    bound_before: float = 0.0
    bound_after: float = 0.0
    bound_images_per_s: float = 0.0  # mean of bound_before and bound_after
    efficiency: float = 0.0  # images_per_s / bound_images_per_s


def source_jpegs(data_root: Path | None) -> dict[str, bytes]:
    """Grayscale JPEGs (quality 90) of one real photo at each side in SOURCE_SIDES: ECSSD's first image when
    the folder exists, else scikit-image's astronaut."""
    root = data_root if data_root is not None else DEFAULT_DATA
    images = sorted((root / "images").glob("*.jpg")) if (root / "images").is_dir() else []
    if images:
        photo, origin = Image.open(images[0]).convert("L"), str(images[0])
    else:
        from skimage import data

        photo, origin = Image.fromarray(data.astronaut()).convert("L"), "skimage.data.astronaut"
    print(f"source photo: {origin}")
    out = {}
    for side in SOURCE_SIDES:
        buf = io.BytesIO()
        photo.resize((side, side), Image.Resampling.BICUBIC).save(buf, format="JPEG", quality=90)
        out[f"{side}x{side}"] = buf.getvalue()
    return out


def stage_costs(colorizer: Colorizer, jpeg: bytes, reps: int = 5) -> dict[str, float]:
    """Median ms per image of the stages the model bound leaves out: decode, preprocess, merge, encode (PNG)."""
    times = stage_seconds(colorizer, jpeg, reps)
    return {k: round(float(np.median(v)) * 1000.0, 2) for k, v in times.items()}


async def _closed_loop(url: str, body: bytes, concurrency: int, requests: int,
                       max_seconds: float) -> tuple[list[float], float]:
    """``concurrency`` workers post ``body`` until ``requests`` are done or ``max_seconds`` pass.

    Returns (latencies in ms, wall seconds). Any non-200 answer raises: a benchmark of errors is no benchmark.
    """
    import httpx

    latencies: list[float] = []
    issued = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal issued
            while issued < requests and time.perf_counter() - start < max_seconds:
                issued += 1
                t0 = time.perf_counter()
                r = await client.post(url, content=body, headers={"Content-Type": "image/jpeg"})
                if r.status_code != 200 or r.headers.get("content-type") != "image/png":
                    raise RuntimeError(f"POST {url}: {r.status_code} {r.text[:200]}")
                latencies.append((time.perf_counter() - t0) * 1000.0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - start


def _stats(base: str) -> dict:
    import httpx

    return httpx.get(f"{base}/stats", timeout=60).json()


def _mean_batch(before: dict, after: dict) -> float:
    batches = after["batches"] - before["batches"]
    return (after["images"] - before["images"]) / batches if batches else 0.0


def measure_cell(base: str, source: str, body: bytes, mode: str, max_batch: int, concurrency: int,
                 limit: int | None, max_seconds: float) -> Cell:
    """One bounded closed loop against the app at ``base``; the caller fills in the bounds around it."""
    requests = max(24, 3 * concurrency) if limit is None else max(concurrency, limit)
    before = _stats(base)
    lat, wall = asyncio.run(_closed_loop(f"{base}/colorize", body, concurrency, requests, max_seconds))
    after = _stats(base)
    busy = (after["model_seconds"] - before["model_seconds"]) / wall
    p50, p95, p99 = (float(np.percentile(lat, q)) for q in (50, 95, 99))
    return Cell(source, mode, max_batch, concurrency, len(lat), round(wall, 2), round(len(lat) / wall, 2),
                round(p50, 1), round(p95, 1), round(p99, 1), round(_mean_batch(before, after), 2), round(busy, 3),
                round(os.getloadavg()[0], 2))


def measure_with_bounds(cells: list[tuple[str, bytes, str, int, int]], measure: Callable[..., Cell],
                        bound: Callable[[int], float]) -> list[Cell]:
    """Each of ``cells`` (source, body, mode, max_batch, concurrency) measured by ``measure`` between two
    ``bound(max_batch)`` calls made immediately before and after it; a bound taken right after a cell also
    serves as the next cell's bound before when that cell has the same batch size (nothing ran in between)."""
    out: list[Cell] = []
    last: tuple[int, float] | None = None  # (max_batch, images/s) of the bound measured last
    for source, body, mode, max_batch, conc in cells:
        before = last[1] if last is not None and last[0] == max_batch else bound(max_batch)
        cell = measure(source, body, mode, max_batch, conc)
        after = bound(max_batch)
        last = (max_batch, after)
        mean = (before + after) / 2
        cell.bound_before, cell.bound_after = round(before, 2), round(after, 2)
        cell.bound_images_per_s, cell.efficiency = round(mean, 2), round(cell.images_per_s / mean, 3)
        print(f"  {source:>9} {mode:>9} c={conc:<3} n={cell.requests:<4} {cell.images_per_s:7.2f} img/s  "
              f"p50 {cell.p50_ms:8.1f}  p95 {cell.p95_ms:8.1f}  p99 {cell.p99_ms:8.1f} ms  "
              f"batch {cell.mean_batch:5.2f}  busy {cell.model_busy:.2f}  bound {before:.2f}/{after:.2f}  "
              f"eff {cell.efficiency:.3f}  load {cell.load_average:.1f}", flush=True)
        out.append(cell)
    return out


def format_table(cells: list[Cell]) -> str:
    """The cells as a text table with a footnote on the bound."""
    head = (f"{'source':>9} {'mode':>9} {'conc':>4} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
            f"{'img/s':>7} {'batch':>5} {'busy':>5} {'bound b/a':>13} {'eff':>6}")
    rows = [head, "-" * len(head)]
    for c in cells:
        rows.append(f"{c.source:>9} {c.mode:>9} {c.concurrency:>4} {c.requests:>4} {c.p50_ms:>8.1f} {c.p95_ms:>8.1f} "
                    f"{c.p99_ms:>8.1f} {c.images_per_s:>7.2f} {c.mean_batch:>5.2f} {c.model_busy:>5.2f} "
                    f"{f'{c.bound_before:.2f}/{c.bound_after:.2f}':>13} {c.efficiency:>6.3f}")
    rows.append("bound b/a: model-only images/s measured just before / after the cell (batch 1 for unbatched, "
                "the max batch for batched); eff = img/s / their mean")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    """Entry of ``semcolor bench serve`` (flags: --size, --batch-size, --threads, --limit, --data, --out,
    --address, --num-cpus)."""
    import ray
    from ray import serve

    from semcolor.model import checkpoint
    from semcolor.model.config import ModelConfig
    from semcolor.model.network import build_model
    from semcolor.serve.builder import build_app

    threads, size, batch = int(args.threads), int(args.size), int(args.batch_size)
    max_seconds = float(os.environ.get("SEMCOLOR_BENCH_CELL_SECONDS", "60"))
    sources = source_jpegs(Path(args.data) if args.data else None)

    with tempfile.TemporaryDirectory(prefix="semcolor-bench-serve-") as tmp:
        config = ModelConfig(input_size=size)
        ckpt = checkpoint.save(build_model(config), config, str(Path(tmp) / "ckpt"))
        colorizer = load_colorizer(ckpt, device="cpu", size=size, backend=args.backend, threads=threads)
        torch.set_num_threads(1)  # as the replica's per-request threads
        backend = colorizer.predictor.describe()["backend"]
        stages = {name: stage_costs(colorizer, body) for name, body in sources.items()}
        torch.set_num_threads(threads)  # as the replica's forward thread
        for name, cost in stages.items():
            print(f"per-image stages at {name} (this process): {cost} ms")
        modes = {"batched": batch, "unbatched": 1}
        bounds: list[dict] = []

        def bound(max_batch: int) -> float:
            """The model-only bound at ``max_batch`` now, recorded with every round's rate and the load average."""
            measured = predict_bound(colorizer, max_batch, BOUND_ROUNDS, BOUND_SECONDS)
            bounds.append({"batch": max_batch, "images_per_s": round(measured.images_per_s, 2),
                           "round_images_per_s": [round(r.images_per_s, 2) for r in measured.rounds],
                           "load_average": round(os.getloadavg()[0], 2)})
            return measured.images_per_s

        started = not ray.is_initialized()
        if started:
            if args.address:
                ray.init(address=args.address)
            else:  # both apps' replicas reserve `threads` CPUs; only one of them works at a time
                ray.init(address="local", num_cpus=args.num_cpus or 2 * threads, include_dashboard=False,
                         log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})

        def measure(source: str, body: bytes, mode: str, max_batch: int, conc: int) -> Cell:
            """One cell against the app of ``mode``."""
            return measure_cell(f"http://127.0.0.1:{port}/{mode}", source, body, mode, max_batch, conc, args.limit,
                                max_seconds)

        cells: list[Cell] = []
        try:
            # Both apps side by side (route prefixes /batched, /unbatched), their cells alternating, so other
            # load on the machine falls on both alike.
            for mode, max_batch in modes.items():
                serve.run(build_app({"checkpoint": ckpt, "size": size, "max_batch_size": max_batch,
                                     "batch_wait_timeout_s": BATCH_WAIT_S, "num_cpus": threads,
                                     "torch_threads": threads, "max_ongoing_requests": 64,
                                     "backend": args.backend}),
                          name=f"{APP_NAME}-{mode}", route_prefix=f"/{mode}")
            print(f"model-only bound ({config.arch} at {size}x{size}, {threads} threads) measured before and after "
                  "every cell", flush=True)
            flip = False
            for source, body in sources.items():
                for mode in modes:  # warm-up: cache-cold paths, connections
                    asyncio.run(_closed_loop(f"http://127.0.0.1:{port}/{mode}/colorize", body, 8, 8, max_seconds))
                plan = []
                for conc in CONCURRENCY:
                    order = list(modes.items())[::-1] if flip else list(modes.items())
                    plan += [(source, body, mode, max_batch, conc) for mode, max_batch in order]
                    flip = not flip
                cells += measure_with_bounds(plan, measure, bound)
        finally:
            for mode in modes:
                serve.delete(f"{APP_NAME}-{mode}")
            if started:
                serve.shutdown()
                ray.shutdown()

    print(f"backend: {backend}")
    print(format_table(cells))
    write_result(args.out, "serve", {
        "benchmark": "serve", "arch": ModelConfig().arch, "model_size": size, "threads": threads,
        "backend": backend,
        "max_batch_size": batch, "batch_wait_timeout_s": BATCH_WAIT_S, "output": "png", "input": "grayscale JPEG q90",
        "ratio": "efficiency = a cell's images/s / the mean of the model-only bounds (batch 1 for unbatched, "
                 "max_batch_size for batched) measured immediately before and after that cell",
        "bound_statistic": statistic(BOUND_ROUNDS, BOUND_SECONDS),
        "bounds": bounds, "stage_ms": stages, "cells": [asdict(c) for c in cells]})
    return 0
