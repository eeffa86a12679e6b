"""The model on PyTorch: a checkpoint on a device (CPU, or CUDA with bf16 autocast and channels_last) behind the
:class:`semcolor.core.colorizer.Predictor` interface, and the conversions its exported ONNX graph repeats."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from semcolor.model.config import DEFAULT_VIVIDNESS, MEMORY_FORMATS, PRECISIONS, ModelConfig
from semcolor.model.network import SegColorModel


def resolve_device(device: str | None) -> torch.device:
    """"auto"/None -> cuda when available, else cpu; otherwise the named device."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype ``torch.autocast`` runs at for ``precision`` on ``device`` (None: no autocast, fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"Wrong precision {precision!r}; supported: {list(PRECISIONS)}")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return torch.bfloat16 if precision == "bf16" else None


def uses_channels_last(memory_format: str, device: torch.device) -> bool:
    """Whether ``memory_format`` means channels_last on ``device``."""
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"Wrong memory format {memory_format!r}; supported: {list(MEMORY_FORMATS)}")
    return device.type == "cuda" if memory_format == "auto" else memory_format == "channels_last"


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
    """A PyTorch model at one resolution on one device. By default bf16 autocast and channels_last on CUDA, fp32 and
    contiguous on CPU; both are parameters, so the GPU branch also runs (and is tested) on CPU."""

    model: SegColorModel
    config: ModelConfig
    device: torch.device
    size: int
    autocast: torch.dtype | None = None
    """The forward's autocast dtype (None: fp32); decoding always runs in fp32."""
    channels_last: bool = False

    @property
    def n_classes(self) -> int:
        return self.config.n_classes

    @torch.inference_mode()
    def predict(self, l8_small: np.ndarray, vividness: float | np.ndarray = DEFAULT_VIVIDNESS
                ) -> tuple[np.ndarray, np.ndarray]:
        """l8_small uint8 (B, S, S) -> (ab8 int8 (B, 2, S, S) LAB units, fg8 uint8 (B, S, S)); ``vividness`` in
        [0, 1], one value or one per image (B,)."""
        # a writable C-contiguous array (Ray's batches are read-only: torch warns on those and copies nothing)
        x = l8_to_input(torch.from_numpy(np.require(l8_small, requirements=("C", "W"))).to(self.device,
                                                                                          non_blocking=True))
        v = torch.as_tensor(vividness, dtype=torch.float32, device=self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            seg, raw = self.model(x)
        ab8, fg8 = quantize_outputs(seg.float(), self.model.decode_ab(raw.float(), *x.shape[-2:], v),
                                    self.config.n_classes)
        return ab8.cpu().numpy(), fg8.cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {"arch": self.config.arch, "n_classes": self.config.n_classes, "size": self.size,
                "color_head": self.config.color_head, "seg_to_color": self.config.seg_to_color,
                "backend": "torch", "device": str(self.device),
                "precision": "fp32" if self.autocast is None else str(self.autocast).removeprefix("torch."),
                "channels_last": self.channels_last}


def load_torch_predictor(url: str, device: str | None = "auto", size: int | None = None, precision: str = "auto",
                         memory_format: str = "auto") -> TorchPredictor:
    """The checkpoint at ``url`` (a model directory) on ``device`` with torch, predicting at ``size`` (default: its
    own), at ``precision`` (:data:`PRECISIONS`) in ``memory_format`` (:data:`MEMORY_FORMATS`; ``auto`` is
    channels_last on CUDA and wherever the forward runs in bf16: the layout of oneDNN's and cuDNN's bf16 kernels)."""
    from semcolor.model.checkpoint import load

    dev = resolve_device(device)
    dtype = autocast_dtype(precision, dev)
    channels_last = uses_channels_last(memory_format, dev) or (memory_format == "auto" and dtype is not None)
    model, config = load(url, device=dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    size = int(size or config.input_size)
    if size < 32:
        raise ValueError(f"model size must be >= 32 pixels; got {size}")
    return TorchPredictor(model=model, config=config, device=dev, size=size, autocast=dtype,
                          channels_last=channels_last)
