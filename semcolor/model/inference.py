"""The model behind :class:`semcolor.core.colorizer.Colorizer`: a checkpoint loaded on a device, predicting at model size.

``load_colorizer(url)`` is what every front end calls (bulk actors, evaluation, the Serve replica, the demo); its
``backend`` picks torch or onnxruntime (:mod:`semcolor.model.onnx_predictor`) per node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from semcolor.core.colorizer import Colorizer, Predictor
from semcolor.core.refine import DEFAULT_REFINE
from semcolor.model.config import DEFAULT_VIVIDNESS, ModelConfig
from semcolor.model.network import SegColorModel


def resolve_device(device: str | None) -> torch.device:
    """"auto"/None -> cuda when available, else cpu; otherwise the named device."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def make_deterministic() -> None:
    """Inference that gives the same bytes for the same input, whatever the batch (byte-identical reruns)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def l8_to_input(l8: torch.Tensor) -> torch.Tensor:
    """l8 uint8 (B, H, W) = L x 255/100 -> the model's input float (B, 1, H, W) = L / 100 in [0, 1]."""
    return (l8.float() / 255.0)[:, None]


def quantize_outputs(seg: torch.Tensor, ab: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Segmentation logits (B, C, H, W) and AB (B, 2, H, W) in LAB units -> (ab8 int8 (B, 2, H, W), fg8 uint8
    (B, H, W): foreground probability x 255 with 2 classes, else the class id). What a predictor returns, in
    torch and in the exported ONNX graph alike."""
    ab8 = ab.round().clamp(-127, 127).to(torch.int8)
    if n_classes == 2:
        fg8 = (seg.float().softmax(dim=1)[:, 1] * 255.0).round().to(torch.uint8)
    else:
        fg8 = seg.argmax(dim=1).to(torch.uint8)
    return ab8, fg8


@dataclass
class TorchPredictor:
    """A PyTorch model at one resolution on one device; on CUDA with bf16 autocast and channels_last."""

    model: SegColorModel
    config: ModelConfig
    device: torch.device
    size: int

    @property
    def n_classes(self) -> int:
        return self.config.n_classes

    @torch.inference_mode()
    def predict(self, l8_small: np.ndarray, vividness: float | np.ndarray = DEFAULT_VIVIDNESS
                ) -> tuple[np.ndarray, np.ndarray]:
        """l8_small uint8 (B, S, S) -> (ab8 int8 (B, 2, S, S) LAB units, fg8 uint8 (B, S, S)); ``vividness`` in
        [0, 1], one value or one per image (B,)."""
        x = l8_to_input(torch.from_numpy(np.ascontiguousarray(l8_small)).to(self.device, non_blocking=True))
        v = torch.as_tensor(vividness, dtype=torch.float32, device=self.device)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                seg, raw = self.model(x)
        else:
            seg, raw = self.model(x)
        ab8, fg8 = quantize_outputs(seg, self.model.decode_ab(raw.float(), *x.shape[-2:], v), self.config.n_classes)
        return ab8.cpu().numpy(), fg8.cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {"arch": self.config.arch, "n_classes": self.config.n_classes, "size": self.size,
                "color_head": self.config.color_head, "seg_to_color": self.config.seg_to_color,
                "backend": "torch", "device": str(self.device)}


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend this node runs: torch on CUDA whatever was asked (bf16 autocast beats onnxruntime's CPU
    provider there), else ``backend`` (one of :data:`semcolor.model.config.BACKENDS`)."""
    from semcolor.model.onnx_predictor import check_backend

    check_backend(backend)
    return "torch" if device.type == "cuda" else backend


def model_config_of(url: str) -> ModelConfig:
    """The :class:`ModelConfig` of a model URL: a checkpoint directory, or a ``.onnx`` file from `semcolor export`."""
    from semcolor.model.onnx_predictor import is_onnx, read_onnx_config

    if is_onnx(url):
        return read_onnx_config(url)
    from semcolor.model.checkpoint import load_config

    return load_config(url)[0]


def load_predictor(url: str, device: str | None = "auto", size: int | None = None, backend: str = "torch",
                   threads: int | None = None) -> Predictor:
    """The model at ``url`` on ``device``, predicting at ``size`` (default: its own).

    ``url``: a checkpoint directory, or (onnxruntime only) a ``.onnx`` file from `semcolor export`. ``backend``
    (resolved per node by :func:`resolve_backend`): ``torch``, or ``onnxruntime`` (CPU; a checkpoint is exported
    and verified once into the local cache, see :func:`semcolor.model.export.cached_export`). ``threads``:
    onnxruntime's intra-op threads (torch's are the caller's ``torch.set_num_threads``).
    """
    from semcolor.model.onnx_predictor import (
        check_backend,
        is_onnx,
        load_onnx_predictor,
    )

    check_backend(backend, url)
    if is_onnx(url) or resolve_backend(backend, resolve_device(device)) == "onnxruntime":
        return load_onnx_predictor(url, size=size, threads=threads)  # a .onnx file runs there even on a GPU node
    return load_torch_predictor(url, device, size)


def load_torch_predictor(url: str, device: str | None = "auto", size: int | None = None) -> TorchPredictor:
    """The checkpoint at ``url`` (a model directory) on ``device`` with torch, predicting at ``size`` (default: its
    own)."""
    from semcolor.model.checkpoint import load

    dev = resolve_device(device)
    model, config = load(url, device=dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    size = int(size or config.input_size)
    if size < 32:
        raise ValueError(f"model size must be >= 32 pixels; got {size}")
    return TorchPredictor(model=model, config=config, device=dev, size=size)


def load_colorizer(url: str, device: str | None = "auto", size: int | None = None, refine: str = DEFAULT_REFINE,
                   backend: str = "torch", threads: int | None = None) -> Colorizer:
    """A :class:`Colorizer` around the model at ``url`` (see :func:`load_predictor` for ``backend`` and
    ``threads``), upsampling per ``refine`` (see :mod:`semcolor.core.refine`)."""
    return Colorizer(load_predictor(url, device, size, backend, threads), refine=refine)
