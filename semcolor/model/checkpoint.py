"""Model checkpoints as a directory: ``config.json`` + ``model.safetensors`` (no pickle, ever).

The same two files sit in every Ray Train checkpoint directory, so every command takes either.
Works on local paths and any URL semcolor.core.storage accepts (s3://, memory://, ...).
"""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from semcolor.core import storage
from semcolor.model.config import CONFIG_NAME, WEIGHTS_NAME
from semcolor.model.network import ModelConfig, SegColorModel, build_model
from semcolor.model.weights import clean_state_dict

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not match its config; the message names the file."""


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors of ``model`` (unwrapping DDP), keys without ``module.`` prefixes."""
    inner = getattr(model, "module", model)
    return {k: v.detach().cpu().contiguous() for k, v in clean_state_dict(inner.state_dict()).items()}


def save(model: nn.Module, config: ModelConfig, url: str, extra: dict[str, Any] | None = None) -> str:
    """Write ``url/config.json`` and ``url/model.safetensors``; returns ``url``.

    ``extra`` (JSON-serialisable, e.g. epoch and metrics) is stored under "extra" in config.json.
    """
    storage.makedirs(url)
    doc = {"format_version": FORMAT_VERSION, "model": config.to_dict(), "extra": extra or {}}
    storage.write_bytes(storage.join(url, WEIGHTS_NAME), st_save(model_state(model)))
    storage.write_bytes(storage.join(url, CONFIG_NAME), json.dumps(doc, indent=2).encode())
    return url


def load_config(url: str) -> tuple[ModelConfig, dict[str, Any]]:
    """Read ``url/config.json`` -> (ModelConfig, extra)."""
    path = storage.join(url, CONFIG_NAME)
    try:
        raw = storage.read_bytes(path)
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: not found; a checkpoint is a directory with {CONFIG_NAME} and "
                              f"{WEIGHTS_NAME}") from e
    try:
        doc = json.loads(raw)
        config = ModelConfig.from_dict(dict(doc["model"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: not a semcolor model config ({e})") from e
    if doc.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {doc['format_version']} is newer than this semcolor "
                              f"({FORMAT_VERSION}); upgrade semcolor")
    return config, doc.get("extra", {})


def _read_weights(url: str) -> tuple[str, dict[str, torch.Tensor]]:
    """(path, tensors) of ``url/model.safetensors``; CheckpointError naming the file if missing or corrupt."""
    path = storage.join(url, WEIGHTS_NAME)
    try:
        raw = storage.read_bytes(path)
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: not found beside {CONFIG_NAME}") from e
    try:
        return path, st_load(raw)
    except Exception as e:  # SafetensorError, and OSError/ValueError for some truncations
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({e})") from e


def load(url: str, device: str | torch.device = "cpu") -> tuple[SegColorModel, ModelConfig]:
    """Rebuild the model from ``url`` alone (random init, then strict load of the saved weights); eval mode."""
    config, _ = load_config(url)
    config.pretrained = None  # the saved weights replace any pretrained init
    path, state = _read_weights(url)
    model = build_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0:3]
        raise CheckpointError(f"{path}: weights do not match {CONFIG_NAME} (arch={config.arch}, "
                              f"n_classes={config.n_classes}): {' '.join(first)}") from e
    return model.to(device).eval(), config


def load_shared_weights(model: nn.Module, url: str) -> tuple[int, int]:
    """Start ``model`` from the checkpoint ``url``: every tensor the two share by name and shape is copied (e.g. the
    encoder, decoder and colour head of a colour-only pre-training), the rest stays at its init. Returns (tensors
    copied, tensors of ``model`` left at init). Raises CheckpointError, naming the file, if it cannot be read or
    shares nothing with ``model``."""
    load_config(url)  # names a missing or foreign checkpoint first
    path, state = _read_weights(url)
    own = model.state_dict()
    shared = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not shared:
        raise CheckpointError(f"{path}: shares no tensor (by name and shape) with this model; not a semcolor "
                              f"checkpoint of the same network")
    model.load_state_dict(shared, strict=False)
    return len(shared), len(own) - len(shared)
