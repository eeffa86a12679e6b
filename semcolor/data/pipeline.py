"""The Ray Data read pipeline of training pairs and of photos without masks: fetch, decode and resize in Ray
tasks, bad files recorded.

Rows are compact: ``key`` str, ``rgb`` uint8 (S, S, 3), and for pairs ``mask`` uint8 (S, S); LAB conversion and
augmentation run afterwards in torch on the consumer's device (:mod:`semcolor.data.preprocess`).
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semcolor.core import storage
from semcolor.core.decode import (
    DEFAULT_MAX_PIXELS,
    ERROR,
    OK,
    READ_ERROR,
    DataError,
    decode_pair,
    decode_photo,
)

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

STATUS_COLUMNS = ["status", "kind", "reason", "mask_resized"]


def decode_batch(batch: dict[str, np.ndarray], size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                 io_threads: int = 8, s3: storage.S3Options | None = None) -> dict[str, np.ndarray]:
    """Ray Data UDF: pairs -> decoded rows, one output row per input row, never raising on bad data.

    In: ``key``, ``image``, ``mask`` (URLs). Out, N rows:
    ``key`` str; ``rgb`` uint8 (N, size, size, 3); ``mask`` uint8 (N, size, size);
    ``status`` str (``ok`` / ``error``); ``kind`` str (a :class:`DataError` kind or ``read_error``, "" when ok);
    ``reason`` str ("" when ok); ``mask_resized`` bool.
    Rows with status ``error`` hold zeros in ``rgb`` / ``mask``. Bytes are fetched with ``io_threads`` threads;
    ``s3`` carries the driver's S3 settings to workers started with another environment.
    """
    keys = [str(k) for k in batch["key"]]
    n = len(keys)
    urls = [str(u) for pair in zip(batch["image"], batch["mask"]) for u in pair]
    with ThreadPoolExecutor(max_workers=max(1, min(io_threads, len(urls)))) as pool:
        blobs = list(pool.map(lambda url: storage.read_bytes_or_error(url, s3=s3), urls))
    rgb = np.zeros((n, size, size, 3), dtype=np.uint8)
    mask = np.zeros((n, size, size), dtype=np.uint8)
    status = [ERROR] * n
    resized = np.zeros(n, dtype=bool)
    kinds = [""] * n
    reasons = [""] * n
    for i, key in enumerate(keys):
        image_bytes, mask_bytes = blobs[2 * i], blobs[2 * i + 1]
        failed = next((b for b in (image_bytes, mask_bytes) if isinstance(b, Exception)), None)
        if failed is not None:
            which = "image" if failed is image_bytes else "mask"
            kinds[i], reasons[i] = READ_ERROR, f"{which}: {type(failed).__name__}: {failed}"
            continue
        try:
            sample = decode_pair(image_bytes, mask_bytes, size, max_pixels, key)
        except DataError as exc:
            kinds[i], reasons[i] = exc.kind, exc.reason
            continue
        rgb[i], mask[i], status[i], resized[i] = sample.rgb, sample.mask, OK, sample.mask_resized
    return {
        "key": np.array(keys, dtype=object),
        "rgb": rgb,
        "mask": mask,
        "status": np.array(status, dtype=object),
        "kind": np.array(kinds, dtype=object),
        "reason": np.array(reasons, dtype=object),
        "mask_resized": resized,
    }


def decode_photo_batch(batch: dict[str, np.ndarray], size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                       io_threads: int = 8, s3: storage.S3Options | None = None) -> dict[str, np.ndarray]:
    """Ray Data UDF: photos without masks (``key``, ``image`` URLs) -> decoded rows, one per input row, never
    raising on bad data: ``key``; ``rgb`` uint8 (N, size, size, 3) (zeros where the status is ``error``);
    ``status``, ``kind``, ``reason`` as :func:`decode_batch` gives them; ``mask_resized`` False."""
    keys = [str(k) for k in batch["key"]]
    urls = [str(u) for u in batch["image"]]
    with ThreadPoolExecutor(max_workers=max(1, min(io_threads, len(urls)))) as pool:
        blobs = list(pool.map(lambda url: storage.read_bytes_or_error(url, s3=s3), urls))
    rgb = np.zeros((len(keys), size, size, 3), dtype=np.uint8)
    status, kinds, reasons = [ERROR] * len(keys), [""] * len(keys), [""] * len(keys)
    for i, (key, blob) in enumerate(zip(keys, blobs)):
        if isinstance(blob, Exception):
            kinds[i], reasons[i] = READ_ERROR, f"image: {type(blob).__name__}: {blob}"
            continue
        try:
            rgb[i] = decode_photo(blob, size, max_pixels, key)
        except DataError as exc:
            kinds[i], reasons[i] = exc.kind, f"image: {exc.reason}"
            continue
        status[i] = OK
    return {"key": np.array(keys, dtype=object), "rgb": rgb, "status": np.array(status, dtype=object),
            "kind": np.array(kinds, dtype=object), "reason": np.array(reasons, dtype=object),
            "mask_resized": np.zeros(len(keys), dtype=bool)}


def _s3_options(table: pa.Table) -> storage.S3Options | None:
    """The driver's S3 settings when any URL of ``table`` (pairs or photos) is on s3://, for workers started before
    they were set."""
    columns = [c for c in ("image", "mask") if c in table.column_names]
    return storage.s3_options_for([u for c in columns for u in table[c].to_pylist()])


def pairs_dataset(pairs: pa.Table, size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                  rows_per_block: int = 32) -> "ray.data.Dataset":
    """A lazy Ray dataset decoding every pair; one row per pair, bad pairs included and marked.

    Columns: ``key``, ``rgb`` uint8 (size, size, 3), ``mask`` uint8 (size, size), and the status columns
    ``status``, ``kind``, ``reason``, ``mask_resized`` (see :func:`decode_batch`).
    Use :func:`load_dataset` to get good rows and an error report; a streaming consumer can instead
    keep the status columns, record rows with status ``error`` and train on the rest.
    Ray tasks read through :mod:`semcolor.core.storage`; for s3:// pairs the driver's S3 settings
    (:meth:`semcolor.core.storage.S3Options.from_env`: endpoint, region, static credentials if set) travel
    with the tasks, so workers reach the same endpoint with the same credentials.
    """
    if pairs.num_rows == 0:
        raise ValueError("no pairs to read; check the images/masks prefixes or the manifest (see pair_prefixes)")
    return _decoded(pairs.select(["key", "image", "mask"]), decode_batch, size, max_pixels, rows_per_block)


def _decoded(table: pa.Table, udf, size: int, max_pixels: int, rows_per_block: int) -> "ray.data.Dataset":
    """``table`` in blocks of ``rows_per_block`` rows, each decoded by ``udf`` in a Ray task (the driver's S3
    settings travel with it)."""
    import ray

    if size <= 0 or rows_per_block <= 0:
        raise ValueError(f"size and rows_per_block must be positive, got {size}, {rows_per_block}")
    blocks = [table.slice(i, rows_per_block) for i in range(0, table.num_rows, rows_per_block)]
    return ray.data.from_arrow(blocks).map_batches(
        udf, batch_size=rows_per_block, batch_format="numpy",
        fn_kwargs={"size": size, "max_pixels": max_pixels, "s3": _s3_options(table)}, udf_modifying_row_count=False)


@dataclass
class LoadReport:
    """What :func:`load_dataset` did: good row count, recorded errors, masks resized to their image."""

    rows: int
    errors: list[dict[str, str]]
    """One record per skipped pair: ``key``, ``image``, ``mask`` (URLs), ``kind``, ``reason``."""
    mask_resized: int

    def counts(self) -> dict[str, int]:
        """``{"ok": rows, "mask_resized": n, "error": n, "error:<kind>": n ...}``."""
        kinds = Counter(e["kind"] for e in self.errors)
        return {"ok": self.rows, "mask_resized": self.mask_resized, "error": len(self.errors),
                **{f"error:{k}": v for k, v in sorted(kinds.items())}}


def photos_dataset(photos: pa.Table, size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                   rows_per_block: int = 32) -> "ray.data.Dataset":
    """A lazy Ray dataset decoding every photo without a mask (:func:`decode_photo_batch`); one row per photo, bad
    ones included and marked."""
    if photos.num_rows == 0:
        raise ValueError("no photos to read; check the --photos prefixes or manifests")
    return _decoded(photos.select(["key", "image"]), decode_photo_batch, size, max_pixels, rows_per_block)


def _keep_good(ds: "ray.data.Dataset", table: pa.Table) -> tuple["ray.data.Dataset", LoadReport]:
    """A decoded dataset (with the status columns) materialized -> (its good rows without the status columns, the
    report). ``table``: the source rows (``key``, ``image`` and, for pairs, ``mask`` URLs), to name the files of bad
    rows."""
    import ray
    from ray.data.expressions import col

    ds = ds.materialize()
    status = pa.concat_tables(ray.get(ds.select_columns(["key", *STATUS_COLUMNS]).to_arrow_refs()))
    masks = table["mask"].to_pylist() if "mask" in table.column_names else [""] * table.num_rows
    urls = dict(zip(table["key"].to_pylist(), zip(table["image"].to_pylist(), masks)))
    bad = status.filter(pc.not_equal(status["status"], OK))
    errors = [{"key": k, "image": urls[k][0], "mask": urls[k][1], "kind": kind, "reason": reason}
              for k, kind, reason in zip(*(bad[c].to_pylist() for c in ("key", "kind", "reason")))]
    report = LoadReport(rows=status.num_rows - bad.num_rows, errors=errors,
                        mask_resized=int(pc.sum(status["mask_resized"]).as_py() or 0))
    for e in errors[:10]:
        log.warning("skipped %s (%s): %s", e["key"], e["kind"], e["reason"])
    if errors:
        log.warning("skipped %d of %d rows: %s", len(errors), status.num_rows, report.counts())
    return ds.filter(expr=col("status") == OK).drop_columns(STATUS_COLUMNS), report


def load_dataset(pairs: pa.Table, size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                 rows_per_block: int = 32, preserve_order: bool = False) -> tuple["ray.data.Dataset", LoadReport]:
    """Decode all pairs once (materialized in the object store) -> (good rows, report).

    The dataset holds only good rows, columns ``key``, ``rgb`` uint8 (S, S, 3), ``mask`` uint8 (S, S).
    Bad pairs (unreadable, empty, not an image, corrupt, over ``max_pixels``, bad mask) are in
    ``report.errors`` with key and reason and are logged; nothing raises for bad data. ``preserve_order``: rows
    stay in the order of ``pairs`` (Ray Data's ``preserve_order`` for this dataset and those made from it; no
    sort, which costs a shuffle of tasks).
    """
    ds = pairs_dataset(pairs, size, max_pixels, rows_per_block)
    if preserve_order:
        ds.context.execution_options.preserve_order = True
    return _keep_good(ds, pairs)


def load_photo_dataset(photos: pa.Table, size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                       rows_per_block: int = 32) -> tuple["ray.data.Dataset", LoadReport]:
    """Decode all photos without masks once (materialized) -> (good rows: ``key``, ``rgb`` uint8 (S, S, 3); the
    report, bad photos recorded as :func:`load_dataset` records bad pairs, with an empty ``mask``)."""
    return _keep_good(photos_dataset(photos, size, max_pixels, rows_per_block), photos)
