"""The model on onnxruntime (CPU): the same :class:`semcolor.core.colorizer.Predictor` as the torch one, from an
ONNX file written by :mod:`semcolor.model.export` (``semcolor export``) or a checkpoint exported once per node
(:mod:`semcolor.model.export_cache`). The graph's contract is :mod:`semcolor.model.onnx_format`. No torch is needed
here to run one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from semcolor.core import storage
from semcolor.model.config import DEFAULT_VIVIDNESS, ModelConfig
from semcolor.model.export_cache import read_cached_export
from semcolor.model.onnx_format import (
    MIN_SIDE,
    OUTPUTS,
    config_from_metadata,
    default_threads,
    is_onnx,
    make_session,
)


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
