"""`semcolor bench data`: pairs/s of the read pipeline, Ray Data vs single-process Pillow, local and S3.

Reads every pair of a dataset root (``images/`` + ``masks/``, default ECSSD beside the repo) at
``--size``, from the local folder and, with ``--s3``, from a moto S3 server this benchmark starts on
127.0.0.1 (a real HTTP endpoint; the pairs are uploaded first). Methods per source:

- ``pillow_plain``: one process, ``Image.open -> convert -> resize`` (no JPEG draft), the usual loop;
- ``pillow_semcolor``: one process, the pipeline's own per-pair code (:func:`semcolor.core.decode.decode_pair`);
  both loops run in a child process at the niceness Ray gives its workers (15), for a fair share of CPU;
- ``ray_data``: :func:`semcolor.data.pipeline.load_dataset` (decode in Ray tasks, materialized), after a warm-up.

Measured: wall seconds and pairs/s of each method; CPU ms per pair, which for the loops is the loop process's
whole CPU time and for Ray the whole local Ray tree (GCS, raylet, workers, agents) plus the driver over the
same timed interval (:mod:`semcolor.benchmarks._cpu`; reported unavailable, with the reason, when Ray's
processes are not all on this host); the decode tasks' own CPU (Ray Data's stats) is reported beside it.
Each method runs :data:`ROUNDS` times, interleaved; the table shows the fastest round of each, the JSON all
of them with the load average before each. Ratio: ``x plain`` = a method's fastest pairs/s / ``pillow_plain``'s
fastest pairs/s on the same source. Also reports object-store bytes per row of the materialized dataset.
Prints a table, writes ``OUT/data.json`` (with the environment block of :mod:`semcolor.benchmarks._report`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from PIL import Image

from semcolor.benchmarks._cpu import ray_cpu_sampler
from semcolor.benchmarks._local import moto_s3, upload
from semcolor.benchmarks._report import write_result
from semcolor.core import storage
from semcolor.core.decode import decode_pair
from semcolor.data import pairs as data
from semcolor.data.pipeline import load_dataset
from semcolor.ray_env import init_ray

if TYPE_CHECKING:
    from ray.data._internal.stats import DatasetStatsSummary, OperatorStatsSummary

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ecssd"
BUCKET = "semcolor-bench"
ROUNDS = 2
"""Each method runs this many times, interleaved; the table shows the fastest (the machine may be shared)."""


def _plain_pillow(image: bytes, mask: bytes, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The loop people write first: full decode, convert, resize."""
    rgb = Image.open(io.BytesIO(image)).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    m = Image.open(io.BytesIO(mask)).convert("L").resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(rgb), np.asarray(m)


def _semcolor_pillow(image: bytes, mask: bytes, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The pipeline's own per-pair decode, in one process."""
    sample = decode_pair(image, mask, size)
    return sample.rgb, sample.mask


def _loop(pairs: pa.Table, size: int, fn: Callable[[bytes, bytes, int], tuple]) -> dict:
    """Single-process read + decode + resize of every pair; wall and CPU seconds (the whole process)."""
    start, cpu = time.perf_counter(), time.process_time()
    for image_url, mask_url in zip(pairs["image"].to_pylist(), pairs["mask"].to_pylist()):
        fn(storage.read_bytes(image_url), storage.read_bytes(mask_url), size)
    seconds = time.perf_counter() - start
    return {"pairs": pairs.num_rows, "seconds": seconds, "cpu_seconds": time.process_time() - cpu,
            "cpu_scope": "the loop's process", "pairs_per_s": pairs.num_rows / seconds}


def _ray(pairs: pa.Table, size: int) -> dict:
    """Warm up the workers on a few pairs, then time load_dataset over all of them; CPU seconds of the whole
    Ray tree + driver over that interval (None, with the reason in ``cpu_scope``, when it cannot be counted)."""
    load_dataset(pairs.slice(0, 64), size)
    sampler, scope = ray_cpu_sampler()
    if sampler is not None:
        sampler.start()
    start = time.perf_counter()
    ds, report = load_dataset(pairs, size)
    seconds = time.perf_counter() - start
    cpu = sampler.stop() if sampler is not None else None
    materialized = ds.materialize()
    rows = materialized.count()
    decode = _decode_stats(materialized.get_stats_summary())
    if decode is None or decode.cpu_time is None or decode.wall_time is None:
        raise RuntimeError("Ray Data's stats summary has no decode_batch operator times; did Ray's stats API change?")
    return {"pairs": report.rows, "seconds": seconds, "pairs_per_s": report.rows / seconds,
            "cpu_seconds": cpu, "cpu_scope": scope, "decode_task_cpu_seconds": decode.cpu_time.sum,
            "decode_task_wall_seconds": decode.wall_time.sum, "errors": report.counts(),
            "bytes_per_row": materialized.size_bytes() / max(rows, 1)}


def _decode_stats(summary: "DatasetStatsSummary") -> "OperatorStatsSummary | None":
    """The decode_batch operator's stats in a dataset's lineage (Ray Data's DeveloperAPI stats summary)."""
    for op in summary.operators_stats:
        if "decode_batch" in op.operator_name:
            return op
    for parent in summary.parents:
        found = _decode_stats(parent)
        if found is not None:
            return found
    return None


def _upload(pairs: pa.Table, root: Path, prefix: str) -> pa.Table:
    """Copy every pair under ``prefix`` keeping relative paths; the same pairs with S3 URLs."""
    images = upload(pairs["image"].to_pylist(), str(root), prefix)
    masks = upload(pairs["mask"].to_pylist(), str(root), prefix)
    return pa.table({"key": pairs["key"], "image": images, "mask": masks}, schema=data.PAIR_SCHEMA)


def _worker_niceness() -> int:
    """The niceness Ray gives its worker processes (the raylet's ``worker_niceness``, 15 by default)."""
    import ray

    @ray.remote(num_cpus=0)
    def niceness() -> int:
        return os.nice(0)

    return ray.get(niceness.remote())


def _measure(source: str, pairs: pa.Table, size: int, rounds: int) -> list[dict]:
    """Every method ``rounds`` times, interleaved, so a busy machine slows all methods alike.

    The single-process loops run in one child process at the niceness of Ray's workers, so that
    on a shared machine both sides compete for CPU on equal terms.
    """
    nice = _worker_niceness()
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding Ray and server threads
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=os.nice, initargs=(nice,)) as child:
        methods = (("pillow_plain", lambda: child.submit(_loop, pairs, size, _plain_pillow).result()),
                   ("pillow_semcolor", lambda: child.submit(_loop, pairs, size, _semcolor_pillow).result()),
                   ("ray_data", lambda: _ray(pairs, size)))
        rows = []
        for round_ in range(rounds):
            for method, run in methods:
                load = os.getloadavg()[0]
                result = {"source": source, "method": method, "round": round_, "niceness": nice,
                          "load_average_before": load, **run()}
                print(f"  {source:6s} {method:16s} round {round_}: {result['pairs_per_s']:8.1f} pairs/s "
                      f"(load average {load:.1f})", flush=True)
                rows.append(result)
    return rows


def _best(results: list[dict]) -> list[dict]:
    """The fastest round of each (source, method), in first-seen order, with ``x_plain``: its pairs/s over
    pillow_plain's fastest on the same source."""
    best: dict[tuple[str, str], dict] = {}
    for r in results:
        key = (r["source"], r["method"])
        if key not in best or r["pairs_per_s"] > best[key]["pairs_per_s"]:
            best[key] = r
    return [{**r, "x_plain": r["pairs_per_s"] / best[(r["source"], "pillow_plain")]["pairs_per_s"]}
            for r in best.values()]


def _ms_per_pair(seconds: float | None, pairs: int) -> str:
    return f"{1000 * seconds / pairs:13.2f}" if seconds is not None and pairs else f"{'n/a':>13s}"


def _print_table(best: list[dict]) -> None:
    """The fastest round of each method, with ``x_plain`` and CPU per pair."""
    print(f"\n{'source':8s}{'method':18s}{'pairs':>7s}{'seconds':>10s}{'pairs/s':>10s}{'x plain':>9s}"
          f"{'CPU ms/pair':>13s}{'task ms/pair':>13s}{'bytes/row':>12s}")
    for r in best:
        per_row = f"{r['bytes_per_row']:12,.0f}" if "bytes_per_row" in r else f"{'-':>12s}"
        task = _ms_per_pair(r["decode_task_cpu_seconds"], r["pairs"]) if "decode_task_cpu_seconds" in r \
            else f"{'-':>13s}"
        print(f"{r['source']:8s}{r['method']:18s}{r['pairs']:7d}{r['seconds']:10.2f}{r['pairs_per_s']:10.1f}"
              f"{r['x_plain']:9.2f}{_ms_per_pair(r['cpu_seconds'], r['pairs'])}{task}"
              f"{per_row}")
    print("x plain: fastest round's pairs/s / pillow_plain's fastest on the same source")
    print("CPU ms/pair: whole CPU time per pair: the loop's process; for ray_data the whole Ray tree + driver "
          "over the timed interval (robust to a busy machine). task ms/pair: Ray's decode tasks alone")
    for scope in {r["cpu_scope"] for r in best if r["method"] == "ray_data"}:
        print(f"ray_data CPU ms/pair {scope if scope.startswith('unavailable') else 'counts ' + scope}")


def run(args: argparse.Namespace) -> int:
    """`semcolor bench data [--data ROOT] [--s3] [--limit N] [--size S] [--out DIR]`; 0 on success."""
    import ray

    root = Path(args.data) if args.data else DEFAULT_DATA
    if not (root / "images").is_dir() or not (root / "masks").is_dir():
        print(f"no images/ and masks/ under {root}; pass --data ROOT (e.g. ../shared/datasets/ecssd)")
        return 2
    pairs = data.load_pairs(images=str(root / "images"), masks=str(root / "masks"), limit=args.limit)
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(moto_s3(BUCKET))[0] if args.s3 else None
        init_ray(args.address, args.num_cpus)
        ray.data.DataContext.get_current().enable_progress_bars = False
        print(f"{pairs.num_rows} pairs from {root} at {args.size}x{args.size}; "
              f"Ray CPUs {ray.cluster_resources().get('CPU', 0):g}, load average {os.getloadavg()[0]:.1f}")
        results = _measure("local", pairs, args.size, ROUNDS)
        upload_s = None
        if endpoint is not None:
            start = time.perf_counter()
            s3_pairs = _upload(pairs, root, f"s3://{BUCKET}/{root.name}")
            upload_s = time.perf_counter() - start
            results += _measure("s3", s3_pairs, args.size, ROUNDS)
        ray_cpus = ray.cluster_resources().get("CPU", 0)
    best = _best(results)
    _print_table(best)
    write_result(args.out, "data", {
        "benchmark": "data", "root": str(root), "size": args.size, "pairs": pairs.num_rows, "ray_cpus": ray_cpus,
        "s3_endpoint": endpoint, "s3_upload_seconds": upload_s, "rounds": ROUNDS,
        "ratio": "x_plain = pairs_per_s of a method's fastest round / pillow_plain's fastest, same source",
        "cpu_seconds": "loops: the loop's whole process; ray_data: see cpu_scope (null when it cannot be counted)",
        "best": best,
        "results": results})
    return 0
