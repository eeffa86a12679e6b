"""The per-worker Ray Train loop (Train v2): DDP model, AdamW with linear warm-up + cosine decay per step,
gradient clipping, bf16 autocast on GPU (``--precision``; on CPU too when asked), per-epoch validation merged across
workers, a checkpoint every epoch, resume from ``ray.train.get_checkpoint()``.

A checkpoint directory holds ``config.json`` + ``model.safetensors`` (semcolor.model.checkpoint: the model is never
pickled, so every command takes it as a model directory) plus the training state: ``train_state.json`` (epoch,
step, history of per-epoch metrics) and ``optimizer.pt`` (optimizer and LR-scheduler state dicts, tensors only,
read back with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from semcolor.core.scratch import scratch_folder
from semcolor.data.preprocess import RESIZED_CROP_SCALE, preprocess_batch
from semcolor.model import checkpoint as ckpt
from semcolor.model.torch_predictor import autocast_dtype
from semcolor.train.config import TrainConfig
from semcolor.train.forward import forward_loss
from semcolor.train.param_groups import freeze_shared, hold_shared_statistics, parameter_groups
from semcolor.train.step_timing import StepClock
from semcolor.train.validation import all_reduce_sum, all_reduce_totals, validate
from semcolor.train.weight_average import WeightAverage

log = logging.getLogger(__name__)

STATE_NAME = "train_state.json"
OPTIMIZER_NAME = "optimizer.pt"
RAW_WEIGHTS = "raw_model"
"""With ``--ema``: the key of the raw (trained, not averaged) weights in a checkpoint's OPTIMIZER_NAME file."""
VAL_BATCH_SIZE = 16


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float, time_fraction: float = 0.0) -> float:
    """Multiplier of the peak LR at optimizer step ``step`` (0-based): linear warm-up to 1 over ``warmup_steps``,
    then a cosine from 1 to ``min_ratio`` at ``total_steps``; ``min_ratio`` after that.

    ``time_fraction`` (elapsed / time budget, 0 without a budget): the cosine runs at the further along of step
    progress and time progress, so a time-budgeted run ends annealed whatever its speed.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, max(progress, time_fraction))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _build_optimizer(model: nn.Module, config: TrainConfig, steps_per_epoch: int, deadline: float | None = None,
                     lr: float | None = None) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Fused AdamW (no weight decay on norms and biases; the shared weights at ``--shared-lr-scale`` of the rate:
    :mod:`semcolor.train.param_groups`) and the per-step warm-up + cosine schedule (the cosine also follows the time
    budget when ``deadline``, a time.time() value, is given)."""
    peak = lr or config.lr
    # fused: one kernel over all parameters; on CPU 4x faster than the multi-tensor default for the 24 M
    # parameters, a step's largest cost after the model at 128 px (`semcolor bench train`)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay, peak, config.shared_lr_scale),
                                  lr=peak, fused=True)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    total = config.epochs * steps_per_epoch
    budget_s = 60.0 * config.time_budget if (config.time_budget and deadline) else None

    def factor(step: int) -> float:  # a closure, not an object: LambdaLR's state dict then holds no deadline
        elapsed = 0.0 if budget_s is None else 1.0 - (deadline - time.time()) / budget_s
        return lr_factor(step, warmup, total, config.min_lr_ratio, max(0.0, elapsed))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return optimizer, scheduler


def rebase_schedule(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, peak_lr: float,
                    step: int) -> None:
    """Put a restored schedule at optimizer step ``step`` of this worker group, with peak ``peak_lr``.

    The schedule runs in epochs (warm-up and cosine in epochs x steps per epoch); an elastic group that resumed
    with another size has another number of steps per epoch and another peak LR, so a checkpoint's step count and
    base LRs are re-expressed in the new group's: ``step`` = epochs done x its steps per epoch. For a group of the
    same size this changes nothing. Each group keeps its ``lr_scale`` (the shared weights' --shared-lr-scale)."""
    scheduler.base_lrs = [peak_lr * group.get("lr_scale", 1.0) for group in optimizer.param_groups]
    scheduler.last_epoch = step
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["initial_lr"] = base
        group["lr"] = base * factor(step)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _restore(model: nn.Module, config: TrainConfig) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Load the latest reported checkpoint into ``model``: -> (train state, optimizer and scheduler state dicts on
    CPU) or None. Read while the checkpoint folder exists (for remote storage, Ray's temporary download); no copy
    of the optimizer state is written beside it."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        saved, _ = ckpt.load_config(folder)
        wanted = config.model_config()
        keys = ("arch", "n_classes", "color_head", "seg_to_color", "seg_stride", "seg_decoder")
        have, want = ({k: getattr(c, k) for k in keys} for c in (saved, wanted))
        if have != want:
            raise ValueError(f"the run's checkpoint {checkpoint.path} has {have}, but this run asks for {want}; use "
                             "a new --name for a different model")
        loaded, _ = ckpt.load(folder)
        model.load_state_dict(loaded.state_dict(), strict=True)
        with open(os.path.join(folder, STATE_NAME)) as f:
            state = json.load(f)
        saved = torch.load(os.path.join(folder, OPTIMIZER_NAME), map_location="cpu", weights_only=True)
    log.info("resuming from %s: epoch %d done, step %d", checkpoint.path, state["epoch"], state["step"])
    return state, saved


def _save_and_report(model: nn.Module, config: TrainConfig, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LambdaLR, state: dict[str, Any],
                     metrics: dict[str, Any], rank: int, average: WeightAverage | None = None) -> None:
    """Every worker reports ``metrics``; rank 0 attaches a checkpoint written into a temp dir. With ``average``
    (``--ema``) the checkpoint's model is the average (what was validated, what evaluation and serving load) and
    the raw weights, which training goes on from, are kept beside the optimizer state."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with scratch_folder("semcolor-ckpt-") as folder:  # a worker lost mid-save leaves no 280 MB folder
        ckpt.save(model if average is None else average.model, config.model_config(), folder,
                  extra={"epoch": state["epoch"], "metrics": metrics, "train_config": config.to_dict()})
        training = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        if average is not None:
            training[RAW_WEIGHTS] = ckpt.model_state(model)
        torch.save(training, os.path.join(folder, OPTIMIZER_NAME))
        with open(os.path.join(folder, STATE_NAME), "w") as f:
            json.dump(state, f, indent=1)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                         checkpoint_dir_name=f"checkpoint_epoch{state['epoch']:04d}")


def cycle_batches(shard: Any, batch_size: int, device: torch.device, shuffle_buffer: int, seed: int
                  ) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of ``batch_size`` rows of a worker's shard (photos without masks): pass after pass, each
    reshuffled, whole batches only. Every worker takes the same number per step from equal shards, so all of them
    start a new pass together (as a split Ray dataset requires)."""
    passes = 0
    while True:
        yielded = False
        for batch in shard.iter_torch_batches(batch_size=batch_size, drop_last=True, device=device,
                                              local_shuffle_buffer_size=shuffle_buffer,
                                              local_shuffle_seed=seed + passes):
            yielded = True
            yield batch
        if not yielded:
            raise RuntimeError(f"this worker's share of the photos without masks holds fewer than {batch_size} rows, "
                               "one batch's worth (--photos-share x --batch-size); add photos or lower either")
        passes += 1


def with_photos(pairs: dict[str, torch.Tensor], photos: dict[str, torch.Tensor] | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A batch of pairs (``rgb`` uint8 (P, S, S, 3), ``mask`` uint8 (P, S, S)) and of photos without masks
    (``rgb`` (F, S, S, 3), or None) -> (rgb (P + F, S, S, 3), mask (P + F, S, S) with zeros for the photos,
    labelled bool (P + F,) True for the pairs; None without photos)."""
    if photos is None:
        return pairs["rgb"], pairs["mask"], None
    rgb = torch.cat([pairs["rgb"], photos["rgb"]])
    n_pairs, n_photos = len(pairs["rgb"]), len(photos["rgb"])
    mask = torch.cat([pairs["mask"], pairs["mask"].new_zeros((n_photos, *pairs["mask"].shape[1:]))])
    labelled = torch.cat([torch.ones(n_pairs, dtype=torch.bool), torch.zeros(n_photos, dtype=torch.bool)])
    return rgb, mask, labelled.to(rgb.device)


def _mean_over_workers(seconds: dict[str, float]) -> dict[str, float]:
    """A worker's per-phase seconds of an epoch (:meth:`StepClock.take`) -> their mean over the workers, per step
    (the ``steps`` key is dropped)."""
    keys = [k for k in seconds if k != "steps"]
    totals = all_reduce_sum(torch.tensor([seconds[k] for k in keys] + [seconds["steps"]], dtype=torch.float64))
    steps = max(1.0, float(totals[-1]))
    return {k: float(v) / steps for k, v in zip(keys, totals[:-1])}


def epoch_line(metrics: dict[str, Any], epochs: int) -> str:
    """One progress line per epoch (rank 0 prints it; Ray shows it on the driver)."""
    m = metrics
    return (f"epoch {m['epoch'] + 1}/{epochs}: loss {m['train_loss']:.4f} (seg {m['train_seg_loss']:.4f}, color "
            f"{m['train_color_loss']:.4f}), {m['train_images_per_s']:.1f} img/s; val mIoU {m['val_miou']:.3f}, PSNR "
            f"{m['val_psnr']:.2f} dB (gray {m['val_gray_psnr']:.2f}), colorfulness {m['val_colorfulness_ratio']:.2f} "
            f"of truth")


def _deadline_passed(deadline: float | None) -> bool:
    """Rank 0's clock decides for everyone (a MAX over workers of the local decision)."""
    if deadline is None:
        return False
    flag = torch.tensor([1.0 if time.time() >= deadline else 0.0], dtype=torch.float64)
    return bool(all_reduce_sum(flag).item() > 0)


def _quiet_ray_train_reports() -> None:
    """Ray Train 2.60 logs every report at INFO through a logger named by its file path, not ``ray.train.*``, so
    RunConfig's log level misses it: one line per worker per epoch that repeats the metrics. Raise that logger's
    level (and do nothing if the module moved)."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point. ``loop_config``: ``train`` (TrainConfig dict), ``steps_per_epoch``, ``run_dir``,
    ``train_rows`` (rows of the training split; each worker trains on an equal shard), ``deadline`` (time.time() seconds
    or None), ``ab_prior`` (bins head: the training split's prior, a list of Q floats, else None)."""
    import ray.train
    import ray.train.torch

    _quiet_ray_train_reports()
    config = TrainConfig.from_dict(loop_config["train"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    steps_per_epoch = loop_config["train_rows"] // world // config.pair_batch  # equal shards, whole batches
    torch.set_num_threads(max(1, int(round(config.cpus_per_worker))))
    torch.manual_seed(config.seed)
    device = ray.train.torch.get_device()
    use_cuda = device.type == "cuda"

    model_config = config.model_config()
    from semcolor.model.network import build_model

    model = build_model(model_config)
    if config.init:  # before the prior: the run's own data sets it
        from semcolor.model.checkpoint import load_shared_weights

        copied, left = load_shared_weights(model, config.init)
        if rank == 0:
            log.info("started from %s: %d tensors copied, %d at their init", config.init, copied, left)
    if loop_config.get("ab_prior") is not None:  # a fresh bins head (in-gamut bins already) gets the data's prior;
        head = model.color_head                    # a restore below replaces it with the checkpoint's own
        head.set_color_space(head.bins, torch.tensor(loop_config["ab_prior"]))
    restored = _restore(model, config)
    frozen = config.shared_lr_scale == 0.0
    if frozen:  # before DDP, which registers the parameters that need a gradient
        count = freeze_shared(model)
        if rank == 0:
            log.info("--shared-lr-scale 0: %d tensors of the encoder, decoder and colour head frozen", count)
    channels_last = use_cuda if config.channels_last is None else config.channels_last
    amp = autocast_dtype(config.precision, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"bucket_cap_mb": config.ddp_bucket_mb})
    clock = StepClock(sync=torch.cuda.synchronize if use_cuda else None)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        clock.attach(model)
    optimizer, scheduler = _build_optimizer(model, config, steps_per_epoch, loop_config.get("deadline"),
                                            lr=config.lr_at(world))
    state: dict[str, Any] = {"epoch": -1, "step": 0, "history": []}
    resumed = restored is not None
    resumed_raw: dict[str, torch.Tensor] | None = None
    if resumed:
        state, saved = restored
        resumed_raw = saved.get(RAW_WEIGHTS)
        optimizer.load_state_dict(saved["optimizer"])  # moves each state tensor to its parameter's device
        scheduler.load_state_dict(saved["scheduler"])
        del restored, saved  # the CPU copy (about twice the model's size) is not held for the whole run
        rebase_schedule(optimizer, scheduler, config.lr_at(world), (state["epoch"] + 1) * steps_per_epoch)
        if rank == 0 and state["history"] and state["history"][-1].get("workers", world) != world:
            log.warning("resuming with %d workers (was %d): %d steps per epoch, peak lr %.3g",
                        world, state["history"][-1]["workers"], steps_per_epoch, config.lr_at(world))
    resumed_from = state["epoch"] if resumed else None
    loss_config = config.loss_config()
    inner = getattr(model, "module", model)
    # the average starts from the restored checkpoint's model (itself the average when the run has --ema)
    average = WeightAverage(inner, config.ema) if config.ema else None
    if resumed_raw is not None and average is not None:
        inner.load_state_dict(resumed_raw)  # training goes on from the raw weights, not their average
    del resumed_raw
    train_shard = ray.train.get_dataset_shard("train")
    val_data = ray.train.get_dataset_shard("val")
    # a resumed, recovered or resized run goes on with other photo batches than the ones it started with
    photo_batches = (cycle_batches(ray.train.get_dataset_shard("photos"), config.photo_batch, device,
                                   config.shuffle_buffer, config.seed + 7919 * rank + 1_000_003 * (state["epoch"] + 1))
                     if config.photo_batch else None)
    generator = torch.Generator().manual_seed(config.seed * 1000 + rank)

    if state["epoch"] + 1 >= config.epochs and rank == 0:
        log.warning("the run already has %d epoch(s), epochs=%d: nothing to train (raise --epochs to continue)",
                    state["epoch"] + 1, config.epochs)
    for epoch in range(state["epoch"] + 1, config.epochs):
        generator.manual_seed(config.seed * 100_003 + epoch * 1009 + rank)
        model.train()
        if frozen:
            hold_shared_statistics(inner)
        sums = torch.zeros(4, dtype=torch.float64)  # total, seg, color (x images), images
        start, steps = time.perf_counter(), 0
        clock.start()
        for batch in train_shard.iter_torch_batches(batch_size=config.pair_batch, drop_last=True, device=device,
                                                    local_shuffle_buffer_size=config.shuffle_buffer,
                                                    local_shuffle_seed=config.seed + epoch):
            rgb, mask, labelled = with_photos(batch, next(photo_batches) if photo_batches else None)
            clock.lap("data_wait")
            inputs = preprocess_batch(rgb, mask, config.n_classes, train=config.augment, generator=generator,
                                      resized_crop_scale=(config.crop_scale_min, RESIZED_CROP_SCALE[1])
                                      if config.augment else None,
                                      labelled=labelled, lightness_jitter=config.lightness_jitter,
                                      copy_paste_probability=config.copy_paste)
            clock.lap("preprocess")
            loss, parts = forward_loss(model, inner.color_head, inputs, loss_config, amp, channels_last)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, step {state['step']} on rank "
                                         f"{rank}; lower --lr (now {config.lr}) or check the data")
            clock.lap("forward")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clock.backward_done()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            if average is not None:
                average.update(inner, state["step"])
            state["step"] += 1
            steps += 1
            n = inputs["l"].shape[0]
            sums += torch.tensor([loss.item() * n, parts["seg"].item() * n, parts["color"].item() * n, n],
                                 dtype=torch.float64)
            clock.lap("optimizer")
        train_time = time.perf_counter() - start
        step_seconds = _mean_over_workers(clock.take())
        if steps != steps_per_epoch:
            raise RuntimeError(f"rank {rank} ran {steps} steps in epoch {epoch}, expected {steps_per_epoch} "
                               "(equal shards of the materialized train set); the data changed under the run")
        sums = all_reduce_sum(sums)
        val_start = time.perf_counter()
        totals = all_reduce_totals(validate(
            inner if average is None else average.model, val_data.iter_torch_batches(batch_size=VAL_BATCH_SIZE, device=device), config.n_classes,
            loss_config, rank, world, amp=amp, channels_last=channels_last))
        images = float(sums[3])
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "step": state["step"],
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": float(sums[0] / images),
            "train_seg_loss": float(sums[1] / images),
            "train_color_loss": float(sums[2] / images),
            "train_images_per_s": images / train_time,
            "train_time_s": train_time,
            **{f"step_{phase}_s": seconds for phase, seconds in step_seconds.items()},
            "val_time_s": time.perf_counter() - val_start,
            "resumed_from_epoch": -1 if resumed_from is None else resumed_from,
            "workers": world,
            **totals.metrics("val_"),
        }
        state = {"epoch": epoch, "step": state["step"], "history": state["history"] + [metrics]}
        if rank == 0:
            log.info("%s", epoch_line(metrics, config.epochs))
        _save_and_report(model, config, optimizer, scheduler, state, metrics, rank, average)
        if _deadline_passed(loop_config.get("deadline")):
            if rank == 0:
                log.warning("time budget of %.1f min used up after epoch %d; stopping", config.time_budget, epoch)
            break
