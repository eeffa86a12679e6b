"""`semcolor bench plan`: the bulk job's driver at archive scale: planning a million keys, and its rerun.

A manifest of ``--limit`` keys (default :data:`DEFAULT_KEYS`) whose sources cycle over the images of ``--data``
(ECSSD beside the repo; a few hundred real files stand for an archive). Each figure is measured in a fresh Python
process (the driver as a user starts it), peak memory = that process's maximum resident set:

- ``plan``: list the manifest and drop keys already done in an empty DST (:func:`semcolor.bulk.job.plan_inputs`,
  :func:`semcolor.bulk.job.drop_done`);
- ``first_output``: ``semcolor colorize MANIFEST DST`` (a random-init model at 64 px, a local Ray of ``--threads``
  CPUs) from its start to the first output image on disk, Ray's start-up included; the job is then stopped;
- ``rerun_plan``: with a record of every key already in ``DST/_manifest`` spread over :data:`RECORD_FILES` files
  (what many runs leave), planning again; then ``rerun_plan_compacted``: the same after
  :func:`semcolor.bulk.records.compact_records` (its own time is ``compact``);
- ``report``: ``semcolor report DST`` over those records (with random quality signals; the sampled outputs do not
  exist, so the page shows their tiles as missing: what is timed is reading and reducing the records).

``--rows plan,rerun`` skips the job start. Targets (issue 13): planning 1 M keys <= 60 s and <= 2 GB; the rerun's
planning over 1 M records <= 60 s; the report over 1 M records about a minute.
Prints a table, writes ``OUT/plan.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ecssd"
DEFAULT_KEYS = 1_000_000
STEPS = ("plan", "first_output", "rerun")
"""What ``--rows`` may pick (default all)."""
RECORD_FILES = 2_000
"""Record files the rerun finds before compaction (a run writes one per Ray Data block)."""

_PLAN = """
import json, resource, sys, time
t0 = time.perf_counter()
from semcolor.bulk.job import drop_done, plan_inputs
work, _ = plan_inputs(sys.argv[1], sys.argv[2], "png", False)
todo = drop_done(work, sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t0, "keys": work.num_rows, "todo": todo.num_rows,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _write_manifest(path: Path, images: list[str], n: int) -> None:
    """A Parquet manifest of ``n`` keys (``batchNNN/scanNNNNNNN``) cycling over ``images``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = pa.array([f"batch{i // 10_000:03d}/scan{i:07d}" for i in range(n)])
    sources = pa.array([images[i % len(images)] for i in range(n)])
    pq.write_table(pa.table({"key": keys, "image": sources}), path)


def _write_records(dst: Path, keys: list[str], files: int) -> None:
    """An ok record for every key of ``keys`` under ``dst/_manifest``, spread over ``files`` Parquet files, with
    random quality signals (:mod:`semcolor.bulk.signals`)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from semcolor.bulk.records import RECORD_SCHEMA

    root = dst / "_manifest" / "earlier-runs"
    root.mkdir(parents=True, exist_ok=True)
    per = -(-len(keys) // files)
    rng = np.random.default_rng(0)
    for f in range(files):
        chunk = keys[f * per:(f + 1) * per]
        if not chunk:
            break
        n = len(chunk)
        columns = {field.name: pa.nulls(n, field.type) for field in RECORD_SCHEMA}
        columns.update(key=pa.array(chunk), output=pa.array([str(dst / f"{k}.png") for k in chunk]),
                       status=pa.array(["ok"] * n), finished_at=pa.array([1.0] * n),
                       width=pa.array(np.full(n, 4000, np.int32)), height=pa.array(np.full(n, 3000, np.int32)),
                       seconds=pa.array(rng.uniform(0.2, 0.8, n)),
                       colorfulness=pa.array(rng.uniform(0, 60, n).astype(np.float32)),
                       foreground_share=pa.array(rng.uniform(0, 1, n).astype(np.float32)),
                       mask_confidence=pa.array(rng.uniform(0.5, 1, n).astype(np.float32)),
                       source_color=pa.array(rng.random(n) < 0.1))
        pq.write_table(pa.table(columns, schema=RECORD_SCHEMA), root / f"part-{f:05d}.parquet")


def _plan_in_fresh_process(manifest: Path, dst: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", _PLAN, str(manifest), str(dst)], capture_output=True, text=True,
                         check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _first_output(manifest: Path, dst: Path, checkpoint: str, threads: int, timeout_s: float = 900
                  ) -> dict[str, Any]:
    """Seconds from starting ``semcolor colorize`` to its first output image; the job is then interrupted."""
    code = "import sys; from semcolor.cli import main; sys.exit(main(sys.argv[1:]))"
    log = dst.parent / "first-output.log"  # a file, not a pipe: an unread pipe fills and blocks the job's logging
    started = time.perf_counter()
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", code, "colorize", str(manifest), str(dst), "--checkpoint",
                                 checkpoint, "--num-cpus", str(threads), "--actors", "1"],
                                stdout=subprocess.DEVNULL, stderr=stderr, text=True, start_new_session=True)
    try:
        while time.perf_counter() - started < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"colorize ended (rc {proc.returncode}) before any output: "
                                   f"{log.read_text()[-2000:]}")
            if any(p.suffix == ".png" for p in dst.glob("batch000/*.png")):
                return {"seconds": time.perf_counter() - started}
            time.sleep(0.2)
        raise RuntimeError(f"no output after {timeout_s} s")
    finally:
        if proc.poll() is None:  # its own session: SIGINT then SIGKILL to the group this benchmark started
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _rerun(manifest: Path, dst: Path) -> list[dict[str, Any]]:
    """Planning over a record of every key in :data:`RECORD_FILES` files, compaction, planning again."""
    import pyarrow.parquet as pq

    from semcolor.bulk.records import compact_records

    _write_records(dst, pq.read_table(manifest, columns=["key"])["key"].to_pylist(), RECORD_FILES)
    rows = [{"step": "rerun_plan", "record_files": RECORD_FILES, **_plan_in_fresh_process(manifest, dst)}]
    print(f"  rerun plan: {rows[-1]}", flush=True)
    started = time.perf_counter()
    files, kept = compact_records(str(dst))
    rows.append({"step": "compact", "record_files": files, "keys": kept, "seconds": time.perf_counter() - started})
    rows.append({"step": "rerun_plan_compacted", "record_files": 1, **_plan_in_fresh_process(manifest, dst)})
    print(f"  compacted: {rows[-2]}; rerun plan: {rows[-1]}", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from semcolor.cli import main; sys.exit(main(sys.argv[1:]))",
                    "report", str(dst), "--out", str(dst / "report.html")], check=True, timeout=1800,
                   stdout=subprocess.DEVNULL)
    rows.append({"step": "report", "record_files": 1, "keys": kept, "seconds": time.perf_counter() - started})
    print(f"  report: {rows[-1]}", flush=True)
    return rows


def run(args: argparse.Namespace) -> int:
    """The four measurements, a table, and ``OUT/plan.json``."""
    import torch

    from semcolor.model import checkpoint
    from semcolor.model.config import ModelConfig
    from semcolor.model.network import build_model

    root = Path(args.data) if args.data else DEFAULT_DATA
    # absolute: the manifest lives in a temporary folder, and relative sources are read relative to it
    images = sorted(str(p.resolve()) for p in (root / "images").glob("*") if p.is_file())[:300]
    if not images:
        raise ValueError(f"no images under {root / 'images'}; pass --data")
    n = args.limit or DEFAULT_KEYS
    wanted = [r.strip() for r in args.rows.split(",")] if getattr(args, "rows", None) else list(STEPS)
    if set(wanted) - set(STEPS):
        raise ValueError(f"unknown plan steps {sorted(set(wanted) - set(STEPS))}; known: {list(STEPS)}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="semcolor-bench-plan-") as tmp:
        work = Path(tmp)
        manifest = work / "manifest.parquet"
        _write_manifest(manifest, images, n)
        print(f"manifest of {n} keys over {len(images)} files of {root}", flush=True)

        if "plan" in wanted:
            rows.append({"step": "plan", **_plan_in_fresh_process(manifest, work / "dst-empty")})
            print(f"  plan: {rows[-1]}", flush=True)
        if "first_output" in wanted:
            torch.manual_seed(0)
            config = ModelConfig(arch="unet", input_size=64)
            ckpt = checkpoint.save(build_model(config), config, str(work / "model"))
            rows.append({"step": "first_output", **_first_output(manifest, work / "dst-run", ckpt, args.threads)})
            print(f"  first output: {rows[-1]}", flush=True)
        if "rerun" in wanted:
            rows.extend(_rerun(manifest, work / "dst-done"))

    print(f"\nbulk planning at scale: {n} keys over {len(images)} files")
    print(f"{'step':>22} | {'seconds':>8} | {'peak RSS MB':>11} | {'keys to do':>10} | {'record files':>12}")
    for r in rows:
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else ""
        print(f"{r['step']:>22} | {r['seconds']:8.1f} | {rss:>11} | {r.get('todo', ''):>10} | "
              f"{r.get('record_files', ''):>12}")
    from semcolor.benchmarks._report import write_result

    write_result(args.out, "plan", {"benchmark": "plan", "keys": n, "source_files": len(images),
                                    "targets": {"plan_seconds": 60, "plan_peak_rss_mb": 2048,
                                                "rerun_plan_seconds": 60, "report_seconds": 60},
                                    "rows": rows})
    return 0
