"""The three Ray Data stages of bulk colorization, as plain functions / a class (testable without Ray).

1. :func:`decode_rows` (CPU tasks): read bytes (threaded, for object-store latency; each row is decoded as its read
   ends, while the later rows are still read), decode with EXIF
   orientation (:func:`semcolor.core.decode.decode_image`), keep the full-resolution lightness as compact uint8
   ``l8`` bytes and a model-size copy ``small``.
2. :class:`ColorizeActor` (actor pool, one model load per actor): ``small`` -> ``ab8`` + ``fg8`` at model size.
3. :func:`merge_encode_write` (CPU tasks): AB and the mask upsampled (guided by the full-resolution L, or
   bilinear: ``refine``) and merged with the full-resolution L, encoded, and written atomically to ``output``
   (and the mask to ``mask``) on threads while the next rows encode; returns one result record per row, with the
   output's quality signals (:mod:`semcolor.bulk.signals`).

Every row travels through all stages, bad rows included (``status == "error"`` with ``kind`` and
``reason``), so the final records account for every input. Exceptions about one row become that row's
record; only bugs (and dead processes, which Ray retries) escape.

Columns between stages (N rows, model size S):
    key, source, output, mask   str (mask "" when not asked for)
    status, kind, reason        str
    width, height               int32, the output size (source size after EXIF orientation)
    source_bytes                int64
    source_color                bool, the source has colour (:func:`semcolor.bulk.signals.source_has_color`)
    l8                          binary, H*W bytes: full-resolution L * 255/100, row-major (b"" on error, and
                                with ``--full-res-l redecode``: the merge stage decodes the source again)
    small                       uint8 (N, S, S): l8 resized to the model size          [decode -> merge]
    ab8                         int8 (N, 2, S, S): predicted a/b in LAB units          [model -> merge]
    fg8                         uint8 (N, S, S): foreground probability * 255 or class id
    seconds                     float64, processing time accumulated per row
    object_store_bytes          int64, bytes of the heavy columns this row carried between stages
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from semcolor.bulk.records import RECORD_SCHEMA
from semcolor.bulk.signals import output_signals, source_has_color
from semcolor.core import storage
from semcolor.core.colorizer import mask_full_resolution, merge_full_resolution
from semcolor.core.decode import (
    DEFAULT_MAX_PIXELS,
    ERROR,
    OK,
    READ_ERROR,
    DataError,
    decode_image,
    open_image,
)
from semcolor.core.encode import encode_mask, encode_rgb
from semcolor.core.flip_average import DEFAULT_TTA
from semcolor.core.lightness import prepare_l8, resize_l8, rgb_to_l8
from semcolor.core.refine import DEFAULT_REFINE

DECODE_FAILED = "decode_failed"
ENCODE_ERROR = "encode_error"
WRITE_ERROR = "write_error"


def decode_rows(batch: dict[str, np.ndarray], size: int, max_pixels: int, io_threads: int = 8,
                s3: storage.S3Options | None = None, carry_l8: bool = True, defer_jpeg: bool = False
                ) -> dict[str, np.ndarray]:
    """Stage 1. In: ``key``, ``source``, ``output``, ``mask``, ``status``, ``kind``, ``reason`` (rows may
    arrive already failed, e.g. duplicate keys). Out: the stage columns of the module docstring up to ``small``.
    ``s3``: the driver's S3 settings (workers may have started with another environment). ``carry_l8`` False:
    ``l8`` stays empty (the merge stage decodes the source again). ``defer_jpeg``: a JPEG whose header is sound
    and within ``max_pixels`` is not decoded here: its bytes go on in ``jpeg`` for the model actor to decode on
    its device (:mod:`semcolor.bulk.jpeg_decode`; ``width``, ``height``, ``small`` and ``l8`` are filled there);
    other formats are decoded here as always.
    """
    n = len(batch["key"])
    status = [str(s) for s in batch["status"]]
    kinds = [str(k) for k in batch["kind"]]
    reasons = [str(r) for r in batch["reason"]]
    sources = [str(s) for s in batch["source"]]
    todo = [i for i in range(n) if status[i] == OK]
    small = np.zeros((n, size, size), dtype=np.uint8)
    l8s: list[bytes] = [b""] * n
    width = np.zeros(n, dtype=np.int32)
    height = np.zeros(n, dtype=np.int32)
    source_bytes = np.zeros(n, dtype=np.int64)
    seconds = np.zeros(n, dtype=np.float64)
    colored = np.zeros(n, dtype=bool)
    jpegs: list[bytes] = [b""] * n
    with ThreadPoolExecutor(max_workers=max(1, min(io_threads, len(todo) or 1))) as pool:
        reads = pool.map(lambda i: (time.perf_counter(), storage.read_bytes_or_error(sources[i], s3=s3),
                                    time.perf_counter()), todo)
        for i, (t_start, data, t_read) in zip(todo, reads):  # decoded as its read ends, beside later reads
            started = time.perf_counter()
            key = str(batch["key"][i])
            try:
                if isinstance(data, Exception):
                    kinds[i], reasons[i] = READ_ERROR, f"cannot read {sources[i]}: {type(data).__name__}: {data}"
                    raise _RowFailed
                source_bytes[i] = len(data)
                if defer_jpeg and open_image(data, max_pixels, key).format == "JPEG":  # header checks only
                    jpegs[i] = data
                else:
                    rgb = decode_image(data, max_pixels=max_pixels, key=key)
                    colored[i] = source_has_color(rgb)
                    l8, small[i] = prepare_l8(rgb, size)
                    del rgb
                    height[i], width[i] = l8.shape
                    if carry_l8:
                        l8s[i] = l8.tobytes()
            except _RowFailed:
                status[i] = ERROR
            except DataError as exc:
                status[i], kinds[i], reasons[i] = ERROR, exc.kind, exc.reason
            except Exception as exc:  # a decoder bug or MemoryError on one file must not stop the archive
                status[i], kinds[i] = ERROR, DECODE_FAILED
                reasons[i] = f"unexpected {type(exc).__name__} while decoding: {exc}"
            seconds[i] = (t_read - t_start) + (time.perf_counter() - started)
    carried = np.array([len(b) for b in l8s], dtype=np.int64) + size * size
    return {
        "key": batch["key"], "source": batch["source"], "output": batch["output"], "mask": batch["mask"],
        "status": np.array(status, dtype=object), "kind": np.array(kinds, dtype=object),
        "reason": np.array(reasons, dtype=object), "width": width, "height": height,
        "source_bytes": source_bytes, "l8": np.array(l8s, dtype=object), "small": small,
        "seconds": seconds, "object_store_bytes": carried + np.array([len(j) for j in jpegs], dtype=np.int64),
        "source_color": colored, "jpeg": np.array(jpegs, dtype=object),
    }


class _RowFailed(Exception):
    """Internal: the row's kind/reason are already set."""


class ColorizeActor:
    """Stage 2: loads :class:`semcolor.core.colorizer.Colorizer` once per actor; ``small`` -> ``ab8``, ``fg8``.

    ``threads``: torch (or onnxruntime) intra-op threads for this actor (CPU inference); ``vividness``: see
    :meth:`semcolor.core.colorizer.Colorizer.predict`; ``backend``: auto, torch or onnxruntime, resolved on the
    actor's node (:func:`semcolor.model.inference.resolve_backend`: onnxruntime on CPU for auto; then the actor
    never imports torch once the node has the export cached); ``precision``: the torch forward's (auto, bf16 or
    fp32; bf16 runs torch on a CPU actor too); ``tta``: test-time augmentation (:mod:`semcolor.core.flip_average`).
    Inference is deterministic (deterministic algorithms, no cuDNN autotuning), so a key redone on a rerun gets the
    same bytes; in bf16 a key redone in another batch may differ by 1 (a batch's kernels round differently).

    Rows whose JPEG bytes the decode stage passed on (``jpeg``, see :func:`decode_rows` ``defer_jpeg``) are decoded
    here first, in one batch on the actor's device (nvJPEG on a GPU, :mod:`semcolor.bulk.jpeg_decode`; Pillow for
    what it refuses); their ``l8``, ``small``, ``width``, ``height`` and ``source_color`` are filled, a file
    neither decoder reads becomes an error row as in the decode stage, and the bytes go no further.
    """

    def __init__(self, checkpoint: str, size: int, device: str = "auto", threads: int | None = None,
                 vividness: float | None = None, backend: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
                 tta: str = DEFAULT_TTA, precision: str = "auto") -> None:
        from semcolor.model.inference import load_colorizer, resolve_backend

        if device == "cuda":  # a node can declare a GPU it cannot use: say so here, not deep in torch
            from semcolor.ray_env import cuda_problem

            problem = cuda_problem("--gpus-per-actor")
            if problem:
                raise RuntimeError(problem)
        if resolve_backend(backend, device, precision) == "torch":  # onnxruntime on a CPU actor: no torch import
            import torch

            from semcolor.model.torch_predictor import make_deterministic

            if threads is not None:
                torch.set_num_threads(max(1, int(threads)))
            make_deterministic()
        self.colorizer = load_colorizer(checkpoint, device=device, size=size, backend=backend, threads=threads,
                                        tta=tta, precision=precision)
        self.size = size
        self.vividness = vividness
        self.decode_device = "cuda" if device == "cuda" else "cpu"
        self.max_pixels = max_pixels

    def _decode_jpegs(self, batch: dict[str, np.ndarray]) -> None:
        """Decode the rows carrying ``jpeg`` bytes on this actor's device; replaces their stage columns."""
        from semcolor.bulk.jpeg_decode import decode_to_l8

        rows = [i for i, data in enumerate(batch["jpeg"]) if len(data) and batch["status"][i] == OK]
        started = time.perf_counter()
        decoded = decode_to_l8([bytes(batch["jpeg"][i]) for i in rows], [str(batch["key"][i]) for i in rows],
                               self.decode_device, self.max_pixels)
        share = (time.perf_counter() - started) / max(1, len(rows))
        columns = {name: np.array(batch[name]) for name in ("status", "kind", "reason", "small", "height",
                                                             "width", "source_color", "l8", "seconds")}
        for i, result in zip(rows, decoded):  # a writable copy of each column (Ray's batches may be read-only)
            columns["seconds"][i] += share
            if result.error is not None:
                columns["status"][i], columns["kind"][i] = ERROR, result.error.kind
                columns["reason"][i] = result.error.reason
                continue
            columns["small"][i] = resize_l8(result.l8, self.size)
            columns["height"][i], columns["width"][i] = result.l8.shape
            columns["source_color"][i] = result.color
            columns["l8"][i] = result.l8.tobytes()
        batch.update(columns)
        batch["jpeg"] = np.array([b""] * len(columns["l8"]), dtype=object)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "jpeg" in batch and any(len(data) for data in batch["jpeg"]):
            self._decode_jpegs(batch)
        started = time.perf_counter()
        small = batch["small"]  # kept: the merge's guided upsampling uses it as its model-size guide
        n = len(small)
        ok = np.array([s == OK for s in batch["status"]], dtype=bool)
        ab8 = np.zeros((n, 2, self.size, self.size), dtype=np.int8)
        fg8 = np.zeros((n, self.size, self.size), dtype=np.uint8)
        if ok.any():
            ab8[ok], fg8[ok] = self.colorizer.predict(small[ok], self.vividness)
        share = (time.perf_counter() - started) / max(1, int(ok.sum()))
        batch["seconds"] = batch["seconds"] + np.where(ok, share, 0.0)
        batch["object_store_bytes"] = batch["object_store_bytes"] + np.array(
            [len(b) for b in batch["l8"]], dtype=np.int64) + ab8[0].nbytes + fg8[0].nbytes
        batch["ab8"], batch["fg8"] = ab8, fg8
        return batch


def _redecode_l8(key: str, source: str, data: bytes | Exception, max_pixels: int, shape: tuple[int, int]
                 ) -> np.ndarray:
    """The full-resolution L of a source read again (the same steps as :func:`decode_rows`). Raises _StageError."""
    if isinstance(data, Exception):
        raise _StageError(READ_ERROR, f"cannot read {source} again: {type(data).__name__}: {data}")
    try:
        l8 = rgb_to_l8(decode_image(data, max_pixels=max_pixels, key=key))
    except DataError as exc:
        raise _StageError(exc.kind, f"on the second read: {exc.reason}") from exc
    if l8.shape != shape:  # the source changed between the two reads
        raise _StageError(DECODE_FAILED, f"{source} changed while the job ran: {l8.shape[::-1]} pixels, "
                          f"was {shape[::-1]}")
    return l8


def _encode_row(l8: np.ndarray, small: np.ndarray, ab8: np.ndarray, fg8: np.ndarray, fmt: str, quality: int,
                n_classes: int, refine: str, masks: bool) -> tuple[bytes, bytes]:
    """Merge and encode one row: (image bytes, mask bytes or b""). Raises _StageError."""
    try:
        image = encode_rgb(merge_full_resolution(l8, ab8, small, refine), fmt, quality)
        mask = encode_mask(mask_full_resolution(fg8, l8, n_classes, small, refine)) if masks else b""
    except Exception as exc:
        raise _StageError(ENCODE_ERROR, f"cannot merge/encode {fmt}: {type(exc).__name__}: {exc}") from exc
    return image, mask


def _write_row(output: str, image: bytes, mask_url: str, mask: bytes, s3: storage.S3Options | None
               ) -> tuple[int, float]:
    """Write one row's mask, then its image (both written before the caller makes the ok record): (bytes written,
    seconds it took). Raises _StageError."""
    started = time.perf_counter()
    try:
        if mask_url:
            storage.write_bytes(mask_url, mask, s3=s3)
        storage.write_bytes(output, image, s3=s3)
    except Exception as exc:
        raise _StageError(WRITE_ERROR, f"cannot write {output}: {type(exc).__name__}: {exc}") from exc
    return len(image) + len(mask), time.perf_counter() - started


class _StageError(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def merge_encode_write(batch: dict[str, np.ndarray], fmt: str, quality: int, n_classes: int,
                       run_id: str, s3: storage.S3Options | None = None, refine: str = DEFAULT_REFINE,
                       io_threads: int = 8, max_pixels: int = DEFAULT_MAX_PIXELS) -> pa.Table:
    """Stage 3: full-resolution merge + encode + atomic write per ok row -> records (:data:`RECORD_SCHEMA`).

    Rows are merged and encoded one after another; their writes run on ``io_threads`` threads meanwhile (an
    object store answers each PUT after tens of milliseconds: the writes overlap the next rows' encoding and each
    other). Rows that arrive without ``l8`` (``--full-res-l redecode``) read their source again on the same threads,
    all at the start, and decode it (``max_pixels`` as in the decode stage). A row's record says ok only after its
    image (and mask) were written; failures become error records.
    """
    n = len(batch["key"])
    status = [str(s) for s in batch["status"]]
    kinds = [str(k) for k in batch["kind"]]
    reasons = [str(r) for r in batch["reason"]]
    outputs: list[str | None] = [str(o) for o in batch["output"]]
    masks: list[str | None] = [str(m) or None for m in batch["mask"]]
    written = np.zeros(n, dtype=np.int64)
    seconds = np.asarray(batch["seconds"], dtype=np.float64).copy()
    finished = np.zeros(n, dtype=np.float64)
    signals: list[dict[str, float] | None] = [None] * n
    writes: dict[int, Future] = {}
    with ThreadPoolExecutor(max_workers=max(1, io_threads)) as pool:
        sources = [str(s) for s in batch["source"]]
        rereads = {i: pool.submit(storage.read_bytes_or_error, sources[i], s3=s3) for i in range(n)
                   if status[i] == OK and not len(batch["l8"][i])}
        for i in range(n):
            started = encoded = time.perf_counter()
            if status[i] == OK:
                try:
                    shape = (int(batch["height"][i]), int(batch["width"][i]))
                    l8 = (_redecode_l8(str(batch["key"][i]), sources[i], rereads.pop(i).result(), max_pixels, shape)
                          if i in rereads else np.frombuffer(batch["l8"][i], dtype=np.uint8).reshape(shape))
                    image, mask = _encode_row(l8, batch["small"][i], batch["ab8"][i], batch["fg8"][i], fmt, quality,
                                              n_classes, refine, bool(masks[i]))
                    signals[i] = output_signals(batch["small"][i], batch["ab8"][i], batch["fg8"][i], n_classes)
                    encoded = time.perf_counter()  # before the write starts: its thread may run before submit returns
                    writes[i] = pool.submit(_write_row, str(outputs[i]), image, masks[i] or "", mask, s3)
                except _StageError as exc:
                    status[i], kinds[i], reasons[i] = ERROR, exc.kind, exc.reason
            if i not in writes:  # failed: done now
                encoded, finished[i] = time.perf_counter(), time.time()
            seconds[i] += encoded - started  # merge and encode; the write's own time is added below
        for i, write in writes.items():
            try:
                written[i], write_seconds = write.result()
                seconds[i] += write_seconds
            except _StageError as exc:
                status[i], kinds[i], reasons[i] = ERROR, exc.kind, exc.reason
            finished[i] = time.time()
    for i in range(n):
        if status[i] != OK:
            outputs[i] = masks[i] = signals[i] = None

    def signal(name: str) -> pa.Array:
        return pa.array([None if s is None else s[name] for s in signals], pa.float32())

    return pa.table({
        "key": pa.array([str(k) for k in batch["key"]], pa.string()),
        "source": pa.array([str(s) for s in batch["source"]], pa.string()),
        "output": pa.array(outputs, pa.string()),
        "mask": pa.array(masks, pa.string()),
        "status": pa.array(status, pa.string()),
        "kind": pa.array(kinds, pa.string()),
        "reason": pa.array(reasons, pa.string()),
        "width": pa.array(np.asarray(batch["width"], dtype=np.int32)),
        "height": pa.array(np.asarray(batch["height"], dtype=np.int32)),
        "source_bytes": pa.array(np.asarray(batch["source_bytes"], dtype=np.int64)),
        "output_bytes": pa.array(written),
        "seconds": pa.array(seconds),
        "object_store_bytes": pa.array(np.asarray(batch["object_store_bytes"], dtype=np.int64)),
        "run_id": pa.array([run_id] * n, pa.string()),
        "finished_at": pa.array(finished),
        "colorfulness": signal("colorfulness"),
        "foreground_share": signal("foreground_share"),
        "mask_confidence": signal("mask_confidence"),
        "source_color": pa.array([bool(c) if s is not None else None
                                  for c, s in zip(batch["source_color"], signals)], pa.bool_()),
    }, schema=RECORD_SCHEMA)
