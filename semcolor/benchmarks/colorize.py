"""`semcolor bench colorize`: bulk colorization throughput against its bound, in one run.

Measured with one random-init model (weights=None; speed does not depend on the weights) at ``--size``:

- ``bound``: model-only forward images/s (:meth:`Colorizer.predict`, uint8 in / int8+uint8 out) at
  ``--batch-size`` with ``--threads`` threads in all, on ``--backend`` (the pipeline's actors run the same), the
  better of one process with T threads and T concurrent 1-thread processes: what the pipeline cannot beat on this
  machine. Each is the best of :data:`BOUND_ROUNDS` rounds of at least :data:`BOUND_SECONDS` s
  (:mod:`semcolor.benchmarks._bound`; the T processes run each round together). Measured before and after every
  other measure.
- ``decode`` / ``merge`` / ``encode``: single-thread rates of the CPU stages on the dataset's photos
  (read+decode+full-res L+resize; AB upsample + LAB->RGB at full resolution; PNG encode).
- ``naive``: the sequential loop, one image at a time (batch 1), doing for each image the work the pipeline does
  for each row (:data:`NAIVE_WORK`): no mask, as the pipeline at its default (no ``--masks``).
- ``pipeline local`` (1 actor x T threads, and T actors x 1 thread) and ``pipeline s3`` (the better layout):
  :func:`semcolor.bulk.job.colorize` on every photo, local -> local and s3 -> s3 (a moto server this
  benchmark starts as a subprocess on 127.0.0.1; photos uploaded first); ``pipeline s3 latency``: the same
  through a proxy that holds every request :data:`S3_LATENCY_S` (a real object store's time to first byte,
  :mod:`semcolor.benchmarks._latency_proxy`). ``end-to-end`` images/s include Ray
  Data start-up and the model actors' start; ``steady`` = rows finished between the 10th and 90th percentile
  of finish time (the records' ``finished_at``), over the time between those two finish times; images/s per
  quarter of the run show whether throughput holds as the count grows.
- time per image by source resolution (0.25, 1, 4, 12 MP), stage by stage, every stage on one thread (the model
  too: the bound's statistic with one thread, per image at ``--batch-size``; on the GPU with ``--device cuda``), so
  that ``total_s`` is one thread's seconds per image (:data:`RESOLUTION_ROWS`): only decode, merge and encode
  should grow with pixels; the model runs at model size. ``--rows resolution`` measures this alone (no pipeline,
  no dataset) into ``OUT/colorize-resolution.json``.
- CPU seconds per image (robust on a shared machine, where wall-clock rates move with other load): the
  bound's process time per image vs, during the pipeline, the whole Ray on this host (GCS, raylet, workers,
  actors, agents; found by :mod:`semcolor.benchmarks._cpu`, also with ``--address``) plus the driver. When
  some of Ray's processes are on another host the figure is reported unavailable, with the reason. Per-stage
  CPU comes from Ray Data's stats.

Ratios: ``/bound`` = a measure's images/s over the mean of the two bounds measured just before and after
it (the load moves between measures); ``/naive`` = over the naive loop's images/s, and "adjusted for load"
divides both by their own bounds first; CPU efficiency = the bound's CPU per image / the pipeline's.
``cpu_ceiling``: the bound's CPU per image over that plus the pipeline's decode and merge/encode tasks' CPU per
image (Ray Data's stats): where those stages share the model's cores (CPU-only, as here), the pipeline cannot
pass this fraction of the bound even with no other overhead; on GPU nodes they do not compete with the model.

Thread budget on a small machine: the pipeline runs ``--threads`` model actors of 1 torch thread each (they
reserve (CPUs - 1) / T CPUs from Ray, leaving one CPU slot for the decode / merge / encode tasks, 1 thread
each, which interleave with inference): one T-thread actor loses time whenever a task preempts one of its
OpenMP threads, separate actors do not. Prints a table, writes ``OUT/colorize.json`` (with the load average
before each measurement and the environment block of :mod:`semcolor.benchmarks._report`).

``--device cuda`` (a machine whose torch sees a GPU): the bound and the naive loop run torch on the GPU (bf16
autocast, channels_last and deterministic algorithms, as the bulk job's GPU actors), the bound in this one process
(the processes layout is a CPU thread-budget question); the pipelines run one model actor with one GPU
(``--gpus-per-actor 1``, which also reserves 1 CPU), so every figure is per GPU, and the decode / merge / encode
tasks get the other CPUs. ``cpu_ceiling`` is not computed there (the stages do not share the model's processor).
``--rows resolution --device cuda`` puts the model's share of those rows on the GPU.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from semcolor.benchmarks._bound import Bound, predict_bound, statistic, together
from semcolor.benchmarks._cpu import cpu_seconds, ray_cpu_sampler
from semcolor.benchmarks._latency_proxy import latency_proxy, read_request_log
from semcolor.benchmarks._local import moto_s3, upload
from semcolor.benchmarks._report import stage_seconds, write_result
from semcolor.bulk.records import read_records
from semcolor.bulk.signals import output_signals, source_has_color
from semcolor.core import storage
from semcolor.core.colorizer import Colorizer, merge_full_resolution
from semcolor.core.decode import decode_image
from semcolor.core.encode import encode_rgb
from semcolor.core.lightness import prepare_l8
from semcolor.model import checkpoint
from semcolor.model.config import ModelConfig
from semcolor.model.inference import load_colorizer
from semcolor.model.network import build_model

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ecssd"
BUCKET = "semcolor-bench"
RESOLUTIONS_MP = (0.25, 1.0, 4.0, 12.0)
NAIVE_IMAGES = 60
S3_LATENCY_S = 0.03
"""Seconds the latency proxy holds each S3 request in ``pipeline s3 latency``."""
BOUND_ROUNDS = 4
BOUND_SECONDS = 2.0
"""A bound is the best of BOUND_ROUNDS rounds of at least BOUND_SECONDS each (:mod:`semcolor.benchmarks._bound`)."""
STAGE_IMAGES = 200
NAIVE_WORK = ("per image: read, decode, whether the source has colour, full-resolution L and its model-size copy, "
              "predict (batch 1), merge (AB upsampled per the default refine), the record's quality signals, PNG "
              "encode, write; no mask: the pipeline's work per row at its defaults (no --masks)")
RESOLUTION_ROWS = ("seconds per image on one thread, per stage: decode_s (decode + full-resolution L + resize), "
                   "model_s (Colorizer.predict with one thread at batch_size, per image, from the bound's statistic; "
                   "on the GPU with --device cuda), merge_s (AB upsampled + LAB -> RGB), encode_s (PNG), each CPU "
                   "stage the fastest of its repetitions; total_s = decode_s + model_s + merge_s + encode_s")


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def model_bound(colorizer: Colorizer, batch: int) -> dict:
    """The bound in this process (threads set by the caller): :func:`predict_bound`'s figures and the load."""
    return {**predict_bound(colorizer, batch, BOUND_ROUNDS, BOUND_SECONDS).as_dict(), "load": _load()}


def _bound_process(ckpt: str, size: int, batch: int, backend: str, precision: str, barrier, results) -> None:
    """One 1-thread process of :func:`model_bound_processes` (module level: spawned processes import it); each round
    starts when every process reaches ``barrier``."""
    torch.set_num_threads(1)
    colorizer = load_colorizer(ckpt, device="cpu", size=size, backend=backend, threads=1, precision=precision)
    results.put(predict_bound(colorizer, batch, BOUND_ROUNDS, BOUND_SECONDS, before_round=barrier.wait))


def model_bound_processes(ckpt: str, size: int, batch: int, processes: int, backend: str = "auto",
                          precision: str = "auto") -> dict:
    """The bound of ``processes`` concurrent 1-thread processes (the same total threads as one process with
    ``processes`` threads), their rounds timed together (:func:`together`): figures and the load."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_bound_process, args=(ckpt, size, batch, backend, precision, barrier,
                                                                 results))
             for _ in range(processes)]
    for proc in procs:
        proc.start()
    runs: list[Bound] = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    return {**together(runs).as_dict(), "load": _load()}


def stage_rates(sources: list[str], size: int) -> dict:
    """Single-thread images/s of decode (read + decode + L + resize), merge and PNG encode."""
    blobs = [storage.read_bytes(u) for u in sources]
    start = time.perf_counter()
    l8s, smalls = [], []
    for data in blobs:
        l8, small = prepare_l8(decode_image(data), size)
        l8s.append(l8)
        smalls.append(small)
    decode_s = time.perf_counter() - start
    ab8 = np.random.default_rng(0).integers(-40, 40, (2, size, size)).astype(np.int8)
    start = time.perf_counter()
    merged = [merge_full_resolution(l8, ab8, small) for l8, small in zip(l8s, smalls)]
    merge_s = time.perf_counter() - start
    start = time.perf_counter()
    for rgb in merged:
        encode_rgb(rgb, "png")
    encode_s = time.perf_counter() - start
    n = len(sources)
    mean_mp = float(np.mean([l.size for l in l8s]) / 1e6)
    return {"images": n, "mean_megapixels": mean_mp, "decode_per_s": n / decode_s, "merge_per_s": n / merge_s,
            "encode_per_s": n / encode_s, "load": _load()}


def naive_loop(colorizer: Colorizer, sources: list[str], dst: str) -> dict:
    """One image at a time (batch 1), as the reference project's evaluate does, doing what the pipeline does per
    row (:data:`NAIVE_WORK`)."""
    start, cpu = time.perf_counter(), time.process_time()
    for i, url in enumerate(sources):
        rgb = decode_image(storage.read_bytes(url))
        source_has_color(rgb)
        l8, small = colorizer.prepare(rgb)
        ab8, fg8 = colorizer.predict(small[None])
        rgb = colorizer.merge(l8, ab8[0], small)
        output_signals(small, ab8[0], fg8[0], colorizer.n_classes)
        storage.write_bytes(storage.join(dst, f"{i:05d}.png"), encode_rgb(rgb, "png"))
    elapsed = time.perf_counter() - start
    return {"images": len(sources), "seconds": elapsed, "images_per_s": len(sources) / elapsed,
            "cpu_s_per_image": (time.process_time() - cpu) / len(sources), "load": _load()}


def resolution_costs(ckpt: str, size: int, batch: int, backend: str, device: str, reps: int = 2,
                     precision: str = "auto") -> tuple[dict, list[dict]]:
    """Seconds per image by stage for synthetic JPEG sources of growing size, all on one thread
    (:data:`RESOLUTION_ROWS`): (the model's 1-thread bound, the rows)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        colorizer = load_colorizer(ckpt, device=device, size=size, backend=backend, threads=1, precision=precision)
        bound = {**model_bound(colorizer, batch), "threads": 1, "backend": colorizer.predictor.describe()["backend"]}
        return bound, _resolution_rows(colorizer, 1.0 / bound["images_per_s"], reps)
    finally:
        torch.set_num_threads(previous)


def _resolution_rows(colorizer: Colorizer, per_image_model_s: float, reps: int) -> list[dict]:
    """The rows of :func:`resolution_costs`, the model's seconds per image given."""
    rows = []
    for mp in RESOLUTIONS_MP:
        h = int(round((mp * 1e6 * 3 / 4) ** 0.5))
        w = int(round(mp * 1e6 / h))
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([(xx * 7 // 5) % 256, (yy * 3 // 2) % 256, ((xx + yy) // 3) % 256], -1).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
        jpeg = buf.getvalue()
        del rgb, yy, xx
        stages = stage_seconds(colorizer, jpeg, reps)
        times = {"decode": [d + p for d, p in zip(stages["decode"], stages["preprocess"])],
                 "merge": stages["merge"], "encode": stages["encode"], "refine_guided": stages["refine_guided"],
                 "refine_bilinear": stages["refine_bilinear"]}
        row = {"megapixels": mp, "width": w, "height": h, **{f"{k}_s": min(v) for k, v in times.items()},
               "model_s": per_image_model_s}
        row["total_s"] = row["decode_s"] + row["merge_s"] + row["encode_s"] + per_image_model_s
        rows.append(row)
    return rows


STEADY = "steady = rows finished between the 10th and 90th percentile of finish time"
"""What ``steady`` means, in the table and the JSON: those rows' count over the time between the two finish times
(it leaves out the start-up before the first 10 % and the tail after the last 10 %)."""


def _pipeline(src: str, dst: str, ckpt: str, size: int, batch: int, threads: int, actors: int, backend: str,
              gpus_per_actor: float = 0.0, precision: str = "auto") -> dict:
    """One colorize run (``gpus_per_actor`` > 0: GPU actors, ``threads`` unused); end-to-end and steady images/s
    (:data:`STEADY`), per-quarter rates, object-store bytes/row, CPU seconds per image of the whole Ray on this host
    + driver (None, with the reason in ``cpu_scope``, when Ray's processes cannot all be found here) and per
    stage."""
    from semcolor.bulk.job import colorize

    load = _load()
    sampler, scope = ray_cpu_sampler()
    if sampler is not None:
        sampler.start()
    threads_per_actor = None if gpus_per_actor else threads // actors
    called = time.time()
    summary = colorize(src, dst, ckpt, size=size, batch_size=batch, actors=str(actors), masks=False,  # NAIVE_WORK
                       threads_per_actor=threads_per_actor, gpus_per_actor=gpus_per_actor, backend=backend,
                       precision=precision)
    cpu = sampler.stop() if sampler is not None else None
    records = read_records(dst)
    finished = np.sort(np.asarray(records["finished_at"].to_pylist(), dtype=np.float64))
    n = len(finished)
    i10, i90 = int(0.1 * (n - 1)), int(0.9 * (n - 1))
    span = finished[i90] - finished[i10] if n else 0.0
    steady = (i90 - i10) / span if span > 0 else float("nan")
    quarters = []
    for q in range(4):
        part = finished[q * n // 4:(q + 1) * n // 4]
        quarters.append(len(part) / (part[-1] - part[0]) if len(part) > 1 and part[-1] > part[0] else float("nan"))
    rows = max(1, summary.done + summary.failed)
    returned = time.time()
    return {"actors": actors, "threads_per_actor": threads_per_actor, "gpus_per_actor": gpus_per_actor,
            "images": summary.done, "failed": summary.failed, "seconds": summary.seconds,
            "images_per_s": summary.images_per_s, "steady_p10_p90_images_per_s": steady,
            "steady_p10_p90_rows": i90 - i10, "steady_p10_p90_seconds": span, "quarter_images_per_s": quarters,
            "timeline_s": _timeline(called, finished, returned, summary.seconds),
            "object_store_bytes_per_row": summary.object_store_bytes_per_row, "load": load,
            "cpu_s_per_image": None if cpu is None else cpu / rows, "cpu_scope": scope,
            "stage_cpu_s_per_image": {k: v / rows for k, v in summary.stage_cpu_seconds.items()}}


def _timeline(called: float, finished: np.ndarray, returned: float, job_seconds: float) -> dict[str, float]:
    """Where a run's wall time went (unix times in): ``before_first_row`` from the call to the first row finished
    (planning, actor start-up, the first blocks through every stage), ``rows`` from the first to the last row
    finished, ``after_last_row`` from then to the call's return (the last records written, the run's own checks),
    and ``outside_job`` the part of the call outside the job's ``seconds`` (listing inputs and done keys before it,
    reading the records after)."""
    if not len(finished):
        return {}
    return {"before_first_row": float(finished[0] - called), "rows": float(finished[-1] - finished[0]),
            "after_last_row": float(returned - finished[-1]), "outside_job": float(returned - called - job_seconds)}


def requests_per_image(requests: list[tuple[float, str, str]], images: int) -> dict[str, float]:
    """Requests by method over ``images`` (the latency proxy's log of one run, :func:`read_request_log`)."""
    counts = Counter(method for _, method, _ in requests)
    return {method: counts[method] / max(1, images) for method in sorted(counts)}


def _fmt(v: float | str | None) -> str:
    return f"{v:.2f}" if isinstance(v, float) else "" if v is None else str(v)


def _pipelines(result: dict) -> list[str]:
    return [k for k in result if k.startswith("pipeline_")]


def _print_table(result: dict) -> None:
    """The rates with their ratios, CPU per image, and the per-resolution stage costs."""
    rows: list[tuple[str, float | None, float | str | None, float | str | None]] = []
    for b in result["bounds"]:
        if b["processes"] is None:  # --device cuda
            rows.append((f"bound {b['when']}: 1 process on {result['device']}", b["one_process"]["images_per_s"],
                         None, None))
            continue
        rows.append((f"bound {b['when']}: 1 process x {result['threads']} threads", b["one_process"]["images_per_s"],
                     None, None))
        rows.append((f"bound {b['when']}: {result['threads']} processes x 1 thread", b["processes"]["images_per_s"],
                     None, None))
    s = result["stages"]
    rows += [("decode only (1 thread)", s["decode_per_s"], None, None),
             ("merge only (1 thread)", s["merge_per_s"], None, None),
             ("encode only, png (1 thread)", s["encode_per_s"], None, None)]
    naive = result["naive"]
    rows.append(("naive sequential loop (batch 1, the pipeline's work: no mask)", naive["images_per_s"],
                 naive["per_bound"], 1.0))
    for name in _pipelines(result):
        p = result[name]
        layout = (f"{p['actors']} actor(s) x {p['gpus_per_actor']:g} GPU" if p.get("gpus_per_actor")
                  else f"{p['actors']} actor(s) x {p['threads_per_actor']} thread(s)")
        rows.append((f"{name.replace('_', ' ')} ({layout}):", None, None, None))
        rows.append(("  end-to-end", p["images_per_s"], p["per_bound"], p["per_naive"]))
        rows.append(("  end-to-end, /naive adjusted for load", p["images_per_s"], p["per_bound"],
                     p["per_naive_load_adjusted"]))
        rows.append((f"  {STEADY}", p["steady_p10_p90_images_per_s"], p["steady_p10_p90_per_bound"],
                     p["steady_p10_p90_per_naive"]))
    print(f"\ncolorize benchmark: {result['images']} photos from {result['data']}, model {result['arch']} "
          f"at {result['size']} px on {result['backend']} {result.get('precision', 'fp32')} "
          f"({result.get('device', 'cpu')}), "
          f"{result['ray_cpus']:g} Ray CPUs")
    print("/bound: images/s over the mean of the bounds measured just before and after that measure; "
          "/naive: over the naive loop's images/s")
    print(f"{'measure':<80} {'images/s':>9} {'/bound':>7} {'/naive':>7}")
    for label, rate, rb, rn in rows:
        print(f"{label:<80} {_fmt(rate):>9} {_fmt(rb):>7} {_fmt(rn):>7}")
    print(f"\nCPU seconds per image (robust to other load): model-only bound {result['bound']['cpu_s_per_image']:.3f}, "
          f"naive loop {naive['cpu_s_per_image']:.3f}")
    for name in _pipelines(result):
        p = result[name]
        stages = ", ".join(f"{k} {v:.3f}" for k, v in p["stage_cpu_s_per_image"].items())
        extra = (f"; S3 server (moto, + the proxy with latency; not counted) {p['s3_server_cpu_s_per_image']:.3f}"
                 if "s3_server_cpu_s_per_image" in p else "")
        if p["cpu_s_per_image"] is None:
            print(f"{name}: whole-Ray CPU per image {p['cpu_scope']}; Ray Data tasks by stage: {stages}{extra}")
        else:
            ceiling = ("" if p["cpu_ceiling"] is None
                       else f", ceiling with the CPU stages on the model's cores {p['cpu_ceiling']:.2f}")
            print(f"{name}: {p['cpu_s_per_image']:.3f} (counts {p['cpu_scope']}) -> CPU efficiency "
                  f"{p['cpu_efficiency']:.2f} (bound / pipeline), naive loop / pipeline {p['cpu_vs_naive']:.2f}"
                  f"{ceiling}; Ray Data tasks by stage: {stages}{extra}")
        q = ", ".join(f"{v:.2f}" for v in p["quarter_images_per_s"])
        print(f"{name}: images/s by quarter of the run: {q}; object store "
              f"{p['object_store_bytes_per_row'] / 1e3:.0f} kB/row")
        if p.get("of_local") is not None:
            allows = "" if p["cpu_allows_of_local"] is None else (
                f"; the CPU (its own + the S3 server's) allows {p['cpu_allows_of_local']:.2f}")
            print(f"{name}: {p['of_local']:.2f} of local -> local's pace (each over its bound){allows}")
        if p.get("requests_per_image"):
            counts = ", ".join(f"{method} {n:.2f}" for method, n in p["requests_per_image"].items())
            print(f"{name}: requests per image: {counts}")
        if p.get("timeline_s"):
            t = p["timeline_s"]
            print(f"{name}: seconds before the first row finished {t['before_first_row']:.1f}, first to last row "
                  f"{t['rows']:.1f}, after the last row {t['after_last_row']:.1f} (outside the job's own seconds "
                  f"{t['outside_job']:.1f})")
    _print_resolution(result["resolution"])


def _print_resolution(rows: list[dict]) -> None:
    """Seconds per image by source resolution, stage by stage, one thread each."""
    print("\nseconds per image by source size, every stage on one thread (the model too)")
    print(f"{'source MP':>9} {'size':>11} {'decode s':>9} {'model s':>8} {'merge s':>8} {'encode s':>9} "
          f"{'merge/decode':>12} {'total s':>8} {'guided ms/MP':>13} {'bilinear ms/MP':>15}")
    for r in rows:
        print(f"{r['megapixels']:>9.2f} {r['width']:>5}x{r['height']:<5} {r['decode_s']:>9.3f} {r['model_s']:>8.3f} "
              f"{r['merge_s']:>8.3f} {r['encode_s']:>9.3f} {r['merge_s'] / r['decode_s']:>12.2f} {r['total_s']:>8.3f} "
              f"{1e3 * r['refine_guided_s'] / r['megapixels']:>13.1f} "
              f"{1e3 * r['refine_bilinear_s'] / r['megapixels']:>15.1f}")


def _ratios(result: dict, around: dict[str, float]) -> None:
    """Each measure's rate over the mean bound around it (``per_bound``) and over the naive loop's rate, plain
    (``per_naive``) and with both first divided by their own bounds (``per_naive_load_adjusted``); CPU ratios."""
    naive = result["naive"]
    naive["per_bound"] = naive["images_per_s"] / around["naive"]
    bound_cpu = result["bound"]["cpu_s_per_image"]
    for name in _pipelines(result):
        p = result[name]
        cpu = p["cpu_s_per_image"]
        p.update(per_bound=p["images_per_s"] / around[name], per_naive=p["images_per_s"] / naive["images_per_s"],
                 per_naive_load_adjusted=(p["images_per_s"] / around[name]) / naive["per_bound"],
                 steady_p10_p90_per_bound=p["steady_p10_p90_images_per_s"] / around[name],
                 steady_p10_p90_per_naive=p["steady_p10_p90_images_per_s"] / naive["images_per_s"],
                 cpu_efficiency=None if cpu is None else bound_cpu / cpu,
                 cpu_vs_naive=None if cpu is None else naive["cpu_s_per_image"] / cpu)
        stage_cpu = sum(v for k, v in p["stage_cpu_s_per_image"].items()
                        if "decode_rows" in k or "merge_encode_write" in k)
        p["cpu_ceiling"] = None if p.get("gpus_per_actor") else bound_cpu / (bound_cpu + stage_cpu)
    for name in ("pipeline_s3", "pipeline_s3_latency"):
        if name in result:
            result[name].update(against_local(result, result[name]))


def against_local(result: dict, p: dict) -> dict[str, float | None]:
    """An object-store pipeline ``p`` beside the local -> local one with as many actors: ``of_local``, its rate
    over the bound over local's over the bound; ``cpu_allows_of_local``, local's CPU per image over ``p``'s plus
    the S3 server's (moto, and the latency proxy, on the same cores here): the share of local's pace the cores
    leave it, whatever the requests' latency. None where a CPU figure is missing (a GPU node)."""
    local = next((result[n] for n in ("pipeline_local", "pipeline_local_1_actor")
                  if n in result and result[n]["actors"] == p["actors"]), None)
    if local is None:
        return {"of_local": None, "cpu_allows_of_local": None}
    cpu, local_cpu = p.get("cpu_s_per_image"), local.get("cpu_s_per_image")
    allows = (None if cpu is None or local_cpu is None
              else local_cpu / (cpu + p.get("s3_server_cpu_s_per_image", 0.0)))
    return {"of_local": p["per_bound"] / local["per_bound"], "cpu_allows_of_local": allows}


def bench_device(device: str) -> str:
    """``--device`` (cpu or cuda) checked before any work: cuda only where this process's torch can use a GPU."""
    from semcolor.ray_env import why_no_cuda

    why = why_no_cuda() if device == "cuda" else None
    if why is not None:
        raise ValueError(f"--device cuda: {why}; run it on a GPU machine or drop --device cuda")
    return device


def _gpu_as_the_actors(device: str) -> None:
    """On CUDA, the settings the bulk job's GPU actors run with (:func:`make_deterministic`), so that the bound
    compares like with like."""
    if device == "cuda":
        from semcolor.model.torch_predictor import make_deterministic

        make_deterministic()


def run_resolution(args: argparse.Namespace, device: str = "cpu") -> int:
    """`semcolor bench colorize --rows resolution`: the per-resolution stage costs alone (decode, model, merge,
    encode at 0.25 / 1 / 4 / 12 MP, one thread each: :data:`RESOLUTION_ROWS`; ``--threads`` is not used), no
    pipeline; a table and ``OUT/colorize-resolution.json``."""
    with tempfile.TemporaryDirectory(prefix="semcolor-bench-resolution-") as work:
        torch.manual_seed(0)
        config = ModelConfig(arch="unet", input_size=args.size)
        ckpt = checkpoint.save(build_model(config), config, os.path.join(work, "model"))
        _gpu_as_the_actors(device)
        bound, rows = resolution_costs(ckpt, args.size, args.batch_size, args.backend, device)
        result = {"arch": config.arch, "size": args.size, "batch_size": args.batch_size, "threads": 1,
                  "backend": bound["backend"], "device": device,
                  "definitions": {"resolution": RESOLUTION_ROWS, "bound": statistic(BOUND_ROUNDS, BOUND_SECONDS)},
                  "bound": bound, "resolution": rows}
    _print_resolution(result["resolution"])
    write_result(args.out, "colorize-resolution", result)
    return 0


def run(args: argparse.Namespace) -> int:
    """`semcolor bench colorize [--data ROOT] [--s3] [--limit N] [--size S] [--batch-size B] [--threads T]
    [--backend B] [--device cpu|cuda] [--rows resolution]`."""
    import ray

    device = bench_device(getattr(args, "device", "cpu"))
    precision = getattr(args, "precision", "auto")
    if getattr(args, "rows", None) == "resolution":
        return run_resolution(args, device)
    gpus = 1.0 if device == "cuda" else 0.0

    from semcolor.ray_env import init_ray, require_cuda_where_gpus

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    root = Path(args.data) if args.data else DEFAULT_DATA
    images = root / "images" if (root / "images").is_dir() else root
    if not images.is_dir():
        raise ValueError(f"no images under {root}: pass --data ROOT (a folder with images/, e.g. ECSSD)")
    sources = storage.list_files(str(images), {".jpg", ".jpeg", ".png"})
    if args.limit:
        sources = sources[:args.limit]
    if not sources:
        raise ValueError(f"no .jpg/.png images under {images}")
    src = str(images)
    work = Path(tempfile.mkdtemp(prefix="semcolor-bench-colorize-"))
    try:
        torch.manual_seed(0)
        config = ModelConfig(arch="unet", input_size=args.size)
        ckpt = checkpoint.save(build_model(config), config, str(work / "model"))
        _gpu_as_the_actors(device)
        colorizer = load_colorizer(ckpt, device=device, size=args.size, backend=args.backend, threads=args.threads,
                                   precision=precision)
        torch.set_num_threads(args.threads)
        result: dict = {"data": str(images), "images": len(sources), "arch": config.arch, "size": args.size,
                        "batch_size": args.batch_size, "threads": args.threads,
                        "backend": colorizer.predictor.describe()["backend"], "device": device,
                        "precision": colorizer.predictor.describe().get("precision", "fp32"),
                        "gpu": torch.cuda.get_device_name(0) if gpus else None,
                        "definitions": {
                            "bound": statistic(BOUND_ROUNDS, BOUND_SECONDS) + "; in bounds, the better of one "
                                     "process with T threads and T 1-thread processes running their rounds together",
                            "naive": NAIVE_WORK, "resolution": RESOLUTION_ROWS,
                            "steady_p10_p90": f"{STEADY}: their count over the time between those finish times",
                            "per_bound": "images/s over the mean of the model-only bounds measured just before and "
                                         "after that measure",
                            "per_naive": "images/s over the naive loop's images/s; per_naive_load_adjusted divides "
                                         "both by their own bounds first",
                            "cpu_s_per_image": "CPU seconds per image of the processes named in cpu_scope (null when "
                                               "they cannot be counted)"}}
        bounds: list[dict] = []

        def bound(label: str) -> float:
            """The bound now: the better of one process with T threads and T 1-thread processes, or this process
            on the GPU (the machine may be shared: each ratio uses the bounds measured around it)."""
            print(f"measuring the model-only bound ({label}) ...", flush=True)
            torch.set_num_threads(args.threads)
            threads = model_bound(colorizer, args.batch_size)
            procs = None if gpus else model_bound_processes(ckpt, args.size, args.batch_size, args.threads,
                                                            backend=args.backend, precision=precision)
            best = max((r for r in (threads, procs) if r is not None), key=lambda r: r["images_per_s"])
            bounds.append({"when": label, "images_per_s": best["images_per_s"],
                           "cpu_s_per_image": best["cpu_s_per_image"], "one_process": threads,
                           "processes": procs})
            return bounds[-1]["images_per_s"]

        around: dict[str, float] = {}
        b0 = bound("start")
        print("measuring stages ...", flush=True)
        result["stages"] = stage_rates(sources[:STAGE_IMAGES], args.size)
        result["resolution_bound"], result["resolution"] = resolution_costs(ckpt, args.size, args.batch_size,
                                                                            args.backend, device,
                                                                            precision=precision)
        print("measuring the naive loop ...", flush=True)
        torch.set_num_threads(args.threads)
        result["naive"] = naive_loop(colorizer, sources[:NAIVE_IMAGES], str(work / "naive"))
        b1 = bound("after naive")
        around["naive"] = (b0 + b1) / 2

        init_ray(args.address, args.num_cpus, keep_idle_workers=True)  # as `semcolor colorize`
        require_cuda_where_gpus("--device cuda", gpus)  # a Ray without a usable GPU: one line, not a hang
        result["ray_cpus"] = ray.cluster_resources().get("CPU", 0.0)
        if args.limit:  # colorize takes a prefix; give it exactly the chosen files
            src = str(work / "src")
            os.makedirs(src)
            for url in sources:
                os.symlink(url, os.path.join(src, os.path.basename(url)))
        # actors for T threads in all; on the GPU one actor with one GPU
        layouts = {"pipeline_local": 1} if gpus else {"pipeline_local_1_actor": 1, "pipeline_local": args.threads}
        before = b1
        for name, actors in layouts.items():
            print(f"measuring the pipeline local -> local, {actors} actor(s) x "
                  f"{'1 GPU' if gpus else f'{args.threads // actors} thread(s)'} ...", flush=True)
            result[name] = _pipeline(src, str(work / name), ckpt, args.size, args.batch_size, args.threads, actors,
                                     args.backend, gpus, precision)
            after = bound(f"after {name}")
            around[name], before = (before + after) / 2, after
        best_actors = max(layouts.items(),
                          key=lambda kv: result[kv[0]]["steady_p10_p90_images_per_s"] / around[kv[0]])[1]
        if args.s3:
            with moto_s3(BUCKET) as (moto_endpoint, moto_pid):
                moto_port = int(moto_endpoint.rsplit(":", 1)[1])
                prefix = f"s3://{BUCKET}/ecssd/images"
                print("uploading to moto S3 ...", flush=True)
                upload(sources, str(images), prefix)
                b3 = bound("before pipeline s3")
                print("measuring the pipeline s3 -> s3 ...", flush=True)
                moto_cpu = cpu_seconds(moto_pid)
                result["pipeline_s3"] = _pipeline(prefix, f"s3://{BUCKET}/out", ckpt, args.size, args.batch_size,
                                                  args.threads, best_actors, args.backend, gpus, precision)
                result["pipeline_s3"]["s3_server_cpu_s_per_image"] = (
                    (cpu_seconds(moto_pid) - moto_cpu) / max(1, result["pipeline_s3"]["images"]))
                b4 = bound("after pipeline s3")
                around["pipeline_s3"] = (b3 + b4) / 2
                request_log = str(work / "requests.log")
                with latency_proxy(moto_port, S3_LATENCY_S, request_log) as (endpoint, proxy_pid):
                    os.environ["AWS_ENDPOINT_URL"] = endpoint  # moto_s3 puts the direct endpoint back at its end
                    print(f"measuring the pipeline s3 -> s3 with {S3_LATENCY_S * 1e3:.0f} ms per request ...",
                          flush=True)
                    servers_cpu = cpu_seconds(moto_pid) + cpu_seconds(proxy_pid)
                    result["pipeline_s3_latency"] = _pipeline(prefix, f"s3://{BUCKET}/out_latency", ckpt, args.size,
                                                              args.batch_size, args.threads, best_actors, args.backend,
                                                              gpus, precision)
                    result["pipeline_s3_latency"]["request_latency_s"] = S3_LATENCY_S
                    result["pipeline_s3_latency"]["s3_server_cpu_s_per_image"] = (  # moto and the proxy
                        (cpu_seconds(moto_pid) + cpu_seconds(proxy_pid) - servers_cpu)
                        / max(1, result["pipeline_s3_latency"]["images"]))
                result["pipeline_s3_latency"]["requests_per_image"] = requests_per_image(
                    read_request_log(request_log), result["pipeline_s3_latency"]["images"])
                around["pipeline_s3_latency"] = (b4 + bound("after pipeline s3 latency")) / 2
        result["bounds"] = bounds
        result["bound"] = {"images_per_s": float(np.median([b["images_per_s"] for b in bounds])),
                           "cpu_s_per_image": float(np.median([b["cpu_s_per_image"] for b in bounds]))}
        result["bound_around"] = around
        _ratios(result, around)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print_table(result)
    write_result(args.out, "colorize-bf16" if precision == "bf16" else "colorize", result)
    return 0
