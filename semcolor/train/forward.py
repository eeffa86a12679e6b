"""The model's forward as training and validation run it: under autocast at the run's precision and in its
memory format (``--precision``, ``--channels-last``), the CUDA settings runnable on CPU too."""

from __future__ import annotations

import torch
from torch import nn

from semcolor.model.config import LossConfig
from semcolor.model.losses import multitask_loss


def forward(model: nn.Module, l_input: torch.Tensor, amp: torch.dtype | None, channels_last: bool
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """L (B, 1, H, W) -> (seg logits, raw color output) of ``model`` under autocast at ``amp`` (None: fp32) on the
    input's device, the input in channels_last when asked."""
    x = l_input.contiguous(memory_format=torch.channels_last) if channels_last else l_input
    with torch.autocast(x.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        return model(x)


def forward_loss(model: nn.Module, color_head: nn.Module, inputs: dict[str, torch.Tensor], loss_config: LossConfig,
                 amp: torch.dtype | None, channels_last: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training forward: ``inputs`` (:func:`semcolor.data.preprocess.preprocess_batch`'s ``l``, ``target``,
    ``ab``) -> (loss, parts); the losses run in fp32 (:func:`multitask_loss` casts the logits)."""
    seg_logits, color_raw = forward(model, inputs["l"], amp, channels_last)
    return multitask_loss(seg_logits, color_raw, inputs["target"], inputs["ab"], loss_config, color_head)
