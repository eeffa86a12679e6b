"""The ONNX graph's contract (``semcolor export``): input and output names, the metadata a semcolor export carries,
and the onnxruntime session every user of a graph opens. Imports neither torch nor the exporter: the exporter
(:mod:`semcolor.model.export`), its cache (:mod:`semcolor.model.export_cache`) and the predictor
(:mod:`semcolor.model.onnx_predictor`) all build on this module.

The graph takes ``l8`` uint8 (N, H, W) (L * 255/100, as :meth:`Colorizer.prepare` gives it) and ``vividness``
float32 (N,), and returns ``ab8`` int8 (N, 2, H, W) LAB units and ``fg8`` uint8 (N, H, W): exactly
:meth:`semcolor.model.torch_predictor.TorchPredictor.predict`, decoding included. The model config travels in the file's
metadata (:data:`META_CONFIG`), so an ``.onnx`` file alone is a complete model.
"""

from __future__ import annotations

import json
import os

from semcolor.core import storage
from semcolor.model.config import ModelConfig

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


def check_precision(precision: str, backend: str, url: str | None = None) -> str:
    """``precision`` when it is one of :data:`semcolor.model.config.PRECISIONS` and ``backend`` (and the model at
    ``url``) can run it: bf16 needs torch (the ONNX graph computes in fp32), so neither ``--backend onnxruntime`` nor
    a ``.onnx`` file; else ValueError naming both."""
    from semcolor.model.config import PRECISIONS

    if precision not in PRECISIONS:
        raise ValueError(f"Wrong precision {precision!r}; supported: {list(PRECISIONS)}")
    if precision == "bf16" and backend == "onnxruntime":
        raise ValueError("--precision bf16 runs on the torch backend; --backend onnxruntime computes in fp32 "
                         "(use --backend torch or auto)")
    if precision == "bf16" and url is not None and is_onnx(url):
        raise ValueError(f"--precision bf16 runs on the torch backend; {url} is an ONNX graph (fp32 on onnxruntime): "
                         "give its checkpoint directory")
    return precision


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
