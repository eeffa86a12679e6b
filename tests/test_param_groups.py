"""--shared-lr-scale: the mask's own weights at --lr, the shared ones (encoder, decoder, colour head) scaled or
frozen; the schedule keeps each group's scale when a run resumes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from semcolor.model.config import ModelConfig
from semcolor.model.network import build_model
from semcolor.train.config import TrainConfig
from semcolor.train.loop import _build_optimizer, rebase_schedule
from semcolor.train.param_groups import freeze_shared, hold_shared_statistics, is_mask_only, parameter_groups

LR = 1e-3


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(input_size=64, seg_stride=1))


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """One step of a loss on both heads (the colour head's raw output and the masks), as training takes it."""
    torch.manual_seed(1)
    seg, color_raw = model(torch.rand(2, 1, 32, 32))
    loss = F.cross_entropy(seg, (torch.rand(2, 32, 32) > 0.5).long()) + color_raw.square().mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _changes(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> dict[bool, float]:
    """Largest absolute change of any weight (ndim > 1) since ``before``, for the mask's own (True) and the shared."""
    largest = {True: 0.0, False: 0.0}
    for name, p in model.named_parameters():
        if p.ndim > 1:
            own = is_mask_only(name)
            largest[own] = max(largest[own], float((p.detach() - before[name]).abs().max()))
    return largest


def test_names_split_the_mask_head_and_refiner_from_the_rest() -> None:
    assert is_mask_only("seg_head.body.0.weight") and is_mask_only("module.mask_refiner.full.0.weight")
    assert is_mask_only("seg_decoder.blocks.0.0.0.weight")  # the mask's own decoder (--seg-decoder own)
    assert not any(map(is_mask_only, ["encoder.stem.0.weight", "module.decoder.up.0.weight", "color_head.bins"]))


def test_scale_one_keeps_the_two_groups_of_earlier_checkpoints() -> None:
    model = _model()
    groups = parameter_groups(model, 1e-4, LR)
    assert [(g["lr_scale"], g["weight_decay"], g["lr"]) for g in groups] == [(1.0, 1e-4, LR), (1.0, 0.0, LR)]
    assert sum(len(g["params"]) for g in groups) == sum(1 for _ in model.parameters())


def test_a_scaled_step_moves_shared_weights_by_the_scale() -> None:
    """AdamW's first step moves each weight by about lr (its normalised gradient's sign) plus the decay: the shared
    weights' largest move is lr x 0.1, the mask's own lr."""
    model = _model()
    groups = parameter_groups(model, 0.0, LR, shared_lr_scale=0.1)
    assert [(g["lr_scale"], g["lr"]) for g in groups] == [(1.0, LR), (1.0, LR), (0.1, 0.1 * LR), (0.1, 0.1 * LR)]
    own = {id(p) for g in groups[:2] for p in g["params"]}
    assert own == {id(p) for n, p in model.named_parameters() if n.split(".")[0] in ("seg_head", "mask_refiner")}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _step(model, torch.optim.AdamW(groups, lr=LR))
    largest = _changes(model, before)
    assert largest[True] == pytest.approx(LR, rel=1e-3)
    assert largest[False] == pytest.approx(0.1 * LR, rel=1e-3)


def test_scale_zero_freezes_the_shared_weights_and_their_statistics() -> None:
    model = _model()
    frozen = freeze_shared(model)
    assert frozen == sum(1 for n, _ in model.named_parameters() if not is_mask_only(n))
    state = {n: t.clone() for n, t in model.state_dict().items()}
    optimizer, _ = _build_optimizer(model, TrainConfig(shared_lr_scale=0.0, lr=LR), steps_per_epoch=4)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(1 for _ in model.parameters()) - frozen
    model.train()
    hold_shared_statistics(model)
    _step(model, optimizer)
    changed = {n for n, t in model.state_dict().items() if not torch.equal(t, state[n])}
    assert changed and all(is_mask_only(n) for n in changed)  # weights and batch-norm statistics of the shared: as
    assert any(n.startswith("mask_refiner.") and "running_mean" in n for n in changed)  # they were; the mask's learn


def test_a_resumed_schedule_keeps_each_groups_scale() -> None:
    """rebase_schedule (resume, elastic resize) re-expresses the peak per group: the shared groups stay at the
    scale of the mask's."""
    config = TrainConfig(shared_lr_scale=0.25, lr=LR, epochs=4, warmup_epochs=1.0)
    optimizer, scheduler = _build_optimizer(_model(), config, steps_per_epoch=5)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    rebase_schedule(optimizer, scheduler, peak_lr=LR / 2, step=7)
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs[2] == pytest.approx(0.25 * lrs[0]) and lrs[0] < LR / 2
    assert scheduler.base_lrs == pytest.approx([LR / 2, LR / 2, LR / 8, LR / 8])


def test_a_negative_scale_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="shared_lr_scale must be >= 0"):
        TrainConfig(shared_lr_scale=-0.1)
