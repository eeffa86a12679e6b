"""The model on onnxruntime (CPU): the same :class:`semcolor.core.colorizer.Predictor` as the torch one, from an
ONNX file written by :mod:`semcolor.model.export` (``semcolor export``).

The graph takes ``l8`` uint8 (N, H, W) (L * 255/100, as :meth:`Colorizer.prepare` gives it) and ``vividness``
float32 (N,), and returns ``ab8`` int8 (N, 2, H, W) LAB units and ``fg8`` uint8 (N, H, W): exactly
:meth:`semcolor.model.torch_predictor.TorchPredictor.predict`, decoding included. The model config travels in the file's
metadata (:data:`META_CONFIG`), so an ``.onnx`` file alone is a complete model. No torch is needed here to run one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import numpy as np

from semcolor import __version__
from semcolor.core import storage
from semcolor.core.cache import cache_folder
from semcolor.model.config import (
    CONFIG_NAME,
    DEFAULT_VIVIDNESS,
    WEIGHTS_NAME,
    ModelConfig,
)

ONNX_SUFFIX = ".onnx"
INPUTS = ("l8", "vividness")
OUTPUTS = ("ab8", "fg8")
MIN_SIDE = 32
"""Smallest height and width the graph takes (the model pads to a multiple of 32 by reflection)."""
META_CONFIG = "semcolor.model_config"
"""metadata_props key: the :class:`ModelConfig` as JSON (arch, n_classes, input_size, color_head, ...)."""
META_FORMAT = "semcolor.onnx_format"
"""metadata_props key: the version of the graph's contract (inputs, outputs, units) above."""
ONNX_FORMAT = "1"
META_VERSION = "semcolor.version"
META_VERIFIED = "semcolor.verification"
"""metadata_props key: JSON of the export's check against torch (tolerances, largest differences seen)."""
EXPORTS_KEPT_ENV = "SEMCOLOR_CACHE_EXPORTS"
"""Environment variable: how many exports :func:`cached_export` keeps (the most recently used)."""
DEFAULT_EXPORTS_KEPT = 8
EXPORT_LOCK = ".export.lock"
"""The cache folder's lock file: one export (and eviction) at a time per node."""


def is_onnx(url: str) -> bool:
    """True when ``url`` names an ONNX file (by its ``.onnx`` suffix) rather than a checkpoint directory."""
    return url.rstrip("/").lower().endswith(ONNX_SUFFIX)


def check_backend(backend: str, url: str | None = None) -> str:
    """``backend`` when it is one of :data:`semcolor.model.config.BACKENDS` and can run the model at ``url`` (an
    ONNX graph runs on onnxruntime only); else ValueError saying why."""
    from semcolor.model.config import BACKENDS

    if backend not in BACKENDS:
        raise ValueError(f"Wrong backend {backend!r}; supported: {list(BACKENDS)}")
    if url is not None and is_onnx(url) and backend == "torch":
        raise ValueError(f"{url} is an ONNX graph: it runs with backend onnxruntime (on CPU), not {backend}")
    return backend


def default_threads() -> int:
    """This process's usable cores."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def make_session(model: bytes | str, threads: int | None = None):
    """An onnxruntime CPU session over ONNX bytes or a local file: ``threads`` intra-op threads (default: this
    process's cores), one inter-op thread, sequential execution, all graph optimizations, threads that do not
    spin while idle (a loaded CPU node gives their cores to decode and encode work)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads or default_threads()))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: no warnings about unused initializers on every load
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def config_from_metadata(metadata: dict[str, str], source: str) -> ModelConfig:
    """A graph's metadata_props -> its :class:`ModelConfig`; ValueError naming ``source`` when they are not a
    semcolor export's."""
    if META_CONFIG not in metadata:
        raise ValueError(f"{source}: no {META_CONFIG!r} in the ONNX metadata; export it with `semcolor export`")
    if metadata.get(META_FORMAT) != ONNX_FORMAT:
        raise ValueError(f"{source}: ONNX graph format {metadata.get(META_FORMAT)!r}, this semcolor reads "
                         f"{ONNX_FORMAT!r}; export it again with this semcolor")
    try:
        return ModelConfig.from_dict(json.loads(metadata[META_CONFIG]))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: bad {META_CONFIG} in the ONNX metadata ({e})") from e


def read_onnx_config(url: str) -> ModelConfig:
    """The :class:`ModelConfig` stored in the ONNX file at ``url`` (any storage URL)."""
    import onnx

    try:
        proto = onnx.load_from_string(storage.read_bytes(url))
    except FileNotFoundError:
        raise
    except Exception as e:  # protobuf's DecodeError and friends
        raise ValueError(f"{url}: not an ONNX model ({type(e).__name__}: {e})") from e
    return config_from_metadata({p.key: p.value for p in proto.metadata_props}, url)


@dataclass
class OnnxPredictor:
    """A semcolor ONNX graph on onnxruntime's CPU provider, predicting at one resolution."""

    session: Any
    """onnxruntime.InferenceSession."""
    config: ModelConfig
    size: int
    threads: int
    source: str
    """Where the graph came from (the .onnx URL, or the cached export of a checkpoint)."""

    @property
    def n_classes(self) -> int:
        return self.config.n_classes

    def predict(self, l8_small: np.ndarray, vividness: float | np.ndarray = DEFAULT_VIVIDNESS
                ) -> tuple[np.ndarray, np.ndarray]:
        """l8_small uint8 (B, S, S) -> (ab8 int8 (B, 2, S, S) LAB units, fg8 uint8 (B, S, S)); ``vividness`` in
        [0, 1], one value or one per image (B,)."""
        l8 = np.ascontiguousarray(l8_small, dtype=np.uint8)
        if l8.ndim != 3 or min(l8.shape[1:]) < MIN_SIDE:
            raise ValueError(f"l8_small must be uint8 (B, H, W) with H, W >= {MIN_SIDE}; got {l8.shape}")
        v = np.ascontiguousarray(np.broadcast_to(np.asarray(vividness, dtype=np.float32), (len(l8),)))
        ab8, fg8 = self.session.run(list(OUTPUTS), {"l8": l8, "vividness": v})
        return ab8, fg8

    def describe(self) -> dict[str, Any]:
        return {"arch": self.config.arch, "n_classes": self.config.n_classes, "size": self.size,
                "color_head": self.config.color_head, "seg_to_color": self.config.seg_to_color,
                "backend": "onnxruntime", "device": "cpu", "threads": self.threads, "onnx": self.source}


def load_onnx_predictor(url: str, size: int | None = None, threads: int | None = None,
                        cache_dir: str | None = None) -> OnnxPredictor:
    """An :class:`OnnxPredictor` for ``url``: a ``.onnx`` file from ``semcolor export``, or a checkpoint
    directory, exported (and verified against torch) once into ``cache_dir`` (see
    :func:`read_cached_export`). ``size``: default the model's input size; ``threads``:
    onnxruntime intra-op threads, default this process's cores."""
    source, data = (url, storage.read_bytes(url)) if is_onnx(url) else read_cached_export(url, cache_dir)
    threads = max(1, int(threads or default_threads()))
    try:
        session = make_session(data, threads)
    except Exception as e:  # onnxruntime's InvalidProtobuf / Fail
        raise ValueError(f"{source}: onnxruntime cannot load it ({type(e).__name__}: {e})") from e
    config = config_from_metadata(session.get_modelmeta().custom_metadata_map, source)
    size = int(size or config.input_size)
    if size < MIN_SIDE:
        raise ValueError(f"model size must be >= {MIN_SIDE} pixels; got {size}")
    return OnnxPredictor(session=session, config=config, size=size, threads=threads, source=source)


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
