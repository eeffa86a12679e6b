"""An exponential moving average of a model's weights: what a run validates, keeps and serves with ``--ema``.

The raw weights of a small-data run swing from epoch to epoch (the validation mIoU of one run moved by +-0.03 between
neighbouring late epochs); their average over the last few hundred steps is a smoother, usually better model
(Polyak averaging; the "model EMA" of timm and TensorFlow). Parameters and floating buffers (batch-norm statistics)
are averaged; integer buffers (batch counts) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(decay: float, step: int) -> float:
    """The decay at optimizer ``step`` (0-based): ``decay``, or less early on, min(decay, (1 + step) / (10 + step)),
    so the first steps' random-init weights fade quickly. Derived from the step, so a resumed run goes on alike."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightAverage:
    """The average of ``model``'s weights (a copy of it, in eval mode, never trained).

    ``update(model, step)`` after each optimizer step: avg <- d avg + (1 - d) w, d = :func:`ema_decay`.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1); got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold ``model``'s current weights (the same architecture, unwrapped from DDP) into the average."""
        weight = 1.0 - ema_decay(self.decay, step)
        mine, theirs = self.model.state_dict(), model.state_dict()
        for name, avg in mine.items():
            value = theirs[name].detach()
            if avg.dtype.is_floating_point:
                avg.lerp_(value.to(avg.dtype), weight)
            else:
                avg.copy_(value)
