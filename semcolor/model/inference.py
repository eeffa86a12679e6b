"""The model behind :class:`semcolor.core.colorizer.Colorizer`: a checkpoint on a device, predicting at model size.

``load_colorizer(url)`` is what every front end calls (bulk actors, evaluation, the Serve replica, the demo); its
``backend`` picks torch (:mod:`semcolor.model.torch_predictor`) or onnxruntime (:mod:`semcolor.model.onnx_predictor`)
per node. Importing this module loads no torch.
"""

from __future__ import annotations

from semcolor.core.colorizer import Colorizer, Predictor
from semcolor.core.flip_average import DEFAULT_TTA, with_tta
from semcolor.core.refine import DEFAULT_REFINE
from semcolor.model.config import ModelConfig


def uses_cuda(device: str | None) -> bool:
    """Whether ``device`` means CUDA in this process: ``cuda`` / ``cuda:N``, or ``auto`` (None) where torch sees a
    GPU (only then is torch imported: a CPU actor given ``cpu`` runs onnxruntime without loading torch)."""
    if device in (None, "auto"):
        import torch

        return torch.cuda.is_available()
    return str(device).startswith("cuda")


def resolve_backend(backend: str, device: str | None, precision: str = "auto") -> str:
    """The backend that runs on ``device`` here: torch on CUDA whatever was asked (bf16 autocast beats onnxruntime's
    CPU provider there); on CPU ``backend``, where ``auto`` means onnxruntime (1.1-1.9x torch fp32's images/s in
    every measured layout: ``semcolor bench model``) unless ``precision`` is bf16, which only torch runs (on a CPU
    with AMX 1.5-1.7x onnxruntime's images/s, with AVX-512 BF16 1.0-1.45x, same bench)."""
    from semcolor.model.onnx_format import check_backend, check_precision

    check_backend(backend)
    check_precision(precision, backend)
    if uses_cuda(device) or precision == "bf16":
        return "torch"
    return "onnxruntime" if backend == "auto" else backend


def model_config_of(url: str) -> ModelConfig:
    """The :class:`ModelConfig` of a model URL: a checkpoint directory, or a ``.onnx`` file from `semcolor export`."""
    from semcolor.model.onnx_format import is_onnx, read_onnx_config

    if is_onnx(url):
        return read_onnx_config(url)
    from semcolor.model.checkpoint import load_config

    return load_config(url)[0]


def load_predictor(url: str, device: str | None = "auto", size: int | None = None, backend: str = "torch",
                   threads: int | None = None, precision: str = "auto") -> Predictor:
    """The model at ``url`` on ``device``, predicting at ``size`` (default: its own).

    ``url``: a checkpoint directory, or (onnxruntime only) a ``.onnx`` file from `semcolor export`. ``backend``
    (resolved per node by :func:`resolve_backend`): ``torch``, ``onnxruntime`` (CPU; a checkpoint is exported and
    verified once into the local cache, see :func:`semcolor.model.export_cache.cached_export`), or ``auto``
    (onnxruntime on CPU, torch on CUDA). ``threads``: onnxruntime's intra-op threads (torch's are the caller's
    ``torch.set_num_threads``). The onnxruntime path imports no torch once the export is cached. ``precision``
    (torch): auto (bf16 autocast and channels_last on CUDA, fp32 on CPU), bf16 (autocast and channels_last on CPU
    too; not on onnxruntime) or fp32.
    """
    from semcolor.model.onnx_format import check_backend, check_precision, is_onnx
    from semcolor.model.onnx_predictor import load_onnx_predictor

    check_backend(backend, url)
    check_precision(precision, backend, url)
    if is_onnx(url) or resolve_backend(backend, device, precision) == "onnxruntime":
        return load_onnx_predictor(url, size=size, threads=threads)  # a .onnx file runs there even on a GPU node
    from semcolor.model.torch_predictor import load_torch_predictor

    return load_torch_predictor(url, device, size, precision=precision)


def load_colorizer(url: str, device: str | None = "auto", size: int | None = None, refine: str = DEFAULT_REFINE,
                   backend: str = "torch", threads: int | None = None, tta: str = DEFAULT_TTA,
                   precision: str = "auto") -> Colorizer:
    """A :class:`Colorizer` around the model at ``url`` (see :func:`load_predictor` for ``backend``, ``threads``
    and ``precision``), upsampling per ``refine`` (see :mod:`semcolor.core.refine`), each image predicted with the
    test-time augmentation ``tta`` (see :mod:`semcolor.core.flip_average`)."""
    return Colorizer(with_tta(load_predictor(url, device, size, backend, threads, precision), tta), refine=refine)
