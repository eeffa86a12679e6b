"""AdamW parameter groups of a SegColorModel: the mask's own weights and the weights the mask shares with the colour.

The segmentation head, its refiner stages and its own decoder where it has one (:data:`MASK_ONLY`) serve the mask
alone; the encoder, the decoder and the colour head serve both heads (the colour head is counted with them: it is
what a colour-only ``--init`` stage trained). ``--shared-lr-scale`` sets the learning rate of the shared ones relative to ``--lr``: below 1, a joint run
started from a colour-only stage learns the mask on the colour features without unlearning them at the full rate;
0 freezes them (no gradient, their normalisation statistics fixed too).
"""

from __future__ import annotations

from typing import Any

from torch import nn

MASK_ONLY = ("seg_decoder", "mask_refiner", "seg_head")
"""Submodules of a SegColorModel that only the mask uses."""


def is_mask_only(name: str) -> bool:
    """A parameter name of the model (or of its DDP wrapper, ``module.``-prefixed) -> whether the mask alone uses it."""
    parts = name.split(".")
    if parts[0] == "module":
        parts = parts[1:]
    return parts[0] in MASK_ONLY


def shared_modules(model: nn.Module) -> list[nn.Module]:
    """The model's top-level submodules outside :data:`MASK_ONLY` (encoder, decoder, colour head)."""
    return [module for name, module in model.named_children() if name not in MASK_ONLY]


def freeze_shared(model: nn.Module) -> int:
    """Stop gradients to the shared weights (call before wrapping in DDP) -> the number of tensors frozen."""
    frozen = 0
    for module in shared_modules(model):
        for p in module.parameters():
            p.requires_grad_(False)
            frozen += 1
    return frozen


def hold_shared_statistics(model: nn.Module) -> None:
    """Put the shared modules in eval mode after ``model.train()``: frozen weights keep their batch-norm statistics
    too, so the colour path is exactly the one it started from."""
    for module in shared_modules(model):
        module.eval()


def parameter_groups(model: nn.Module, weight_decay: float, lr: float, shared_lr_scale: float = 1.0
                     ) -> list[dict[str, Any]]:
    """AdamW parameter groups: weights with ``weight_decay``, norms and biases (ndim <= 1) without; each group holds
    ``lr_scale`` (its learning rate over the schedule's) and ``lr`` = lr x lr_scale. With ``shared_lr_scale`` 1, the
    two groups of every parameter that requires a gradient (the layout of earlier checkpoints' optimizer state);
    otherwise the mask's own two groups first, then the shared ones at ``lr x shared_lr_scale``. Empty groups are
    left out; frozen parameters (requires_grad False) are in none."""
    buckets: dict[tuple[float, bool], list[nn.Parameter]] = {}  # at scale 1 both parts fall in the same two
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = 1.0 if is_mask_only(name) else shared_lr_scale
        buckets.setdefault((scale, p.ndim > 1), []).append(p)
    order = [(1.0, True), (1.0, False), (shared_lr_scale, True), (shared_lr_scale, False)]
    return [{"params": buckets[key], "weight_decay": weight_decay if key[1] else 0.0, "lr_scale": key[0],
             "lr": lr * key[0]} for key in dict.fromkeys(order) if key in buckets]
