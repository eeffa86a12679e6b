"""Bulk colorization of an archive on Ray Data: full resolution, resumable, every input accounted for.

Pipeline (one streaming Ray Data job; stages in :mod:`semcolor.bulk_stages`)::

    list SRC (or read a manifest), drop keys already recorded ok in DST/_manifest   [driver]
      -> read + decode + full-res uint8 L + model-size L      CPU tasks
      -> predict a/b + foreground at model size                actor pool (model loaded once per actor)
      -> upsample a/b, merge with full-res L, encode, write    CPU tasks, atomic writes
      -> result records                                        write_parquet(DST/_manifest/)  (the final step)

Outputs: ``DST/<key>.<ext>`` at the source's exact (EXIF-oriented) size, optional ``DST/masks/<key>.png``,
records ``DST/_manifest/*.parquet`` (columns in :mod:`semcolor.bulk_records`).

Resume, exactly once — and why not Ray Data's job-level checkpointing
----------------------------------------------------------------------
Ray 2.60 has ``ray.data.checkpoint.CheckpointConfig`` (beta): it records ids of rows that reached the
final Write, filters them out after the Read on the next run, and gives file sinks a two-phase commit.
Evaluated against this job and not used, because:

1. Errors must be retried. Its checkpoint marks every written row done; error records are written too,
   so a key that failed once would be skipped forever (or error records could not be written at all).
2. It needs a plan that starts with a Read and ends with a Write. Ours starts from a driver-side listing
   (``from_arrow``) so that done keys are dropped *before* any byte is fetched; its filter runs after
   the Read, and brings an extra filter actor pool (1 GiB memory reservation each) to a 2-core node.
3. Two sources of truth: its checkpoint lives apart from the records (and is deleted on success by
   default), while the design's contract is that a key counts as done only when its record says ok.
4. Its local-path backend requires a network-mounted folder on every node; the records here live in
   DST, which every node can already write.

So resume is built on the records themselves:

- The image (and mask) of a key is written atomically (temp file + rename locally, one PUT on S3)
  *before* the row's record is made, and the record is made only when the writes succeeded. A record
  saying ok therefore always points at complete files; a file without a record is simply redone.
- A rerun reads all records, keeps the latest ok per key (:func:`semcolor.bulk_records.latest_by_key`)
  and skips a key when it is ok *for the same output* (format and mask option included); error keys
  and keys never recorded are redone. Records of many runs coexist (each has a ``run_id``).
- Redone outputs are byte-identical: inference is deterministic and batch-composition independent,
  and the encoders write no timestamps (:mod:`semcolor.encode`).
- Dead processes are Ray's job: Ray Data's actor pools restart dead actors and retry their batches
  (its defaults ``max_restarts=-1``, ``max_task_retries=-1``; passing other values through
  ``**ray_remote_args`` is deprecated in 2.60), tasks are retried; a retried batch rewrites the same
  bytes and its records are emitted once (a failed task's output block is never committed).
- A job killed midway leaves outputs of some keys without records (redone) and maybe a truncated
  record file (logged and ignored; its keys are redone).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import posixpath
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from semcolor import storage
from semcolor.bulk_records import OK, done_outputs, latest_by_key, manifest_url, read_records
from semcolor.decode import DEFAULT_MAX_PIXELS
from semcolor.encode import check_quality, extension_of
from semcolor.ray_env import init_ray, storage_env

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".jp2",
})
"""Files listed under SRC with these extensions (any case) are inputs; other files are counted as ignored."""

MANIFEST_SUFFIXES = (".parquet", ".csv")
DUPLICATE_KEY = "duplicate_key"



@dataclass
class ColorizeSummary:
    """What one :func:`colorize` run did. ``images_per_s`` counts keys finished (ok or error) per wall second."""

    run_id: str
    src: str
    dst: str
    inputs: int
    """Image files considered this run (after ``limit``)."""
    skipped: int
    """Keys already recorded ok for the same output by an earlier run."""
    done: int
    failed: int
    ignored: int
    """Files under SRC without an image extension (not inputs)."""
    seconds: float
    images_per_s: float
    object_store_bytes_per_row: float
    """Mean bytes one row carried through the object store between stages (compact uint8 columns)."""
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)
    """CPU seconds per Ray Data operator (its tasks' / actor calls' process time, from Ray Data's stats)."""
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    failure_examples: list[tuple[str, str, str]] = field(default_factory=list)
    """Up to 10 (key, kind, reason)."""

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.failures_by_kind.items()))
        return (f"colorize {self.src} -> {self.dst}: done {self.done}, skipped {self.skipped}, "
                f"failed {self.failed}{f' ({kinds})' if kinds else ''}, ignored {self.ignored} non-image files; "
                f"{self.images_per_s:.2f} images/s over {self.seconds:.1f} s; "
                f"object store {self.object_store_bytes_per_row / 1e3:.0f} kB/row; run {self.run_id}")


# ---------------------------------------------------------------- planning (driver)


def _absolute(url: str, base: str) -> str:
    return url if storage.scheme_of(url) or os.path.isabs(url) else storage.join(base, url)


def _derive_keys(sources: list[str]) -> list[str]:
    paths = [u.split("://", 1)[-1] for u in sources]
    root = posixpath.commonpath([posixpath.dirname(p) or "/" for p in paths]) if paths else ""
    return [posixpath.splitext(p[len(root):].lstrip("/"))[0] for p in paths]


def read_source_manifest(url: str) -> tuple[list[str], list[str]]:
    """A Parquet/CSV manifest with column ``image`` (URLs; relative ones against the manifest's folder) and
    optionally ``key`` -> (keys, source URLs). Without ``key``, keys are paths under the common folder."""
    data = storage.read_bytes(url)
    if url.lower().endswith(".csv"):
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(io.BytesIO(data), convert_options=pacsv.ConvertOptions(
            column_types={"key": pa.string(), "image": pa.string()}))
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
    if "image" not in table.column_names:
        raise ValueError(f"manifest {url} has no 'image' column (it has {table.column_names}); "
                         "give image URLs in 'image' and optionally keys in 'key'")
    if table["image"].null_count:
        raise ValueError(f"manifest {url}: {table['image'].null_count} empty value(s) in column 'image'")
    base = posixpath.dirname(url.rstrip("/")) if storage.scheme_of(url) else os.path.dirname(os.path.abspath(url))
    sources = [_absolute(u, base) for u in table["image"].to_pylist()]
    keys = [str(k) for k in table["key"].to_pylist()] if "key" in table.column_names else _derive_keys(sources)
    return keys, sources


def _under(url: str, prefix: str) -> bool:
    if storage.scheme_of(url) == "" and storage.scheme_of(prefix) == "":
        url, prefix = os.path.abspath(url), os.path.abspath(prefix)
    return url.startswith(prefix.rstrip("/") + "/")


def _is_manifest(src: str) -> bool:
    """True when SRC names a .parquet / .csv file (a folder with such a name is listed as a prefix)."""
    import pyarrow.fs as pafs

    if not src.lower().endswith(MANIFEST_SUFFIXES):
        return False
    fs, path = storage.resolve(src)
    return fs.get_file_info(path).type == pafs.FileType.File


def plan_inputs(src: str, dst: str, ext: str, masks: bool, limit: int | None = None,
                extensions: frozenset[str] = IMAGE_EXTENSIONS) -> tuple[pa.Table, int]:
    """List SRC (a prefix, or a ``.parquet``/``.csv`` manifest) -> (work table, ignored file count).

    Work table columns: ``key``, ``source``, ``output``, ``mask`` ("" unless ``masks``), ``status``
    (``ok`` = to do), ``kind``, ``reason``; sorted by source. Files under DST are never inputs.
    Two sources with the same key (``a.jpg``, ``a.png``): the first keeps the key, the others become
    ``duplicate_key`` error rows keyed by their path with extension. ``limit`` keeps the first N inputs.
    """
    ignored = 0
    if _is_manifest(src):
        keys, sources = read_source_manifest(src)
        order = sorted(range(len(sources)), key=lambda i: sources[i])
        keys, sources = [keys[i] for i in order], [sources[i] for i in order]
    else:
        files = [u for u in storage.list_files(src) if not _under(u, dst)]
        inputs = [u for u in files if posixpath.splitext(u)[1].lower() in extensions]
        ignored = len(files) - len(inputs)
        sources = inputs
        keys = [storage.relative_key(u, src) for u in inputs]
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        keys, sources = keys[:limit], sources[:limit]
    seen: dict[str, str] = {}
    rows: dict[str, list] = {c: [] for c in ("key", "source", "output", "mask", "status", "kind", "reason")}
    for key, source in zip(keys, sources):
        status, kind, reason = OK, "", ""
        if key in seen:
            status, kind = "error", DUPLICATE_KEY
            reason = f"{source} maps to output key {key!r} like {seen[key]}; rename one of them"
            key = key + posixpath.splitext(source)[1]
        else:
            seen[key] = source
        rows["key"].append(key)
        rows["source"].append(source)
        rows["output"].append(storage.join(dst, f"{key}.{ext}"))
        rows["mask"].append(storage.join(dst, "masks", f"{key}.png") if masks else "")
        rows["status"].append(status)
        rows["kind"].append(kind)
        rows["reason"].append(reason)
    return pa.table(rows, schema=pa.schema([(c, pa.string()) for c in rows])), ignored


def drop_done(work: pa.Table, dst: str) -> pa.Table:
    """Rows of ``work`` not yet recorded ok in DST for the same output (and mask, when asked for)."""
    done = done_outputs(read_records(dst))
    if not done:
        return work
    keep = []
    for key, output, mask in zip(*(work[c].to_pylist() for c in ("key", "output", "mask"))):
        previous = done.get(key)
        keep.append(previous is None or previous[0] != output or (bool(mask) and previous[1] != mask))
    return work.filter(pa.array(keep, pa.bool_()))


# ---------------------------------------------------------------- the job


def _fault_from_env(dst: str):
    """Test hook (see :class:`semcolor.bulk_stages.FaultPlan`): SEMCOLOR_FAULT_AFTER_BATCHES=N makes a model
    actor exit after N batches; SEMCOLOR_FAULT_KILL_DRIVER_AFTER_BATCHES=N makes it SIGKILL this driver.
    Once per SEMCOLOR_FAULT_MARKER file (default: a temp file named after DST)."""
    from semcolor.bulk_stages import FaultPlan

    for mode, var in (("actor", "SEMCOLOR_FAULT_AFTER_BATCHES"), ("driver", "SEMCOLOR_FAULT_KILL_DRIVER_AFTER_BATCHES")):
        if os.environ.get(var):
            marker = os.environ.get("SEMCOLOR_FAULT_MARKER") or os.path.join(
                tempfile.gettempdir(), f"semcolor-fault-{uuid.uuid5(uuid.NAMESPACE_URL, dst).hex}")
            log.warning("fault hook %s=%s armed (marker %s)", var, os.environ[var], marker)
            return FaultPlan(mode, int(os.environ[var]), marker, os.getpid())
    return None


def _actor_pool(actors: int | tuple[int, int]):
    import ray.data

    if isinstance(actors, tuple):
        lo, hi = actors
        if not 1 <= lo <= hi:
            raise ValueError(f"actors (min, max) must satisfy 1 <= min <= max, got {actors}")
        return ray.data.ActorPoolStrategy(min_size=lo, max_size=hi), hi
    if actors < 1:
        raise ValueError(f"actors must be >= 1, got {actors}")
    return ray.data.ActorPoolStrategy(size=actors), actors


ACTOR_BASE_MEMORY = 1 << 30
"""Bytes a model actor holds before its first batch (torch, the model, buffers): ~1.0 GB measured for the unet."""
ACTIVATION_BYTES_PER_PIXEL = 320
"""Peak inference activations per input pixel (measured: ~20 MB per 256 x 256 image, unet, CPU)."""


def actor_memory(batch_size: int, size: int) -> int:
    """Memory (bytes) to reserve per model actor: base + batch x size^2 x activations per pixel.

    A real reservation (Ray then never packs more actors on a node than fit), and it keeps the decode tasks
    a separate operator: Ray Data fuses a task map into the following actor map when their resource
    requests are equal, which would put decoding on the model actor's critical path.
    """
    return ACTOR_BASE_MEMORY + batch_size * size * size * ACTIVATION_BYTES_PER_PIXEL


def colorize(src: str, dst: str, checkpoint: str, size: int | None = None, batch_size: int = 16,
             actors: int | tuple[int, int] = 1, gpus_per_actor: float = 0.0, fmt: str = "png", quality: int = 90,
             masks: bool = False, limit: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
             threads_per_actor: int | None = None, cpus_per_actor: float | None = None,
             io_threads: int = 8) -> ColorizeSummary:
    """Colorize every image under ``src`` into ``dst`` at full resolution, skipping keys already done.

    Args:
        src: URL of a prefix of images (recursively), or of a ``.parquet`` / ``.csv`` manifest (column
            ``image``, optional ``key``). Any URL :mod:`semcolor.storage` accepts.
        dst: URL of the output prefix: ``DST/<key>.<ext>``, ``DST/masks/<key>.png``, ``DST/_manifest/``.
        checkpoint: model directory URL (config.json + model.safetensors).
        size: model resolution in pixels (square); default the checkpoint's ``input_size``.
        batch_size: images per model batch (and per decode / encode task).
        actors: model actors, or ``(min, max)`` for an autoscaling pool.
        gpus_per_actor: GPUs per model actor (> 0: CUDA with bf16 autocast and channels_last).
        fmt, quality: ``png`` / ``jpg`` / ``webp``; quality 1..100 for jpg / webp.
        masks: also write the foreground mask (0/255, or class ids) as ``DST/masks/<key>.png``.
        limit: only the first N inputs (sorted by source URL, before skipping done keys).
        max_pixels: sources with more pixels are recorded as ``too_large`` errors.
        threads_per_actor: torch threads per CPU actor; default this machine's cores / max actors.
        cpus_per_actor: CPUs each model actor reserves from Ray; default 1 with GPUs, else what leaves one
            CPU of the cluster for the decode / encode tasks: min(1, (CPUs - 1) / max actors), at least 0.25.
            A reservation only: the actor runs ``threads_per_actor`` threads, and the short decode / encode
            tasks interleave with inference.

    Thread budget on CPU: several 1-thread actors beat one multi-thread actor on a small machine (an
    OpenMP team stalls whenever a decode / encode task preempts one of its threads; separate actors just
    slow down a little). On 2 cores: ``actors=2`` (1 thread each). See ``semcolor bench colorize``.
        io_threads: threads per decode task fetching source bytes (hides object-store latency).

    Returns a :class:`ColorizeSummary`. Bad inputs never raise: they become error records. Raises
    ValueError for bad arguments and the checkpoint's errors before any work starts.
    """
    import ray
    import ray.data

    from semcolor.bulk_stages import ColorizeActor, decode_rows, merge_encode_write
    from semcolor.checkpoint import load_config

    ext = extension_of(fmt)
    quality = check_quality(quality)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    if gpus_per_actor < 0:
        raise ValueError(f"gpus_per_actor must be >= 0, got {gpus_per_actor}")
    config, _ = load_config(checkpoint)
    size = int(size or config.input_size)
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    compute, max_actors = _actor_pool(actors)

    work, ignored = plan_inputs(src, dst, ext, masks, limit)
    todo = drop_done(work, dst)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    summary = ColorizeSummary(run_id=run_id, src=src, dst=dst, inputs=work.num_rows,
                              skipped=work.num_rows - todo.num_rows, done=0, failed=0, ignored=ignored,
                              seconds=0.0, images_per_s=0.0, object_store_bytes_per_row=0.0)
    if todo.num_rows == 0:
        return summary

    # S3 settings travel as an argument to tasks (a per-stage runtime_env would force fresh worker
    # processes between stages); the actor is a fresh process anyway and gets them as env for the checkpoint.
    s3 = storage.S3Options.from_env() if any(storage.scheme_of(u) in ("s3", "s3a") for u in (src, dst)) else None
    actor_env = storage_env([checkpoint])
    if threads_per_actor is None and gpus_per_actor == 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads_per_actor = max(1, cores // max_actors)
    if cpus_per_actor is None:
        cpus = float(ray.cluster_resources().get("CPU", 1.0)) if ray.is_initialized() else float(os.cpu_count() or 1)
        cpus_per_actor = 1.0 if gpus_per_actor > 0 else min(1.0, max(0.25, (cpus - 1.0) / max_actors))
    if cpus_per_actor <= 0:
        raise ValueError(f"cpus_per_actor must be > 0, got {cpus_per_actor}")
    started = time.perf_counter()
    blocks = [todo.slice(i, batch_size) for i in range(0, todo.num_rows, batch_size)]
    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(decode_rows, batch_size=batch_size, batch_format="numpy", num_cpus=1,
                        fn_kwargs={"size": size, "max_pixels": int(max_pixels), "io_threads": io_threads, "s3": s3},
                        udf_modifying_row_count=False)
    ds = ds.map_batches(ColorizeActor, batch_size=batch_size, batch_format="numpy", compute=compute,
                        num_cpus=cpus_per_actor, num_gpus=gpus_per_actor, memory=actor_memory(batch_size, size),
                        fn_constructor_kwargs={"checkpoint": checkpoint, "size": size,
                                               "device": "cuda" if gpus_per_actor > 0 else "cpu",
                                               "threads": threads_per_actor, "fault": _fault_from_env(dst)},
                        udf_modifying_row_count=False, runtime_env={"env_vars": actor_env} if actor_env else None)
    ds = ds.map_batches(merge_encode_write, batch_size=batch_size, batch_format="numpy", num_cpus=1,
                        fn_kwargs={"fmt": ext, "quality": quality, "n_classes": config.n_classes,
                                   "run_id": run_id, "s3": s3},
                        udf_modifying_row_count=False)
    fs, path = storage.resolve(manifest_url(dst), s3=s3)  # the filesystem object carries the S3 settings
    ds.write_parquet(path, filesystem=fs)
    summary.seconds = time.perf_counter() - started
    summary.stage_cpu_seconds = stage_cpu_seconds(ds)

    records = read_records(dst)
    mine = latest_by_key(records.filter(pc.equal(records["run_id"], run_id)))
    if mine.num_rows != todo.num_rows:
        raise RuntimeError(f"run {run_id} wrote {mine.num_rows} records for {todo.num_rows} keys under "
                           f"{manifest_url(dst)}; rerun to finish the missing keys")
    ok = pc.equal(mine["status"], OK)
    summary.done = int(pc.sum(ok).as_py() or 0)
    summary.failed = mine.num_rows - summary.done
    summary.images_per_s = mine.num_rows / summary.seconds if summary.seconds > 0 else 0.0
    summary.object_store_bytes_per_row = float(pc.mean(mine["object_store_bytes"]).as_py() or 0.0)
    bad = mine.filter(pc.invert(ok))
    summary.failures_by_kind = dict(Counter(bad["kind"].to_pylist()))
    summary.failure_examples = list(zip(*(bad[c].to_pylist()[:10] for c in ("key", "kind", "reason"))))
    return summary


# ---------------------------------------------------------------- CLI


def stage_cpu_seconds(ds) -> dict[str, float]:
    """Ray Data operator name -> CPU seconds of its tasks (DeveloperAPI stats summary of an executed dataset)."""
    out: dict[str, float] = {}

    def walk(summary) -> None:
        for parent in summary.parents:
            walk(parent)
        for op in summary.operators_stats:
            if op.cpu_time is not None:
                out[op.operator_name] = out.get(op.operator_name, 0.0) + float(op.cpu_time.sum)

    try:
        walk(ds.get_stats_summary())
    except (AttributeError, TypeError) as exc:  # a DeveloperAPI: say so when it moves, do not fail the job
        log.warning("Ray Data stats summary unavailable (%s); no per-stage CPU figures", exc)
    return out


def parse_actors(text: str) -> int | tuple[int, int]:
    """``"4"`` -> 4; ``"1:4"`` -> (1, 4) (an autoscaling pool)."""
    try:
        if ":" in text:
            lo, hi = text.split(":", 1)
            return int(lo), int(hi)
        return int(text)
    except ValueError:
        raise ValueError(f"--actors must be N or MIN:MAX, got {text!r}") from None


def run_colorize(args: argparse.Namespace) -> int:
    """`semcolor colorize SRC DST --checkpoint URL [...]`: the job with Ray Data progress bars, then a summary."""
    init_ray(args.address, args.num_cpus)
    summary = colorize(
        args.src, args.dst, args.checkpoint, size=args.size, batch_size=args.batch_size,
        actors=parse_actors(str(args.actors)), gpus_per_actor=args.gpus_per_actor, fmt=args.format,
        quality=args.quality, masks=args.masks, limit=args.limit, max_pixels=args.max_pixels,
        threads_per_actor=args.threads_per_actor,
    )
    for key, kind, reason in summary.failure_examples:
        print(f"failed {key} ({kind}): {reason}", file=sys.stderr)
    print(summary.line())
    return 0
