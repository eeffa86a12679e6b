"""Encoder weight loading, kept apart from the model definition.

Sources: "imagenet" (torchvision's ResNet34 IMAGENET1K_V1 download) or a local file (.safetensors or a
torch state dict loaded with ``weights_only=True``). RGB first-conv weights are summed over their input
channels to take one L channel (the same trick timm uses for in_chans=1).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

_PREFIXES = ("module.", "_orig_mod.")


def clean_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip DDP / torch.compile / wrapper prefixes (``module.``, ``_orig_mod.``) from keys."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def _torchvision_to_encoder(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map torchvision resnet34 keys onto ResNet34Encoder keys; drop the classifier; adapt conv1 to 1 channel."""
    mapped: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        if key == "conv1.weight":
            mapped["stem.0.weight"] = value.sum(dim=1, keepdim=True) if value.shape[1] == 3 else value
        elif key.startswith("bn1."):
            mapped["stem.1." + key[len("bn1."):]] = value
        else:
            mapped[key] = value
    return mapped


def _read_state(source: str) -> dict[str, Tensor]:
    if source == "imagenet":
        from torchvision.models import ResNet34_Weights

        # The real download path; it needs network access to download.pytorch.org (or a warm torch hub cache).
        return ResNet34_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"pretrained weights {source!r}: not 'imagenet' and no such file; "
                         "use pretrained=None for random init")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"pretrained weights {source!r}: expected a state dict, got {type(state).__name__}")
    return state


def load_encoder_weights(encoder: nn.Module, source: str) -> None:
    """Load ResNet34 weights from ``source`` into ``encoder`` (strict: every encoder tensor must be present)."""
    state = _torchvision_to_encoder(clean_state_dict(_read_state(source)))
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"pretrained weights {source!r} do not fit the ResNet34 encoder: "
                         f"missing {missing[:5]}..., unexpected {unexpected[:5]}...")
