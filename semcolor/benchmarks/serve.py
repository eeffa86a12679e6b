"""`semcolor bench serve`: latency and throughput of the Serve endpoint, batched vs unbatched, vs the model bound.

On a local Ray the app is deployed twice on 127.0.0.1 and a free port, side by side: ``/batched``
(``max_batch_size=--batch-size``) and ``/unbatched`` (``max_batch_size=1``), each one replica with ``--threads``
torch threads, serving a random-weight model (architecture: ModelConfig's default; resolution ``--size``).
For each source size (256x256 and 1024x1024 = 1 MP grayscale JPEGs of a real photo) and concurrency
(1, 8, 32), a bounded closed loop of POST /colorize requests (PNG back) runs against each mode in turn
(interleaved, so load from elsewhere falls on both alike) and measures latency p50/p95/p99 and images/s.
Batch sizes formed come from the replica's /stats.

The bound: ``Colorizer.predict`` images/s in this process at the same size and threads, at batch 1 (the
unbatched server's bound) and at ``--batch-size`` (the batched one's), measured while the deployed app idles,
right before and right after that mode's cells, best of several short rounds (other load only lowers it). Efficiency = served images/s / bound. ``busy`` is the fraction of each cell's
wall time the replica's forward was running (from /stats): near 1, the server is model-bound.
Also reported: per-image decode / preprocess / merge / encode ms in this process (one torch thread, as in the
replica's request threads), which the bound leaves out.
The load generator shares the machine's cores with the server; the 1-minute load average is recorded.

Prints a table and writes ``OUT/serve.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from semcolor.benchmarks._local import free_port
from semcolor.colorizer import Colorizer, merge_full_resolution, resize_l8, rgb_to_l8
from semcolor.decode import decode_image
from semcolor.encode import encode_rgb

CONCURRENCY = (1, 8, 32)
SOURCE_SIDES = (256, 1024)  # 1024 x 1024 = 1 MP
APP_NAME = "semcolor-bench"
BATCH_WAIT_S = 0.005
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
    bound_images_per_s: float
    efficiency: float


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


def model_bound(colorizer: Colorizer, batch: int, rounds: int = 5, seconds: float = 1.5) -> float:
    """``Colorizer.predict`` images/s at ``batch`` images of the colorizer's size: the best of ``rounds`` short
    timings (after a warm-up call), so a burst of other load on the machine lowers no more than one round."""
    x = np.random.default_rng(0).integers(0, 256, (batch, colorizer.size, colorizer.size), dtype=np.uint8)
    colorizer.predict(x)
    best = 0.0
    for _ in range(rounds):
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or calls < 1:
            colorizer.predict(x)
            calls += 1
        best = max(best, calls * batch / (time.perf_counter() - start))
    return best


def stage_costs(colorizer: Colorizer, jpeg: bytes, reps: int = 5) -> dict[str, float]:
    """Median ms per image of the stages the model bound leaves out: decode, preprocess, merge, encode (PNG)."""
    times: dict[str, list[float]] = {"decode": [], "preprocess": [], "merge": [], "encode": []}
    ab8 = np.zeros((2, colorizer.size, colorizer.size), np.int8)
    for _ in range(reps):
        t0 = time.perf_counter()
        rgb = decode_image(jpeg)
        t1 = time.perf_counter()
        l8 = rgb_to_l8(rgb)
        resize_l8(l8, colorizer.size)
        t2 = time.perf_counter()
        out = merge_full_resolution(l8, ab8)
        t3 = time.perf_counter()
        encode_rgb(out, "png")
        t4 = time.perf_counter()
        for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[key].append(seconds * 1000.0)
    return {k: round(float(np.median(v)), 2) for k, v in times.items()}


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
    """One bounded closed loop against the app at ``base``; the bound is filled in afterwards."""
    requests = max(24, 3 * concurrency) if limit is None else max(concurrency, limit)
    before = _stats(base)
    lat, wall = asyncio.run(_closed_loop(f"{base}/colorize", body, concurrency, requests, max_seconds))
    after = _stats(base)
    busy = (after["model_seconds"] - before["model_seconds"]) / wall
    p50, p95, p99 = (float(np.percentile(lat, q)) for q in (50, 95, 99))
    cell = Cell(source, mode, max_batch, concurrency, len(lat), round(wall, 2), round(len(lat) / wall, 2),
                round(p50, 1), round(p95, 1), round(p99, 1), round(_mean_batch(before, after), 2), round(busy, 3),
                0.0, 0.0)
    print(f"  {source:>9} {mode:>9} c={concurrency:<3} n={cell.requests:<4} {cell.images_per_s:7.2f} img/s  "
          f"p50 {cell.p50_ms:8.1f}  p95 {cell.p95_ms:8.1f}  p99 {cell.p99_ms:8.1f} ms  "
          f"batch {cell.mean_batch:5.2f}  busy {cell.model_busy:.2f}  load {os.getloadavg()[0]:.1f}", flush=True)
    return cell


def format_table(cells: list[Cell]) -> str:
    head = (f"{'source':>9} {'mode':>9} {'conc':>4} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
            f"{'img/s':>7} {'batch':>5} {'busy':>5} {'bound':>7} {'eff':>6}")
    rows = [head, "-" * len(head)]
    for c in cells:
        rows.append(f"{c.source:>9} {c.mode:>9} {c.concurrency:>4} {c.requests:>4} {c.p50_ms:>8.1f} {c.p95_ms:>8.1f} "
                    f"{c.p99_ms:>8.1f} {c.images_per_s:>7.2f} {c.mean_batch:>5.2f} {c.model_busy:>5.2f} "
                    f"{c.bound_images_per_s:>7.2f} "
                    f"{c.efficiency:>6.3f}")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    """Entry of ``semcolor bench serve`` (flags: --size, --batch-size, --threads, --limit, --data, --out,
    --address, --num-cpus)."""
    import ray
    from ray import serve

    from semcolor import checkpoint
    from semcolor.model import ModelConfig, build_model
    from semcolor.serve import build_app

    threads, size, batch = int(args.threads), int(args.size), int(args.batch_size)
    max_seconds = float(os.environ.get("SEMCOLOR_BENCH_CELL_SECONDS", "60"))
    load_start = os.getloadavg()[0]
    sources = source_jpegs(Path(args.data) if args.data else None)

    with tempfile.TemporaryDirectory(prefix="semcolor-bench-serve-") as tmp:
        config = ModelConfig(input_size=size)
        ckpt = checkpoint.save(build_model(config), config, str(Path(tmp) / "ckpt"))
        colorizer = Colorizer.from_checkpoint(ckpt, device="cpu", size=size)
        torch.set_num_threads(1)  # as the replica's per-request threads
        stages = {name: stage_costs(colorizer, body) for name, body in sources.items()}
        torch.set_num_threads(threads)  # as the replica's forward thread
        for name, cost in stages.items():
            print(f"per-image stages at {name} (this process): {cost} ms")

        started = not ray.is_initialized()
        if started:
            if args.address:
                ray.init(address=args.address)
            else:  # both apps' replicas reserve `threads` CPUs; only one of them works at a time
                ray.init(address="local", num_cpus=args.num_cpus or 2 * threads, include_dashboard=False,
                         log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        modes = {"batched": batch, "unbatched": 1}
        cells: list[Cell] = []
        try:
            # Both apps side by side (route prefixes /batched, /unbatched) and their cells interleaved, so
            # other load on the machine falls on both alike.
            for mode, max_batch in modes.items():
                serve.run(build_app({"checkpoint": ckpt, "size": size, "max_batch_size": max_batch,
                                     "batch_wait_timeout_s": BATCH_WAIT_S, "num_cpus": threads,
                                     "torch_threads": threads, "max_ongoing_requests": 64}),
                          name=f"{APP_NAME}-{mode}", route_prefix=f"/{mode}")
            # The bound is measured while the apps idle, before and after the cells; the better one counts.
            bounds = {mode: model_bound(colorizer, max_batch) for mode, max_batch in modes.items()}
            print(f"model-only bound ({config.arch} at {size}x{size}, {threads} threads): "
                  + ", ".join(f"batch {modes[m]} {v:.2f} img/s" for m, v in bounds.items()), flush=True)
            for source, body in sources.items():
                for mode in modes:  # warm-up: cache-cold paths, connections
                    asyncio.run(_closed_loop(f"http://127.0.0.1:{port}/{mode}/colorize", body, 8, 8, max_seconds))
                for conc in CONCURRENCY:
                    for mode, max_batch in modes.items():
                        cells.append(measure_cell(f"http://127.0.0.1:{port}/{mode}", source, body, mode, max_batch,
                                                  conc, args.limit, max_seconds))
            for mode, max_batch in modes.items():
                after = model_bound(colorizer, max_batch)
                print(f"bound at batch {max_batch} re-measured after the cells: {after:.2f} img/s "
                      f"(before: {bounds[mode]:.2f})")
                bounds[mode] = max(bounds[mode], after)
            for cell in cells:
                cell.bound_images_per_s = round(bounds[cell.mode], 2)
                cell.efficiency = round(cell.images_per_s / bounds[cell.mode], 3)
        finally:
            for mode in modes:
                serve.delete(f"{APP_NAME}-{mode}")
            if started:
                serve.shutdown()
                ray.shutdown()

    table = format_table(cells)
    print(table)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "serve",
        "command": "semcolor bench serve " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                     (("size", size), ("batch_size", batch), ("threads", threads))),
        "arch": ModelConfig().arch, "model_size": size, "threads": threads, "max_batch_size": batch,
        "batch_wait_timeout_s": BATCH_WAIT_S, "output": "png", "input": "grayscale JPEG q90",
        "model_bound_images_per_s": {f"batch_{modes[k]}": round(v, 2) for k, v in bounds.items()},
        "stage_ms": stages,
        "cells": [asdict(c) for c in cells],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "loadavg_1m_start": round(load_start, 2), "loadavg_1m_end": round(os.getloadavg()[0], 2)},
    }
    (out_dir / "serve.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out_dir / 'serve.json'}")
    return 0
