"""Bulk colorization of an archive on Ray Data: full resolution, resumable, every input accounted for.

Pipeline (one streaming Ray Data job; stages in :mod:`semcolor.bulk.stages`)::

    list SRC (or read a manifest), drop keys already recorded ok in DST/_manifest   [driver]
      -> read + decode + full-res uint8 L + model-size L      CPU tasks
      -> predict a/b + foreground at model size                actor pool (model loaded once per actor)
      -> upsample a/b, merge with full-res L, encode, write    CPU tasks, atomic writes
      -> result records                                        write_parquet(DST/_manifest/), in the same task

Outputs: ``DST/<key>.<ext>`` at the source's exact (EXIF-oriented) size, optional ``DST/masks/<key>.png``,
records ``DST/_manifest/*.parquet`` (columns in :mod:`semcolor.bulk.records`).

Resume: a key counts as done only when its record says ok, and a record is made only after the key's files were
written atomically; a rerun skips keys recorded ok for the same output and redoes the rest. Why these records and
not Ray Data's job-level checkpointing: docs/design.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import posixpath
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from semcolor.bulk.records import (
    COMPACT_ABOVE,
    compact_records,
    done_outputs,
    latest_by_key,
    manifest_url,
    read_records,
    record_files,
)
from semcolor.core import storage
from semcolor.core.cache import CACHE_ENV
from semcolor.core.decode import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, OK
from semcolor.core.encode import check_quality, extension_of
from semcolor.core.flip_average import check_tta, tta_option
from semcolor.core.refine import check_refine, refine_option
from semcolor.data.pairs import read_manifest_columns
from semcolor.model.config import backend_option, check_vividness, precision_option, vividness_option
from semcolor.model.onnx_format import check_backend, check_precision
from semcolor.options import config_from_args, option, parse_count_range
from semcolor.ray_env import (
    alive_nodes,
    init_ray,
    require_cuda_where_gpus,
    require_shared_paths,
    storage_env,
)

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".parquet", ".csv")
DUPLICATE_KEY = "duplicate_key"
L_CARRY, L_REDECODE = "carry", "redecode"
L_PATHS = (L_CARRY, L_REDECODE)
"""How the merge stage gets a source's full-resolution lightness (``--full-res-l``)."""
JPEG_DECODERS = ("auto", "cpu", "actor")
"""Where JPEG sources are decoded (``--jpeg-decode``)."""


@dataclass(kw_only=True)
class ColorizeConfig:
    """One bulk colorization job: what to read, where to write, the model and the resources it runs on."""

    src: str = option(help="source URL: a prefix of images (recursively), or a .parquet/.csv manifest with column "
                      "image and optionally key", positional=True)
    dst: str = option(help="destination URL: DST/<key>.<ext>, DST/masks/<key>.png, DST/_manifest/ records",
                      positional=True)
    checkpoint: str = option(help="model directory URL (config.json + model.safetensors, or a Ray Train checkpoint)")
    size: int | None = option(None, help="model resolution in pixels; default the checkpoint's input size")
    vividness: float = vividness_option()
    refine: str = refine_option()
    tta: str = tta_option()
    batch_size: int = option(16, help="images per model batch (and per decode / encode task)")
    actors: str = option("1", help="model actors: N, or MIN:MAX for an autoscaling pool; on CPU several one-thread "
                         "actors beat one many-thread actor")
    gpus_per_actor: float = option(0.0, help="GPUs per model actor (> 0: CUDA with bf16 autocast and channels_last)")
    format: str = option("png", choices=("png", "jpg", "webp"), help="output image format")
    quality: int = option(90, help="jpg / webp quality, 1..100")
    masks: bool = option(False, help="also write the foreground mask as DST/masks/<key>.png (0/255, or class ids)")
    limit: int | None = option(None, help="only the first N inputs (sorted by source URL, before skipping done keys)")
    max_pixels: int = option(DEFAULT_MAX_PIXELS, help="sources with more pixels (width x height) are recorded as "
                             "too_large errors")
    backend: str = backend_option()
    precision: str = precision_option()
    threads_per_actor: int | None = option(None, help="torch (or onnxruntime) threads per CPU model actor; default "
                                           "this machine's cores / actors")
    cpus_per_actor: float | None = option(None, help="CPUs each model actor reserves; default 1 with GPUs, else "
                                          "min(1, (CPUs - 1) / actors), at least 0.25, leaving a CPU to the decode "
                                          "and encode tasks")
    io_threads: int = option(8, help="threads per task reading sources (decode) or writing outputs (merge): they "
                             "hide the object store's latency per request")
    full_res_l: str = option(L_CARRY, choices=L_PATHS, help="how the merge gets the source's full-resolution "
                             "lightness: carry (the decode stage's copy travels with the row through the model "
                             "actors: no second read) or redecode (the merge stage reads and decodes the source "
                             "again: one more GET and decode per image, and the model actors' links carry only "
                             "model-size arrays, for GPU nodes whose network sets the pace on large scans)")
    jpeg_decode: str = option("auto", choices=JPEG_DECODERS, help="where JPEG sources are decoded: cpu (the decode "
                              "tasks, Pillow), actor (the model actors, in one batch on their device: nvJPEG on a "
                              "GPU, so a GPU node's CPUs only read bytes; Pillow for what nvJPEG refuses and for other "
                              "formats), or auto (actor when --gpus-per-actor > 0, else cpu). The actor layout always "
                              "carries the full-resolution lightness back from the actor (--full-res-l has no effect "
                              "on JPEGs)")

    def __post_init__(self) -> None:
        extension_of(self.format)
        parse_actors(self.actors)
        check_vividness(self.vividness)
        check_backend(self.backend, self.checkpoint)
        check_precision(self.precision, self.backend, self.checkpoint)
        check_refine(self.refine)
        check_tta(self.tta)
        check_quality(self.quality)
        if self.batch_size < 1 or self.max_pixels < 1 or self.io_threads < 1:
            raise ValueError(f"batch_size, max_pixels and io_threads must be >= 1; got {self.batch_size}, "
                             f"{self.max_pixels}, {self.io_threads}")
        if self.gpus_per_actor < 0:
            raise ValueError(f"gpus_per_actor must be >= 0, got {self.gpus_per_actor}")
        if self.full_res_l not in L_PATHS:
            raise ValueError(f"full_res_l must be one of {list(L_PATHS)}; got {self.full_res_l!r}")
        if self.jpeg_decode not in JPEG_DECODERS:
            raise ValueError(f"jpeg_decode must be one of {list(JPEG_DECODERS)}; got {self.jpeg_decode!r}")
        if self.cpus_per_actor is not None and self.cpus_per_actor <= 0:
            raise ValueError(f"cpus_per_actor must be > 0, got {self.cpus_per_actor}")
        if self.size is not None and self.size < 32:
            raise ValueError(f"size must be >= 32 pixels, got {self.size}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0, got {self.limit}")

    @property
    def ext(self) -> str:
        """The output files' extension."""
        return extension_of(self.format)

    @property
    def decodes_jpeg_in_actor(self) -> bool:
        """JPEG sources are decoded by the model actors (``--jpeg-decode actor``, or auto with GPU actors)."""
        return self.jpeg_decode == "actor" or (self.jpeg_decode == "auto" and self.gpus_per_actor > 0)

    @property
    def actor_range(self) -> int | tuple[int, int]:
        """``actors`` as N or (MIN, MAX)."""
        return parse_actors(self.actors)


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


def read_source_manifest(url: str) -> tuple[list[str], list[str]]:
    """A Parquet/CSV manifest with column ``image`` (URLs; relative ones against the manifest's folder) and
    optionally ``key`` -> (keys, source URLs). Without ``key``, keys are paths under the common folder."""
    keys, urls = read_manifest_columns(url, ("image",))
    return keys, urls["image"]


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


def _actor_pool(actors: int | tuple[int, int]):
    """:func:`parse_actors`'s N or (MIN, MAX) -> (Ray Data's pool strategy, the most actors it may run)."""
    import ray.data

    if isinstance(actors, tuple):
        return ray.data.ActorPoolStrategy(min_size=actors[0], max_size=actors[1]), actors[1]
    return ray.data.ActorPoolStrategy(size=actors), actors


WAVE_BLOCKS = 4096
"""Blocks of one batch in one Ray Data execution: a job of more keys runs them in waves of this many blocks (the
driver's object-store puts and Ray Data's per-block scheduling grow with the blocks of one Dataset: with a million
keys as one Dataset of 62,500 blocks no output appeared for minutes)."""


def waves(keys: int, batch_size: int) -> list[tuple[int, int]]:
    """(first row, rows) of each wave of at most :data:`WAVE_BLOCKS` batches, in key order."""
    per = WAVE_BLOCKS * batch_size
    return [(start, min(per, keys - start)) for start in range(0, keys, per)]


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


def export_for_cpu_actors(checkpoint: str, backend: str, precision: str = "auto") -> None:
    """When CPU actors on this machine will run ``checkpoint`` on onnxruntime (``backend`` auto or onnxruntime, and
    ``precision`` not bf16, which runs on torch):
    export and verify it here, once per machine (:func:`semcolor.model.export_cache.cached_export`), before they
    start. An actor that exports holds torch and the exporter's memory beside its model (more than its memory
    reservation), and every actor waits for it; on other nodes the first actor still exports."""
    from semcolor.model.inference import resolve_backend
    from semcolor.model.export_cache import cached_export
    from semcolor.model.onnx_format import is_onnx

    if not is_onnx(checkpoint) and resolve_backend(backend, "cpu", precision) == "onnxruntime":
        cached_export(checkpoint)


def stage_task_cpus(cpus: float, actor_cpus: float) -> float:
    """CPUs each decode / merge task reserves: 1, or on a small cluster half of what the model actors leave (at
    least 0.25), so that a task of each stage always fits beside the actors: a local Ray of 1 CPU otherwise waited
    forever, and on 2 CPUs decode tasks kept the one free CPU while merges (the outputs) waited."""
    return min(1.0, max(0.25, (cpus - actor_cpus) / 2))


def colorize(src: str, dst: str, checkpoint: str, **options: Any) -> ColorizeSummary:
    """Colorize every image under ``src`` into ``dst`` at full resolution, skipping keys already done.

    ``options``: the other :class:`ColorizeConfig` fields (``batch_size``, ``actors``, ``format``, ``masks`` ...).
    Returns a :class:`ColorizeSummary`. Bad inputs never raise: they become error records. Raises ValueError for
    bad arguments and the checkpoint's errors before any work starts.
    """
    return run_job(ColorizeConfig(src=src, dst=dst, checkpoint=checkpoint, **options))


def run_job(config: ColorizeConfig, model_stage: type | None = None) -> ColorizeSummary:
    """Run the job :class:`ColorizeConfig` describes on the connected Ray (a local Ray starts if none).

    ``model_stage``: the actor class of the model stage (default :class:`semcolor.bulk.stages.ColorizeActor`);
    tests put a failing subclass here to prove recovery.

    Thread budget on CPU: several 1-thread actors beat one multi-thread actor on a small machine (an OpenMP
    team stalls whenever a decode / encode task preempts one of its threads; separate actors just slow down a
    little). On 2 cores: ``actors=2`` (1 thread each). See ``semcolor bench colorize``.
    """
    import ray
    import ray.data

    from semcolor.bulk.stages import ColorizeActor, decode_rows, merge_encode_write
    from semcolor.core.lab_table import lab_table
    from semcolor.model.inference import model_config_of, resolve_backend

    model_config = model_config_of(config.checkpoint)  # a checkpoint directory or a .onnx file
    size = int(config.size or model_config.input_size)
    compute, max_actors = _actor_pool(config.actor_range)

    work, ignored = plan_inputs(config.src, config.dst, config.ext, config.masks, config.limit)
    todo = drop_done(work, config.dst)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    summary = ColorizeSummary(run_id=run_id, src=config.src, dst=config.dst, inputs=work.num_rows,
                              skipped=work.num_rows - todo.num_rows, done=0, failed=0, ignored=ignored,
                              seconds=0.0, images_per_s=0.0, object_store_bytes_per_row=0.0)
    if todo.num_rows == 0:
        return summary

    lab_table()  # built once per machine (with torch, ~1 s) and cached: this node's merge workers map it, torch-free
    if config.gpus_per_actor == 0 and (not ray.is_initialized() or alive_nodes() == 1):  # the actors run here
        export_for_cpu_actors(config.checkpoint, config.backend, config.precision)

    # S3 settings travel as an argument to tasks (a per-stage runtime_env would force fresh worker
    # processes between stages); the actor is a fresh process anyway and gets them as env for the checkpoint.
    s3 = storage.s3_options_for([config.dst, *todo["source"].to_pylist()])
    actor_env = storage_env([config.checkpoint])
    if resolve_backend(config.backend, "cpu", config.precision) == "onnxruntime" and os.environ.get(CACHE_ENV):
        # where CPU actors cache their export
        actor_env[CACHE_ENV] = os.environ[CACHE_ENV]
    gpus = config.gpus_per_actor
    threads = config.threads_per_actor
    if threads is None and gpus == 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // max_actors)
    cpus = float(ray.cluster_resources().get("CPU", 1.0)) if ray.is_initialized() else float(os.cpu_count() or 1)
    cpus_per_actor = config.cpus_per_actor
    if cpus_per_actor is None:
        cpus_per_actor = 1.0 if gpus > 0 else min(1.0, max(0.25, (cpus - 1.0) / max_actors))
    task_cpus = stage_task_cpus(cpus, max_actors * cpus_per_actor)
    batch_size = config.batch_size
    started = time.perf_counter()
    fs, path = storage.resolve(manifest_url(config.dst), s3=s3)  # the filesystem object carries the S3 settings
    storage.makedirs(manifest_url(config.dst))  # once, here: the records' write below does not make it
    stage_cpu: Counter = Counter()
    planned = waves(todo.num_rows, batch_size)
    for number, (first, rows) in enumerate(planned, 1):
        if len(planned) > 1:
            print(f"colorize: wave {number}/{len(planned)}: keys {first + 1}-{first + rows} of {todo.num_rows}",
                  flush=True)
        wave = todo.slice(first, rows)
        # from_blocks: block metadata computed here (from_arrow asks a Ray task per block for it)
        ds = ray.data.from_blocks([wave.slice(i, batch_size) for i in range(0, rows, batch_size)])
        ds = ds.map_batches(decode_rows, batch_size=batch_size, batch_format="numpy", num_cpus=task_cpus,
                            fn_kwargs={"size": size, "max_pixels": int(config.max_pixels),
                                       "io_threads": config.io_threads, "s3": s3,
                                       "carry_l8": config.full_res_l == L_CARRY,
                                       "defer_jpeg": config.decodes_jpeg_in_actor},
                            udf_modifying_row_count=False)
        ds = ds.map_batches(model_stage or ColorizeActor, batch_size=batch_size, batch_format="numpy",
                            compute=compute, num_cpus=cpus_per_actor, num_gpus=gpus,
                            memory=actor_memory(batch_size, size),
                            fn_constructor_kwargs={"checkpoint": config.checkpoint, "size": size,
                                                   "device": "cuda" if gpus > 0 else "cpu", "threads": threads,
                                                   "vividness": config.vividness, "backend": config.backend,
                                                   "max_pixels": int(config.max_pixels), "tta": config.tta,
                                                   "precision": config.precision},
                            udf_modifying_row_count=False,
                            runtime_env={"env_vars": actor_env} if actor_env else None)
        ds = ds.map_batches(merge_encode_write, batch_size=batch_size, batch_format="numpy", num_cpus=task_cpus,
                            fn_kwargs={"fmt": config.ext, "quality": config.quality,
                                       "n_classes": model_config.n_classes, "run_id": run_id, "s3": s3,
                                       "refine": config.refine, "io_threads": config.io_threads,
                                       "max_pixels": int(config.max_pixels)},
                            udf_modifying_row_count=False)
        # The records' write asks for the merge task's CPUs, so Ray Data fuses it into that task: each block's
        # records are written as its rows are. With the default 1 CPU it was an operator of its own that got a
        # slot only when the stages upstream left one free: on 2 CPUs at the end of the run, where its record
        # files went up one after another (a tail of round trips; a crash before then left outputs without
        # records, redone on the rerun). The folder is made once above: else each block's write makes it again
        # (on S3 two marker PUTs and two HEADs per block).
        ds.write_parquet(path, filesystem=fs, try_create_dir=False, ray_remote_args={"num_cpus": task_cpus})
        stage_cpu.update(stage_cpu_seconds(ds))
    summary.seconds = time.perf_counter() - started
    summary.stage_cpu_seconds = dict(stage_cpu)

    records = read_records(config.dst)
    mine = latest_by_key(records.filter(pc.equal(records["run_id"], run_id)))
    if mine.num_rows != todo.num_rows:
        raise RuntimeError(f"run {run_id} wrote {mine.num_rows} records for {todo.num_rows} keys under "
                           f"{manifest_url(config.dst)}; rerun to finish the missing keys")
    ok = pc.equal(mine["status"], OK)
    summary.done = int(pc.sum(ok).as_py() or 0)
    summary.failed = mine.num_rows - summary.done
    summary.images_per_s = mine.num_rows / summary.seconds if summary.seconds > 0 else 0.0
    summary.object_store_bytes_per_row = float(pc.mean(mine["object_store_bytes"]).as_py() or 0.0)
    bad = mine.filter(pc.invert(ok))
    summary.failures_by_kind = dict(Counter(bad["kind"].to_pylist()))
    summary.failure_examples = list(zip(*(bad[c].to_pylist()[:10] for c in ("key", "kind", "reason"))))
    if len(record_files(config.dst)[1]) > COMPACT_ABOVE:  # a rerun then reads one file, not one per block
        compact_records(config.dst)
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
    """``"4"`` -> 4; ``"1:4"`` -> (1, 4) (an autoscaling pool). Raises ValueError naming the valid forms."""
    return parse_count_range(text, "actors")


def run_colorize(args: argparse.Namespace) -> int:
    """`semcolor colorize SRC DST --checkpoint URL [...]`: the job with Ray Data progress bars, then a summary."""
    from semcolor.model.inference import model_config_of

    config = config_from_args(ColorizeConfig, args)
    model_config_of(config.checkpoint)  # a bad checkpoint fails in one line before any Ray starts
    init_ray(args.address, args.num_cpus, keep_idle_workers=True)
    require_shared_paths({"SRC": config.src, "DST": config.dst, "--checkpoint": config.checkpoint}, args.shared_path)
    require_cuda_where_gpus("--gpus-per-actor", config.gpus_per_actor)
    summary = run_job(config)
    for key, kind, reason in summary.failure_examples:
        print(f"failed {key} ({kind}): {reason}", file=sys.stderr)
    print(summary.line())
    return 0
