"""The weights' moving average behind `semcolor train --ema` (no Ray): its update by hand, its warm-up, what it
copies, and that the model it holds is never trained."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from semcolor.train.config import TrainConfig
from semcolor.train.weight_average import WeightAverage, ema_decay


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))


def test_the_decay_warms_up_from_the_step_then_holds() -> None:
    assert ema_decay(0.999, 0) == pytest.approx(0.1)
    assert ema_decay(0.999, 90) == pytest.approx(91 / 100)
    assert ema_decay(0.999, 10**6) == 0.999


def test_an_update_is_the_weighted_mean_by_hand_and_integer_buffers_are_copied() -> None:
    """Two updates at steps 100 and 101 (decay d = min(0.9, ...) = 0.9): avg = d (d w0 + (1 - d) w1) + (1 - d) w2
    for parameters and running statistics alike; num_batches_tracked is the model's."""
    model = _net()
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    average = WeightAverage(model, 0.9)
    states = []
    for step in (100, 101):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()
        model(torch.randn(4, 1, 6, 6))  # moves the batch-norm statistics, counts a batch
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        average.update(model, step)
    got = average.model.state_dict()
    for name, v0 in w0.items():
        if v0.dtype.is_floating_point:
            expected = 0.9 * (0.9 * v0 + 0.1 * states[0][name]) + 0.1 * states[1][name]
            torch.testing.assert_close(got[name], expected)
        else:
            assert torch.equal(got[name], states[1][name])
    assert not any(p.requires_grad for p in average.model.parameters())
    assert not average.model.training
    assert not torch.equal(got["0.weight"], model.state_dict()["0.weight"])


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_a_decay_out_of_range_is_refused_by_name(value: float) -> None:
    with pytest.raises(ValueError, match="ema is a decay"):
        TrainConfig(ema=value)
    if value > 0:
        with pytest.raises(ValueError, match="EMA decay"):
            WeightAverage(_net(), value)
