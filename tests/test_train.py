"""Training: schedule, config errors, validation merging (unit); one Ray Train scenario with 2 CPU workers
covering checkpoints, reported metrics, recovery from a worker that dies once, resume by rerunning with the same
name through the CLI, and merged validation == single-process validation; a one-epoch run stored on the moto S3
server. Its 3 epochs on 16 synthetic pairs at 32 px are too few for a loss that falls every run (2.26, 2.07, 2.26 seen):
that training learns is shown by the overfit tests (test_model, test_color_bins) and the demo's test."""

from __future__ import annotations

import functools
import io
import json
import math
import os
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from semcolor.model.config import LossConfig, ModelConfig
from semcolor.model.network import build_model
from semcolor.train.config import TrainConfig
from semcolor.train.loop import OPTIMIZER_NAME, RAW_WEIGHTS, lr_factor
from semcolor.train.step_timing import PHASES
from semcolor.train.validation import ValidationTotals, validate

# ---------------------------------------------------------------- unit


def test_lr_schedule_warms_up_then_follows_a_cosine_to_the_floor() -> None:
    factors = [lr_factor(s, warmup_steps=4, total_steps=20, min_ratio=0.05) for s in range(25)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))  # non-increasing after warm-up
    assert factors[12] == pytest.approx(0.05 + 0.95 * 0.5)  # half-way through the cosine
    assert factors[20] == pytest.approx(0.05) and factors[24] == pytest.approx(0.05)


def test_lr_schedule_follows_the_time_budget_when_it_is_further_along() -> None:
    assert lr_factor(5, 4, 1000, 0.0, time_fraction=1.0) == pytest.approx(0.0)
    assert lr_factor(5, 4, 1000, 0.0, time_fraction=0.5) == pytest.approx(0.5)
    assert lr_factor(2, 4, 1000, 0.0, time_fraction=0.9) == pytest.approx(0.75)  # warm-up is by steps only


@pytest.mark.parametrize("kwargs, match", [
    ({"arch": "vgg"}, "supported"),
    ({"images": "a"}, "both images and masks"),
    ({"images": "a", "masks": "b", "manifest": "m"}, "either manifest"),
    ({"val_fraction": 0.0}, "val_fraction"),
    ({"color_mask": "sky"}, "color_mask"),
    ({"epochs": 0}, "epochs"),
    ({"keep": 0}, "keep"),
    ({"time_budget": -1.0}, "time_budget"),
    ({"workers": 0}, "workers must be N >= 1 or MIN:MAX"),
    ({"workers": "3:1"}, "workers must be N >= 1 or MIN:MAX"),
    ({"workers": "two"}, "workers must be N >= 1 or MIN:MAX"),
])
def test_train_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_a_missing_init_checkpoint_ends_the_run_before_any_data(tmp_path) -> None:
    from semcolor.model.checkpoint import CheckpointError
    from semcolor.train.driver import fit

    with pytest.raises(CheckpointError, match=r"nothing/config.json: not found"):
        fit(TrainConfig(storage=str(tmp_path / "runs"), init=str(tmp_path / "nothing")))
    assert not (tmp_path / "runs").exists()


def test_train_config_round_trips_through_a_dict() -> None:
    config = TrainConfig(arch="resnet34", size=64, time_budget=2.5)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"learning_rate": 1.0})


def test_elastic_workers_and_the_learning_rate_rule() -> None:
    """--workers MIN:MAX: the batch per worker stays, the peak LR follows the global batch (--lr at MAX)."""
    fixed, elastic = TrainConfig(workers="3", lr=1e-3), TrainConfig(workers="1:4", lr=1e-3)
    assert (fixed.workers, fixed.worker_range, fixed.lr_at(3)) == (3, (3, 3), 1e-3)
    assert (elastic.workers, elastic.worker_range) == ("1:4", (1, 4))
    assert elastic.lr_at(4) == pytest.approx(1e-3) and elastic.lr_at(1) == pytest.approx(2.5e-4)
    assert TrainConfig(workers="2:2").workers == 2
    assert TrainConfig.from_dict(json.loads(json.dumps(elastic.to_dict()))) == elastic


def _schedule(config: TrainConfig, steps_per_epoch: int, world: int):
    from semcolor.train.loop import _build_optimizer

    model = torch.nn.Linear(3, 2)
    return _build_optimizer(model, config, steps_per_epoch, lr=config.lr_at(world))


def _run_steps(optimizer, scheduler, n: int) -> list[float]:
    lrs = []
    for _ in range(n):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_a_resumed_schedule_continues_where_it_stopped_in_epochs_whatever_the_group_size() -> None:
    """Same group size: rebasing a restored schedule changes nothing. Another size (elastic): the LR is that of a
    group of the new size at the same point in epochs."""
    from semcolor.train.loop import rebase_schedule

    config = TrainConfig(workers="1:2", epochs=6, lr=1e-3, warmup_epochs=1.0)
    opt, sched = _schedule(config, steps_per_epoch=5, world=2)
    first = _run_steps(opt, sched, 10)  # 2 epochs with 2 workers
    saved = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    rest = _run_steps(opt, sched, 5)

    same_opt, same_sched = _schedule(config, steps_per_epoch=5, world=2)
    same_opt.load_state_dict(saved["optimizer"])
    same_sched.load_state_dict(saved["scheduler"])
    rebase_schedule(same_opt, same_sched, config.lr_at(2), 2 * 5)
    assert _run_steps(same_opt, same_sched, 5) == pytest.approx(rest, rel=1e-12)

    # one worker left: 10 steps per epoch; at epoch 2 its LR is a one-worker schedule's at step 20, peak lr / 2
    small_opt, small_sched = _schedule(config, steps_per_epoch=10, world=1)
    small_opt.load_state_dict(saved["optimizer"])
    small_sched.load_state_dict(saved["scheduler"])
    rebase_schedule(small_opt, small_sched, config.lr_at(1), 2 * 10)
    ref_opt, ref_sched = _schedule(config, steps_per_epoch=10, world=1)
    reference = _run_steps(ref_opt, ref_sched, 30)
    assert _run_steps(small_opt, small_sched, 10) == pytest.approx(reference[20:], rel=1e-12)
    assert max(reference) == pytest.approx(config.lr / 2) and max(first) == pytest.approx(config.lr)


def test_step_seconds_are_a_mean_over_workers_per_step(monkeypatch) -> None:
    """Each worker's per-phase sums over its steps (StepClock.take) -> seconds per step over all workers' steps: two
    workers of 4 and 6 steps with known sums (the all-reduce a sum of both, as torch.distributed's)."""
    from semcolor.train import loop

    first = {"forward": 2.0, "backward": 1.0, "steps": 4.0}
    second = {"forward": 8.0, "backward": 4.0, "steps": 6.0}
    other = torch.tensor([second["forward"], second["backward"], second["steps"]], dtype=torch.float64)
    monkeypatch.setattr(loop, "all_reduce_sum", lambda t: t + other)
    assert loop._mean_over_workers(first) == pytest.approx({"forward": 10.0 / 10, "backward": 5.0 / 10})
    monkeypatch.setattr(loop, "all_reduce_sum", lambda t: t)  # one worker that took no step: zeros, not a NaN
    assert loop._mean_over_workers({"forward": 0.0, "steps": 0.0}) == {"forward": 0.0}


def _val_batches(n: int, size: int, batch: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    from semcolor.data.synth import make_pair

    pairs = [make_pair(i, size, seed) for i in range(n)]
    rgb = torch.from_numpy(np.stack([p[0] for p in pairs]))
    mask = torch.from_numpy(np.stack([p[1] for p in pairs]))
    return [{"rgb": rgb[i:i + batch], "mask": mask[i:i + batch]} for i in range(0, n, batch)]


def test_validation_shares_of_two_workers_merge_to_the_single_process_totals() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="unet", input_size=32))
    batches = _val_batches(10, 32, 3)  # 4 batches, the last one short
    loss = LossConfig()
    single = validate(model, batches, 2, loss)
    shares = [validate(model, batches, 2, loss, rank=r, world_size=2) for r in range(2)]
    merged = ValidationTotals.from_tensor(2, shares[0].to_tensor() + shares[1].to_tensor())
    np.testing.assert_array_equal(merged.seg.matrix, single.seg.matrix)
    assert merged.metrics() == pytest.approx(single.metrics(), rel=1e-12, nan_ok=True)
    assert single.metrics()["val_images"] == 10
    assert shares[0].loss_sums[3] == 6 and shares[1].loss_sums[3] == 4  # batches 0, 2 and 1, 3


def test_curves_png_is_an_image() -> None:
    from semcolor.train.curves import plot_curves

    history = [{"epoch": e, "train_loss": 1.0 / (e + 1), "val_loss": 1.2 / (e + 1), "val_miou": 0.3 + 0.1 * e,
                "val_psnr": 20 + e, "val_gray_psnr": 21.0, "val_pixel_accuracy": None} for e in range(3)]
    image = Image.open(io.BytesIO(plot_curves(history, "t")))
    assert image.format == "PNG" and image.width > 500
    with pytest.raises(ValueError, match="no epochs"):
        plot_curves([])


# ---------------------------------------------------------------- Ray Train on S3


def _single_process_val_metrics(config: TrainConfig, images: str, masks: str, checkpoint_url: str) -> dict:
    """Validation of ``checkpoint_url`` in this process over the run's own validation rows and batches: the same
    split and decoder as the run, in key order as the driver reads them, in batches of VAL_BATCH_SIZE, without
    Ray (the check is about merging, not about Ray Data)."""
    from semcolor.core.decode import OK
    from semcolor.data.pairs import load_pairs, split_pairs
    from semcolor.data.pipeline import decode_batch
    from semcolor.model.checkpoint import load
    from semcolor.train.loop import VAL_BATCH_SIZE

    _, val_pairs = split_pairs(load_pairs(images, masks), config.val_fraction, seed=0)
    rows = decode_batch({c: val_pairs[c].to_numpy(zero_copy_only=False) for c in ("key", "image", "mask")},
                        config.size)
    order = [i for i in np.argsort(rows["key"], kind="stable") if rows["status"][i] == OK]
    rgb, mask = torch.from_numpy(rows["rgb"][order]), torch.from_numpy(rows["mask"][order])
    batches = [{"rgb": rgb[i:i + VAL_BATCH_SIZE], "mask": mask[i:i + VAL_BATCH_SIZE]}
               for i in range(0, len(order), VAL_BATCH_SIZE)]
    model, _ = load(checkpoint_url)
    return validate(model, batches, config.n_classes, config.loss_config()).metrics("val_")


_COMMON = dict(synth_n=16, size=32, batch_size=4, workers=2, cpus_per_worker=0.5, max_failures=1, keep=1)


@pytest.mark.ray
@pytest.mark.slow
def test_train_recovers_from_a_worker_failure_and_resumes_by_name(ray_local, quick_ray_train, tmp_path,
                                                                  capsys) -> None:
    """Rank 0 dies after epoch 0's checkpoint and the group recovers from it; then the same name through the CLI
    continues with a third epoch. Validation merged over 2 workers equals one process's. Photos without masks join
    every batch (half of it): their pixels count in the AB prior, an epoch stays one pass over the pairs. With
    --ema the checkpoints hold the weights' average, which is what validation measured, and the raw weights beside
    the optimizer state, which the recovery and the resume go on from."""
    from faults import train_loop_failing_after

    from semcolor.cli import main
    from semcolor.core import storage
    from semcolor.data.synth import write_synth
    from semcolor.model.checkpoint import load, model_state
    from semcolor.train.driver import fit

    name = f"t-{uuid.uuid4().hex[:6]}"
    runs = str(tmp_path / "runs")
    write_synth(str(tmp_path / "photo_source"), 8, _COMMON["size"], seed=7)
    photos = str(tmp_path / "photo_source" / "images")  # their masks are never read
    # Run 1: 2 epochs; rank 0's process exits once right after epoch 0's checkpoint.
    result = fit(TrainConfig(epochs=2, storage=runs, name=name, photos=[photos], photos_share=0.5, ema=0.5,
                             **_COMMON),
                 train_loop=functools.partial(train_loop_failing_after, epoch=0))
    run_dir = f"{runs}/{name}"
    assert result.run_dir == run_dir and result.best_checkpoint == f"{run_dir}/best"
    assert result.latest_checkpoint.startswith(f"{run_dir}/checkpoint_")
    assert storage.exists(storage.join(run_dir, ".fault_injected")), "the fault hook never fired"
    assert [h["epoch"] for h in result.history] == [0, 1]
    # Epoch 1 ran in a new worker group that restored epoch 0's checkpoint: recovered, not restarted.
    assert [h["resumed_from_epoch"] for h in result.history] == [-1, 0]
    assert result.history[1]["step"] == 2 * result.history[0]["step"]
    for key in ("val_miou", "val_psnr", "val_gray_psnr", "val_ssim", "train_images_per_s", "lr"):
        assert all(math.isfinite(h[key]) for h in result.history), key
    steps_per_epoch = result.history[0]["step"]
    for h in result.history:  # the step clock: phases (s per step, mean over workers) make up the epoch's time
        phases = [h[f"step_{phase}_s"] for phase in PHASES]
        # every phase is lapped in its own place: a lap missed or merged into its neighbour leaves a phase at 0
        # (the all-reduce tail too: over gloo the last bucket takes time after its launch)
        assert all(s > 0.0 for s in phases), h
        # train_time_s is rank 0's clock, the phases a mean over workers whose loops start a little apart: a
        # few percent of slack above, none of it a claim about speed
        assert 0.5 * h["train_time_s"] <= sum(phases) * steps_per_epoch <= 1.05 * h["train_time_s"], h
        assert h["step_forward_s"] > 0 and h["step_backward_s"] > 0 and h["step_allreduce_busy_s"] > 0, h
    assert result.data_counts["train"] + result.data_counts["val"] == _COMMON["synth_n"]
    assert result.data_counts["photos"] == 8
    # 2 pairs + 2 photos per batch and worker: steps per epoch = training pairs // 2 workers // 2
    assert steps_per_epoch == result.data_counts["train"] // 2 // 2
    prior = json.loads(storage.read_text(storage.join(run_dir, "ab_prior.json")))
    assert sum(prior["counts"]) == (result.data_counts["train"] + 8) * _COMMON["size"] ** 2  # photos' pixels too
    model, model_config = load(result.best_checkpoint)  # best/ is a model directory
    assert model_config.input_size == _COMMON["size"]
    lines = storage.read_text(storage.join(run_dir, "metrics.jsonl")).splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
    curves = Image.open(io.BytesIO(storage.read_bytes(storage.join(run_dir, "curves.png"))))
    assert curves.format == "PNG"

    # Validation merged over the 2 workers == this process alone on the same rows (the last epoch's weights).
    synth = storage.join(run_dir, "synth_data")
    single = _single_process_val_metrics(TrainConfig(epochs=2, **_COMMON), storage.join(synth, "images"),
                                         storage.join(synth, "masks"), result.latest_checkpoint)
    reported = {k: v for k, v in result.history[-1].items() if k in single}
    assert reported == pytest.approx(single, rel=1e-9, nan_ok=True)
    raw = torch.load(os.path.join(result.latest_checkpoint, OPTIMIZER_NAME), weights_only=True)[RAW_WEIGHTS]
    averaged = model_state(load(result.latest_checkpoint)[0])
    assert raw.keys() == averaged.keys()
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw if raw[k].dtype.is_floating_point)

    # Run 2: the same name through the CLI with --epochs 3 continues at epoch 2 from the saved state.
    options = {"--synth-n": _COMMON["synth_n"], "--size": _COMMON["size"], "--batch-size": _COMMON["batch_size"],
               "--workers": 2, "--cpus-per-worker": 0.5, "--max-failures": 1, "--keep": 1, "--photos": photos,
               "--ema": 0.5}
    code = main(["train", "--storage", runs, "--name", name, "--epochs", "3",
                 *(str(v) for item in options.items() for v in item)])
    assert code == 0
    out = capsys.readouterr().out
    assert f"{run_dir}/best" in out and "val mIoU" in out
    history = [json.loads(line) for line in storage.read_text(storage.join(run_dir, "metrics.jsonl")).splitlines()]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[2]["resumed_from_epoch"] == 1
    assert history[2]["step"] == 3 * history[0]["step"]
    assert history[:2] == json.loads(json.dumps(result.history))  # earlier epochs kept as they were


@pytest.mark.ray
@pytest.mark.s3
@pytest.mark.slow
def test_train_stores_its_run_on_s3(ray_local, quick_ray_train, s3_prefix) -> None:
    """Ray Train checkpoints, best/, metrics.jsonl and the synthetic data all in s3:// (moto), one epoch. One
    worker and the regression head (no AB prior pass): storage does not depend on either (the test above trains 2
    workers with the bins head)."""
    from semcolor.core import storage
    from semcolor.model.checkpoint import load_config
    from semcolor.train.driver import fit

    import torch

    from semcolor.model.checkpoint import load, save
    from semcolor.model.network import build_model

    # --init from S3: the run starts from another network's weights (seed 123), not from its own init (seed 0)
    config = TrainConfig(epochs=1, storage=s3_prefix, name="s3run", init=f"{s3_prefix}/init",
                         **{**_COMMON, "workers": 1, "color_head": "regression"})
    torch.manual_seed(123)
    start = build_model(config.model_config())
    save(start, config.model_config(), config.init)
    result = fit(config)
    assert result.run_dir == f"{s3_prefix}/s3run" and result.best_checkpoint == f"{s3_prefix}/s3run/best"
    assert result.latest_checkpoint.startswith(f"{s3_prefix}/s3run/checkpoint_")
    assert load_config(result.best_checkpoint)[0].input_size == _COMMON["size"]  # (weights load: the test above)
    assert storage.exists(f"{result.best_checkpoint}/model.safetensors")
    assert storage.exists(f"{s3_prefix}/s3run/synth_data/images")
    assert len(storage.read_text(f"{s3_prefix}/s3run/metrics.jsonl").splitlines()) == 1
    # AdamW moves a weight by about lr per step at most: a few steps at lr 1e-3 stay within 0.01 of where they began
    trained = dict(load(result.latest_checkpoint)[0].named_parameters())
    torch.manual_seed(0)
    own_init = dict(build_model(config.model_config()).named_parameters())
    for name, began in start.named_parameters():
        assert (trained[name] - began).abs().max() < 0.01, name
    conv = "encoder.stem.0.weight"
    assert (trained[conv] - own_init[conv]).abs().max() > 0.1  # not the run's own init
