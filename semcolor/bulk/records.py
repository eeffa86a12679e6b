"""Result records of bulk colorization: ``DST/_manifest/*.parquet``, one row per source per run.

Records of many runs would grow into many small files (a run writes one per Ray Data block);
:func:`compact_records` replaces them by one file of each key's latest record, and a run that leaves more than
:data:`COMPACT_ABOVE` files compacts them at its end, so a rerun reads a bounded number of files.

A record is the commit point of one key: it is written only after the key's output (and mask)
were written atomically, so ``status == "ok"`` means the files exist and are complete. Records of
several runs coexist; :func:`latest_by_key` reduces them to one row per key (the latest ``ok``
wins; a key without any ``ok`` keeps its latest error, and is retried by the next run).

Columns (:data:`RECORD_SCHEMA`):
    key             relative key of the source (path under SRC without extension)
    source          source URL
    output          URL of the colorized image (null when status is error)
    mask            URL of the mask PNG (null when not asked for, or on error)
    status          "ok" or "error"
    kind            error tag ("" when ok): a semcolor.core.decode DataError kind (empty, not_image, corrupt,
                    too_large, unsupported), read_error, decode_failed, encode_error, write_error, duplicate_key
    reason          what went wrong and what to do ("" when ok)
    width, height   output size in pixels = the source's EXIF-oriented size (0 when unknown)
    source_bytes    size of the source file in bytes (0 when it could not be read)
    output_bytes    bytes written for this key (image + mask)
    seconds         processing time of this key: its decode + its share of the model batch + merge/encode/write
    object_store_bytes  bytes this row put through the object store between stages (compact uint8 columns)
    run_id          the run that wrote the record
    finished_at     UNIX time (s) when the record was made
    colorfulness, foreground_share, mask_confidence, source_color
                    the output's quality signals (:mod:`semcolor.bulk.signals`; null on error and in records of
                    earlier versions)
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from semcolor.core import storage
from semcolor.core.decode import OK

log = logging.getLogger(__name__)

MANIFEST_DIR = "_manifest"
COMPACT_ABOVE = 64
"""A run that ends with more record files than this compacts them into one (:func:`compact_records`)."""

RECORD_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("source", pa.string()),
    ("output", pa.string()),
    ("mask", pa.string()),
    ("status", pa.string()),
    ("kind", pa.string()),
    ("reason", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("source_bytes", pa.int64()),
    ("output_bytes", pa.int64()),
    ("seconds", pa.float64()),
    ("object_store_bytes", pa.int64()),
    ("run_id", pa.string()),
    ("finished_at", pa.float64()),
    ("colorfulness", pa.float32()),
    ("foreground_share", pa.float32()),
    ("mask_confidence", pa.float32()),
    ("source_color", pa.bool_()),
])


def manifest_url(dst: str) -> str:
    """The records folder of a destination: ``DST/_manifest``."""
    return storage.join(dst, MANIFEST_DIR)


def empty_records() -> pa.Table:
    """A table with :data:`RECORD_SCHEMA` and no rows."""
    return RECORD_SCHEMA.empty_table()


def conform(table: pa.Table) -> pa.Table:
    """Cast ``table`` to :data:`RECORD_SCHEMA`: known columns in order, missing ones null, others dropped."""
    columns = []
    for field in RECORD_SCHEMA:
        if field.name in table.column_names:
            columns.append(table[field.name].cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=RECORD_SCHEMA)


def _read_one(fs: pafs.FileSystem, path: str) -> pa.Table | None:
    try:
        with fs.open_input_file(path) as f:
            return conform(pq.read_table(io.BytesIO(f.read())))
    except (OSError, pa.ArrowInvalid) as exc:
        # A job killed while Ray Data was writing this file leaves it truncated; its keys have no
        # readable ok record, so they are redone. Loud, because anything else here is unexpected.
        log.warning("ignoring unreadable record file %s (%s: %s); its keys will be redone",
                    path, type(exc).__name__, exc)
        return None


def record_files(dst: str) -> tuple[pafs.FileSystem, list[str]]:
    """The record files under ``DST/_manifest/`` (sorted paths on the returned filesystem); hidden and ``_``
    names are not records."""
    fs, root = storage.resolve(manifest_url(dst))
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return fs, sorted(
        i.path for i in infos
        if i.type == pafs.FileType.File and i.path.endswith(".parquet")
        and not any(part.startswith((".", "_")) for part in i.path[len(root):].split("/") if part)
    )


def read_records(dst: str, threads: int = 8) -> pa.Table:
    """Every record under ``DST/_manifest/`` from every run (:data:`RECORD_SCHEMA`); empty when none.

    Files that cannot be read (truncated by a killed job) are logged and skipped.
    """
    fs, paths = record_files(dst)
    if not paths:
        return empty_records()
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(paths)))) as pool:
        tables = [t for t in pool.map(lambda p: _read_one(fs, p), paths) if t is not None]
    return pa.concat_tables(tables) if tables else empty_records()


def compact_records(dst: str, threads: int = 8) -> tuple[int, int]:
    """Replace the record files under ``DST/_manifest/`` by one file of each key's latest record
    (:func:`latest_by_key`: what every reader of the records reduces them to) -> (files before, rows after).

    The new file is written completely (atomically) before the old ones are deleted; a crash in between leaves
    both, which readers reduce to the same latest records. Unreadable files are left alone (and logged). Do
    not run it while a job writes to ``DST``.
    """
    fs, paths = record_files(dst)
    if len(paths) <= 1:
        return len(paths), -1  # nothing to compact (rows not counted)
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(paths)))) as pool:
        read = [(p, t) for p, t in zip(paths, pool.map(lambda p: _read_one(fs, p), paths)) if t is not None]
        readable = [p for p, _ in read]
        latest = latest_by_key(pa.concat_tables([t for _, t in read]) if read else empty_records())
        buf = io.BytesIO()
        pq.write_table(latest, buf, compression="zstd")
        name = f"compacted-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        storage.write_bytes(storage.join(manifest_url(dst), name), buf.getvalue())
        # on threads: on S3 each delete is three round trips (the DELETE, then Arrow's HEAD of the folder and its
        # marker PUT), which one after another made a tail at the end of a long run
        list(pool.map(fs.delete_file, readable))
    log.info("compacted %d record files under %s into %s (%d keys)", len(paths), manifest_url(dst), name,
             latest.num_rows)
    return len(paths), latest.num_rows


def latest_by_key(records: pa.Table) -> pa.Table:
    """One row per key: its latest ``ok`` record, else its latest error record."""
    if records.num_rows == 0:
        return records
    rank = pc.equal(records["status"], OK).cast(pa.int8())
    order = records.append_column("_ok", rank).append_column("_i", pa.array(range(records.num_rows)))
    order = order.sort_by([("key", "ascending"), ("_ok", "descending"), ("finished_at", "descending"),
                           ("_i", "descending")])
    keys = order["key"].to_pylist()
    first = [i for i in range(len(keys)) if i == 0 or keys[i] != keys[i - 1]]
    return order.take(pa.array(first, pa.int64())).drop_columns(["_ok", "_i"])


def done_outputs(records: pa.Table) -> dict[str, tuple[str, str | None]]:
    """``{key: (output URL, mask URL or None)}`` for every key with an ok record (latest ok wins)."""
    latest = latest_by_key(records)
    ok = latest.filter(pc.equal(latest["status"], OK))
    return {k: (o, m) for k, o, m in zip(*(ok[c].to_pylist() for c in ("key", "output", "mask")))}
