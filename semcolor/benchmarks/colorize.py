"""`semcolor bench colorize`: bulk colorization throughput against its bound, in one run.

Measured with one random-init model (weights=None; speed does not depend on the weights) at ``--size``:

- ``bound``: model-only forward images/s (:meth:`Colorizer.predict`, uint8 in / int8+uint8 out) at
  ``--batch-size`` with ``--threads`` torch threads in all, the better of one process with T threads and T
  concurrent 1-thread processes: what the pipeline cannot beat on this machine. Measured
  before and after every other measure; each ratio divides by the mean of the two around it (on a shared
  machine the load moves between measures).
- ``decode`` / ``merge`` / ``encode``: single-thread rates of the CPU stages on the dataset's photos
  (read+decode+full-res L+resize; AB upsample + LAB->RGB at full resolution; PNG encode).
- ``pipeline local`` and ``pipeline s3``: :func:`semcolor.infer.colorize` on every photo, local -> local and
  s3 -> s3 (a moto server this benchmark starts as a subprocess on 127.0.0.1; photos uploaded first).
  End-to-end images/s include Ray Data start-up and the model actor's start; ``steady`` counts the rows
  finished between the 10th and 90th percentile of the records' ``finished_at``. Rate per quarter of the
  run shows whether throughput holds as the count grows.
- ``naive``: the sequential loop (open, predict, save, one image at a time; batch 1).
- ratios pipeline/bound and pipeline/naive;
- time per image by source resolution (0.25, 1, 4, 12 MP), stage by stage: only decode, merge and encode
  should grow with pixels; the model runs at model size.
- CPU seconds per image (robust on a shared machine, where wall-clock rates move with other load): the
  model-only bound's process time per image vs the whole local Ray (GCS, raylet, workers, actor) plus the
  driver per image during the pipeline; their ratio is the pipeline's CPU efficiency. Per-stage CPU comes
  from Ray Data's stats. (Needs the local Ray started by this benchmark, i.e. no ``--address``.)

Thread budget on a small machine: the pipeline runs ``--threads`` model actors of 1 torch thread each (they
reserve (CPUs - 1) / T CPUs from Ray, leaving one CPU slot for the decode / merge / encode tasks, 1 thread
each, which interleave with inference): one T-thread actor loses time whenever a task preempts one of its
OpenMP threads, separate actors do not. Prints a table, writes
``OUT/colorize.json`` (with the load average before each measurement: the machine may be shared).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from semcolor import checkpoint, storage
from semcolor.benchmarks._local import moto_s3, upload
from semcolor.bulk_records import read_records
from semcolor.colorizer import Colorizer, merge_full_resolution, resize_l8, rgb_to_l8
from semcolor.decode import decode_image
from semcolor.encode import encode_rgb
from semcolor.model import ModelConfig, build_model

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ecssd"
BUCKET = "semcolor-bench"
RESOLUTIONS_MP = (0.25, 1.0, 4.0, 12.0)
NAIVE_IMAGES = 60
BOUND_SECONDS = 8.0
STAGE_IMAGES = 200


def _load() -> float:
    return round(os.getloadavg()[0], 2)


class TreeCpu:
    """CPU seconds (user + system) used by this process and all its descendants (a local Ray started by this
    driver: GCS, raylet, workers, actors) between :meth:`start` and :meth:`stop`, except the pids in
    ``exclude`` (e.g. the S3 server). Processes come and go (actors exit at the end of a dataset), so a
    thread samples the tree every ``interval`` seconds and keeps each pid's first and last reading; only a
    process's last ``interval`` before it exits goes uncounted."""

    def __init__(self, exclude: frozenset[int] = frozenset(), interval: float = 0.25) -> None:
        import threading

        self.exclude, self.interval = exclude, interval
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, initial: bool = False) -> None:
        import psutil

        me = psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            if proc.pid in self.exclude:
                continue
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            key = (proc.pid, proc.create_time())
            used = times.user + times.system
            self.first.setdefault(key, used if initial else 0.0)
            self.last[key] = used

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> "TreeCpu":
        self._sample(initial=True)
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return sum(self.last[k] - self.first[k] for k in self.last)


def model_bound(colorizer: Colorizer, batch: int, seconds: float = 10.0) -> dict:
    """Model-only images/s, and CPU seconds per image, on random uint8 L at the colorizer's size
    (threads set by the caller)."""
    x = np.random.default_rng(0).integers(0, 256, (batch, colorizer.size, colorizer.size), dtype=np.uint8)
    colorizer.predict(x)  # warm-up
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds or n < 3 * batch:
        colorizer.predict(x)
        n += batch
    elapsed = time.perf_counter() - start
    return {"images": n, "seconds": elapsed, "images_per_s": n / elapsed,
            "cpu_s_per_image": (time.process_time() - cpu) / n, "load": _load()}


def _bound_process(ckpt: str, size: int, batch: int, threads: int, seconds: float, barrier, results) -> None:
    """One process of :func:`model_bound_processes` (module level: spawned processes import it)."""
    torch.set_num_threads(threads)
    colorizer = Colorizer.from_checkpoint(ckpt, device="cpu", size=size)
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size), dtype=np.uint8)
    colorizer.predict(x)
    barrier.wait()
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds or n < 3 * batch:
        colorizer.predict(x)
        n += batch
    results.put((n, time.perf_counter() - start, time.process_time() - cpu))


def model_bound_processes(ckpt: str, size: int, batch: int, processes: int, seconds: float = 10.0) -> dict:
    """Model-only images/s of ``processes`` concurrent 1-thread processes (the same total threads as one
    process with ``processes`` threads), and their CPU seconds per image."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_bound_process, args=(ckpt, size, batch, 1, seconds, barrier, results))
             for _ in range(processes)]
    for proc in procs:
        proc.start()
    runs = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    n = sum(r[0] for r in runs)
    return {"images": n, "seconds": max(r[1] for r in runs),
            "images_per_s": sum(r[0] / r[1] for r in runs), "cpu_s_per_image": sum(r[2] for r in runs) / n,
            "load": _load()}


def stage_rates(sources: list[str], size: int) -> dict:
    """Single-thread images/s of decode (read + decode + L + resize), merge and PNG encode."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        blobs = [storage.read_bytes(u) for u in sources]
        start = time.perf_counter()
        l8s = []
        for data in blobs:
            l8 = rgb_to_l8(decode_image(data))
            resize_l8(l8, size)
            l8s.append(l8)
        decode_s = time.perf_counter() - start
        ab8 = np.random.default_rng(0).integers(-40, 40, (2, size, size)).astype(np.int8)
        start = time.perf_counter()
        merged = [merge_full_resolution(l8, ab8) for l8 in l8s]
        merge_s = time.perf_counter() - start
        start = time.perf_counter()
        for rgb in merged:
            encode_rgb(rgb, "png")
        encode_s = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    n = len(sources)
    mean_mp = float(np.mean([l.size for l in l8s]) / 1e6)
    return {"images": n, "mean_megapixels": mean_mp, "decode_per_s": n / decode_s, "merge_per_s": n / merge_s,
            "encode_per_s": n / encode_s, "load": _load()}


def naive_loop(colorizer: Colorizer, sources: list[str], dst: str) -> dict:
    """Open, predict, save, one image at a time (batch 1), as the reference project's evaluate does."""
    start, cpu = time.perf_counter(), time.process_time()
    for i, url in enumerate(sources):
        rgb, _ = colorizer.colorize(decode_image(storage.read_bytes(url)))
        storage.write_bytes(storage.join(dst, f"{i:05d}.png"), encode_rgb(rgb, "png"))
    elapsed = time.perf_counter() - start
    return {"images": len(sources), "seconds": elapsed, "images_per_s": len(sources) / elapsed,
            "cpu_s_per_image": (time.process_time() - cpu) / len(sources), "load": _load()}


def resolution_costs(colorizer: Colorizer, per_image_model_s: float, reps: int = 2) -> list[dict]:
    """Seconds per image by stage for synthetic JPEG sources of growing size (single thread for CPU stages)."""
    rows = []
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for mp in RESOLUTIONS_MP:
            h = int(round((mp * 1e6 * 3 / 4) ** 0.5))
            w = int(round(mp * 1e6 / h))
            yy, xx = np.mgrid[0:h, 0:w]
            rgb = np.stack([(xx * 7 // 5) % 256, (yy * 3 // 2) % 256, ((xx + yy) // 3) % 256], -1).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
            jpeg = buf.getvalue()
            del rgb, yy, xx
            ab8 = np.random.default_rng(0).integers(-40, 40, (2, colorizer.size, colorizer.size)).astype(np.int8)
            times = {"decode": [], "merge": [], "encode": []}
            for _ in range(reps):
                t0 = time.perf_counter()
                l8 = rgb_to_l8(decode_image(jpeg))
                resize_l8(l8, colorizer.size)
                t1 = time.perf_counter()
                out = merge_full_resolution(l8, ab8)
                t2 = time.perf_counter()
                encode_rgb(out, "png")
                t3 = time.perf_counter()
                times["decode"].append(t1 - t0)
                times["merge"].append(t2 - t1)
                times["encode"].append(t3 - t2)
            row = {"megapixels": mp, "width": w, "height": h, **{f"{k}_s": min(v) for k, v in times.items()},
                   "model_s": per_image_model_s}
            row["total_s"] = row["decode_s"] + row["merge_s"] + row["encode_s"] + per_image_model_s
            rows.append(row)
    finally:
        torch.set_num_threads(previous)
    return rows


def _pipeline(src: str, dst: str, ckpt: str, size: int, batch: int, threads: int, actors: int,
              exclude: frozenset[int] = frozenset()) -> dict:
    """One colorize run; end-to-end and steady-state images/s, per-quarter rates, object-store bytes/row,
    CPU seconds per image of the whole local Ray + driver (robust to a busy machine) and per stage."""
    from semcolor.infer import colorize

    load = _load()
    sampler = TreeCpu(exclude).start()
    summary = colorize(src, dst, ckpt, size=size, batch_size=batch, actors=actors, threads_per_actor=threads // actors)
    cpu = sampler.stop()
    records = read_records(dst)
    finished = np.sort(np.asarray(records["finished_at"].to_pylist(), dtype=np.float64))
    n = len(finished)
    lo, hi = finished[int(0.1 * (n - 1))], finished[int(0.9 * (n - 1))]
    steady = (int(0.9 * (n - 1)) - int(0.1 * (n - 1))) / (hi - lo) if hi > lo else float("nan")
    quarters = []
    for q in range(4):
        part = finished[q * n // 4:(q + 1) * n // 4]
        quarters.append(len(part) / (part[-1] - part[0]) if len(part) > 1 and part[-1] > part[0] else float("nan"))
    return {"actors": actors, "threads_per_actor": threads // actors,
            "images": summary.done, "failed": summary.failed, "seconds": summary.seconds,
            "images_per_s": summary.images_per_s, "steady_images_per_s": steady, "quarter_images_per_s": quarters,
            "object_store_bytes_per_row": summary.object_store_bytes_per_row, "load": load,
            "cpu_s_per_image": cpu / max(1, summary.done + summary.failed),
            "stage_cpu_s_per_image": {k: v / max(1, summary.done + summary.failed)
                                      for k, v in summary.stage_cpu_seconds.items()}}


def _fmt(v: float) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def print_table(result: dict) -> None:
    rows = []
    for b in result["bounds"]:
        rows.append((f"bound {b['when']}: 1 process x {result['threads']} threads", b["one_process"]["images_per_s"],
                     "", ""))
        rows.append((f"bound {b['when']}: {result['threads']} processes x 1 thread", b["processes"]["images_per_s"],
                     "", ""))
    s = result["stages"]
    rows += [("decode only (1 thread)", s["decode_per_s"], "", ""), ("merge only (1 thread)", s["merge_per_s"], "", ""),
             ("encode only, png (1 thread)", s["encode_per_s"], "", "")]
    naive = result["naive"]["images_per_s"]
    rows.append(("naive sequential loop (batch 1)", naive, result["naive"]["per_bound"], 1.0))
    for name in [k for k in result if k.startswith("pipeline_")]:
        if name in result:
            p = result[name]
            name = f"{name} ({p['actors']} actor(s) x {p['threads_per_actor']} thread(s))"
            rows.append((f"{name.replace('_', ' ')} end-to-end", p["images_per_s"], p["per_bound"],
                         p["images_per_s"] / naive))
            rows.append((f"{name.replace('_', ' ')} end-to-end, /naive adjusted for load", p["images_per_s"],
                         p["per_bound"], p["per_naive_load_adjusted"]))
            rows.append((f"{name.replace('_', ' ')} steady", p["steady_images_per_s"], p["steady_per_bound"],
                         p["steady_images_per_s"] / naive))
    print(f"\ncolorize benchmark: {result['images']} photos from {result['data']}, model {result['arch']} "
          f"at {result['size']} px, {result['cpus']} CPUs")
    print("ratios use the mean of the bounds measured just before and after each measure")
    print(f"{'measure':<76} {'images/s':>9} {'/bound':>7} {'/naive':>7}")
    for name, rate, rb, rn in rows:
        print(f"{name:<76} {rate:>9.2f} {_fmt(rb):>7} {_fmt(rn):>7}")
    bound_cpu = float(np.median([b["cpu_s_per_image"] for b in result["bounds"]]))
    print(f"\nCPU seconds per image (robust to other load): model-only bound {bound_cpu:.3f}, "
          f"naive loop {result['naive']['cpu_s_per_image']:.3f}")
    for name in [k for k in result if k.startswith("pipeline_")]:
        if name in result:
            p = result[name]
            q = ", ".join(f"{v:.2f}" for v in p["quarter_images_per_s"])
            stages = ", ".join(f"{k} {v:.3f}" for k, v in p["stage_cpu_s_per_image"].items())
            extra = (f"; S3 server (moto, not counted) {p['s3_server_cpu_s_per_image']:.3f}"
                     if "s3_server_cpu_s_per_image" in p else "")
            print(f"{name}: whole Ray + driver {p['cpu_s_per_image']:.3f} -> CPU efficiency "
                  f"{p['cpu_efficiency']:.2f} (bound / pipeline), {p['cpu_vs_naive']:.2f} x less CPU than the "
                  f"naive loop; by stage: {stages}{extra}")
            print(f"{name}: images/s by quarter of the run: {q}; object store "
                  f"{p['object_store_bytes_per_row'] / 1e3:.0f} kB/row")
    print(f"\n{'source MP':>9} {'size':>11} {'decode s':>9} {'model s':>8} {'merge s':>8} {'encode s':>9} {'total s':>8}")
    for r in result["resolution"]:
        print(f"{r['megapixels']:>9.2f} {r['width']:>5}x{r['height']:<5} {r['decode_s']:>9.3f} {r['model_s']:>8.3f} "
              f"{r['merge_s']:>8.3f} {r['encode_s']:>9.3f} {r['total_s']:>8.3f}")


def run(args: argparse.Namespace) -> int:
    """`semcolor bench colorize [--data ROOT] [--s3] [--limit N] [--size S] [--batch-size B] [--threads T]`."""
    from semcolor.ray_env import init_ray

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
        colorizer = Colorizer.from_checkpoint(ckpt, device="cpu", size=args.size)
        torch.set_num_threads(args.threads)
        result: dict = {"data": str(images), "images": len(sources), "arch": config.arch, "size": args.size,
                        "batch_size": args.batch_size, "threads": args.threads, "cpus": os.cpu_count(),
                        "machine": platform.platform(), "torch": torch.__version__}
        bounds: list[dict] = []

        def bound(label: str) -> float:
            """The bound now: the better of one process with T threads and T 1-thread processes (the machine
            may be shared: each ratio uses the bounds measured around it)."""
            print(f"measuring the model-only bound ({label}) ...", flush=True)
            torch.set_num_threads(args.threads)
            threads = model_bound(colorizer, args.batch_size, seconds=BOUND_SECONDS)
            procs = model_bound_processes(ckpt, args.size, args.batch_size, args.threads, seconds=BOUND_SECONDS)
            best = max((threads, procs), key=lambda r: r["images_per_s"])
            bounds.append({"when": label, "images_per_s": best["images_per_s"],
                           "cpu_s_per_image": best["cpu_s_per_image"], "one_process": threads,
                           "processes": procs})
            return bounds[-1]["images_per_s"]

        around: dict[str, float] = {}
        b0 = bound("start")
        print("measuring stages ...", flush=True)
        result["stages"] = stage_rates(sources[:STAGE_IMAGES], args.size)
        result["resolution"] = resolution_costs(colorizer, 1.0 / b0)
        print("measuring the naive loop ...", flush=True)
        torch.set_num_threads(args.threads)
        result["naive"] = naive_loop(colorizer, sources[:NAIVE_IMAGES], str(work / "naive"))
        b1 = bound("after naive")
        around["naive"] = (b0 + b1) / 2

        init_ray(args.address, args.num_cpus)
        if args.limit:  # colorize takes a prefix; give it exactly the chosen files
            src = str(work / "src")
            os.makedirs(src)
            for url in sources:
                os.symlink(url, os.path.join(src, os.path.basename(url)))
        layouts = {"pipeline_local_1_actor": 1, "pipeline_local": args.threads}  # actors for T threads in all
        before = b1
        for name, actors in layouts.items():
            print(f"measuring the pipeline local -> local, {actors} actor(s) x {args.threads // actors} "
                  "thread(s) ...", flush=True)
            result[name] = _pipeline(src, str(work / name), ckpt, args.size, args.batch_size, args.threads, actors)
            after = bound(f"after {name}")
            around[name], before = (before + after) / 2, after
        best_actors = max(layouts.items(), key=lambda kv: result[kv[0]]["steady_images_per_s"] / around[kv[0]])[1]
        if args.s3:
            with moto_s3(BUCKET) as (_, moto_pid):
                prefix = f"s3://{BUCKET}/ecssd/images"
                print("uploading to moto S3 ...", flush=True)
                upload(sources, str(images), prefix)
                b3 = bound("before pipeline s3")
                print("measuring the pipeline s3 -> s3 ...", flush=True)
                import psutil

                moto = psutil.Process(moto_pid)
                moto_cpu = sum(moto.cpu_times()[:2])
                result["pipeline_s3"] = _pipeline(prefix, f"s3://{BUCKET}/out", ckpt, args.size, args.batch_size,
                                                  args.threads, best_actors, exclude=frozenset({moto_pid}))
                result["pipeline_s3"]["s3_server_cpu_s_per_image"] = (
                    (sum(moto.cpu_times()[:2]) - moto_cpu) / max(1, result["pipeline_s3"]["images"]))
                around["pipeline_s3"] = (b3 + bound("after pipeline s3")) / 2
        del colorizer
        result["bounds"] = bounds
        result["bound"] = {"images_per_s": float(np.median([b["images_per_s"] for b in bounds]))}
        result["bound_around"] = around
        naive = result["naive"]["images_per_s"]
        result["naive"]["per_bound"] = naive / around["naive"]
        for name in [k for k in result if k.startswith("pipeline_")]:
            if name in result:
                p = result[name]
                p.update(per_bound=p["images_per_s"] / around[name], per_naive=p["images_per_s"] / naive,
                         steady_per_bound=p["steady_images_per_s"] / around[name],
                         cpu_efficiency=float(np.median([b["cpu_s_per_image"] for b in bounds]))
                         / p["cpu_s_per_image"],
                         cpu_vs_naive=result["naive"]["cpu_s_per_image"] / p["cpu_s_per_image"],
                         per_naive_load_adjusted=(p["images_per_s"] / around[name])
                         / (naive / around["naive"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "colorize.json").write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out / 'colorize.json'}")
    return 0
