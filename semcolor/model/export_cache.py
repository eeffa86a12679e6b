"""The node-local cache of verified ONNX exports: a checkpoint is exported (:mod:`semcolor.model.export`) once per
node into ``$SEMCOLOR_CACHE/onnx/`` and reused; the most recently used :func:`exports_kept` stay. Finding a cached
export imports no torch (the exporter is imported only to export)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from importlib.metadata import version

from semcolor import __version__
from semcolor.core import storage
from semcolor.core.cache import cache_folder
from semcolor.model.config import CONFIG_NAME, WEIGHTS_NAME
from semcolor.model.onnx_format import ONNX_FORMAT, ONNX_SUFFIX

EXPORTS_KEPT_ENV = "SEMCOLOR_CACHE_EXPORTS"
"""Environment variable: how many exports :func:`cached_export` keeps (the most recently used)."""
DEFAULT_EXPORTS_KEPT = 8
EXPORT_LOCK = ".export.lock"
"""The cache folder's lock file: one export (and eviction) at a time per node."""


def export_cache_path(checkpoint: str, cache_dir: str | None = None) -> str:
    """Where :func:`cached_export` keeps ``checkpoint``'s export: ``<cache>/onnx/<key>.onnx``, the key a hash of the
    checkpoint's bytes (config.json + model.safetensors) and the graph format, semcolor and torch versions (read
    from the installed packages' metadata: no torch import). The folder is created; the file may not exist yet."""
    digest = hashlib.sha256(f"{ONNX_FORMAT} {__version__} {version('torch')}".encode())
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        digest.update(storage.read_bytes(storage.join(checkpoint, name)))
    folder = os.path.join(cache_folder(cache_dir), "onnx")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, digest.hexdigest()[:24] + ONNX_SUFFIX)


def exports_kept() -> int:
    """How many exports the cache keeps: ``$SEMCOLOR_CACHE_EXPORTS`` (a positive integer), default
    :data:`DEFAULT_EXPORTS_KEPT`."""
    raw = os.environ.get(EXPORTS_KEPT_ENV, "")
    if not raw:
        return DEFAULT_EXPORTS_KEPT
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"${EXPORTS_KEPT_ENV} must be a positive integer (exports kept); got {raw!r}")
    return int(raw)


def evict_exports(folder: str, keep: int, protect: str | None = None) -> list[str]:
    """Remove all but the ``keep`` most recently used ``*.onnx`` files of ``folder`` (by file time, which every use
    sets, see :func:`_mark_used`), never ``protect`` (the export just written); temp files of writes in flight are
    left alone, the per-export lock files of earlier semcolor versions removed with their export. Call it holding
    the folder's lock exclusively. Returns the removed paths, oldest first."""
    exports = []
    for entry in os.scandir(folder):
        if entry.name.endswith(ONNX_SUFFIX + ".lock") and not os.path.exists(entry.path[:-len(".lock")]):
            _unlink_if_there(entry.path)  # an earlier semcolor's per-export lock file, its export gone
        if entry.name.endswith(ONNX_SUFFIX) and not entry.name.startswith(".") and entry.path != protect:
            try:
                exports.append((entry.stat().st_mtime_ns, entry.path))
            except FileNotFoundError:  # removed meanwhile
                continue
    exports.sort()
    removed = []
    for _, path in exports[:max(0, len(exports) - (keep - (protect is not None)))]:
        if _unlink_if_there(path):
            removed.append(path)
        _unlink_if_there(path + ".lock")
    return removed


def _unlink_if_there(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def _mark_used(path: str) -> bool:
    """Set ``path``'s file time to now, from the clock in nanoseconds (the file system's own "now" can be the same
    for uses milliseconds apart): its place in the cache's use order. False where the file is not there. A cache
    this process may read but not write (a read-only mount, another user's folder) is used as it is."""
    now = time.time_ns()
    try:
        os.utime(path, ns=(now, now))
        return True
    except FileNotFoundError:
        return False
    except OSError:  # EPERM, EACCES, EROFS
        return os.path.exists(path)


@contextlib.contextmanager
def _folder_lock(folder: str, exclusive: bool) -> Iterator[None]:
    """The cache folder's lock (:data:`EXPORT_LOCK`): shared while an export is read, exclusive while one is written
    and older ones evicted. Without a lock file and no right to create one (a read-only cache, where nobody
    evicts), no lock."""
    import fcntl

    lock_path = os.path.join(folder, EXPORT_LOCK)
    try:
        lock = open(lock_path, "a")
    except OSError:
        if not os.path.exists(lock_path):
            if exclusive:  # an export could not be written here either
                raise
            yield
            return
        lock = open(lock_path)  # flock works on a read-only descriptor
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)  # released when the file closes
        yield


def _export_into_cache(checkpoint: str, path: str, threads: int | None) -> None:
    """Export ``checkpoint`` to ``path`` unless another process did meanwhile, then evict beyond
    :func:`exports_kept`; call it holding the folder's lock exclusively."""
    if _mark_used(path):
        return
    from semcolor.model.export import export_checkpoint

    export_checkpoint(checkpoint, path, threads)
    _mark_used(path)
    evict_exports(os.path.dirname(path), exports_kept(), protect=path)


def cached_export(checkpoint: str, cache_dir: str | None = None, threads: int | None = None) -> str:
    """The local path of ``checkpoint``'s verified ONNX export in :func:`semcolor.core.cache.cache_folder`
    (:func:`export_cache_path`), exported (:func:`semcolor.model.export.export_checkpoint`) on first use.

    The cache keeps the :func:`exports_kept` most recently used exports (~100 MB each for the default UNet): each
    use sets an export's file time, and a new export removes the oldest beyond that (:func:`evict_exports`) under
    the folder's lock, so one process per node exports while the others wait, then reuse it. Finding a cached
    export imports no torch. The path is valid until another process's new export evicts it: to read the file,
    use :func:`read_cached_export`.
    """
    exports_kept()  # a bad setting is refused on every call, not only when an export happens
    path = export_cache_path(checkpoint, cache_dir)
    if _mark_used(path):
        return path
    with _folder_lock(os.path.dirname(path), exclusive=True):
        _export_into_cache(checkpoint, path, threads)
    return path


def read_cached_export(checkpoint: str, cache_dir: str | None = None, threads: int | None = None
                       ) -> tuple[str, bytes]:
    """(path, bytes) of ``checkpoint``'s export (see :func:`cached_export`), read under the folder's shared lock:
    no eviction can remove it between finding and reading it."""
    exports_kept()
    path = export_cache_path(checkpoint, cache_dir)
    folder = os.path.dirname(path)
    with _folder_lock(folder, exclusive=False):
        if _mark_used(path):
            return path, storage.read_bytes(path)
    with _folder_lock(folder, exclusive=True):
        _export_into_cache(checkpoint, path, threads)
        return path, storage.read_bytes(path)
