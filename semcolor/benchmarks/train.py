"""`semcolor bench train`: training images/s, Ray Train with 2 workers vs a plain single-process PyTorch loop.

Same pairs (the training split of ``--limit`` pairs of ``--data``, default ECSSD beside the repo), same model
(U-Net, random init), same preprocessing (:func:`semcolor.data.preprocess_batch`), same loss and optimizer, same
global batch (2 x ``--batch-size``), ``--size`` pixels:

- ``plain_torch``: one process, ``--threads`` torch threads, pairs decoded up front, ``EPOCHS`` epochs;
- ``ray_train``: :func:`semcolor.train.fit` with 2 workers of ``--threads / 2`` CPUs (one torch thread each),
  DDP over gloo, ``--batch-size`` per worker; its images/s is the loop's own (training steps only, all
  workers' images over rank 0's wall time), and the run's whole wall time (worker start-up, validation,
  checkpoints) is reported beside it.

The last epoch is measured (the first carries warm-up). Prints a table, writes ``OUT/train.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from semcolor.data import load_pairs, preprocess_batch, split_pairs
from semcolor.decode import decode_pair
from semcolor import storage

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ecssd"
EPOCHS = 2
WORKERS = 2
ARCH = "unet"


def _pairs(root: Path, limit: int):
    if not (root / "images").is_dir():
        raise ValueError(f"no dataset at {root} (needs images/ and masks/); pass --data")
    pairs = load_pairs(str(root / "images"), str(root / "masks"), limit=limit)
    train, _ = split_pairs(pairs, 0.2, seed=0)
    return train


def plain_torch(train_pairs, size: int, global_batch: int, threads: int, epochs: int = EPOCHS) -> dict:
    """One process: decode every pair, then ``epochs`` epochs of AdamW steps; the last epoch is timed."""
    from semcolor.losses import LossConfig, multitask_loss
    from semcolor.model import ModelConfig, build_model

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        samples = [decode_pair(storage.read_bytes(i), storage.read_bytes(m), size)
                   for i, m in zip(train_pairs["image"].to_pylist(), train_pairs["mask"].to_pylist())]
        rgb = torch.from_numpy(np.stack([s.rgb for s in samples]))
        mask = torch.from_numpy(np.stack([s.mask for s in samples]))
        torch.manual_seed(0)
        model = build_model(ModelConfig(arch=ARCH, input_size=size)).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        loss_config = LossConfig()
        steps = len(samples) // global_batch
        if steps == 0:
            raise ValueError(f"{len(samples)} pairs < one batch of {global_batch}; raise --limit")
        generator = torch.Generator().manual_seed(0)
        seconds = 0.0
        for _ in range(epochs):
            order = torch.randperm(len(samples), generator=generator)
            start = time.perf_counter()
            for s in range(steps):
                idx = order[s * global_batch:(s + 1) * global_batch]
                b = preprocess_batch(rgb[idx], mask[idx], 2, train=True, generator=generator)
                seg, ab = model(b["l"])
                loss, _ = multitask_loss(seg, ab, b["target"], b["ab"], loss_config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
            seconds = time.perf_counter() - start
        images = steps * global_batch
        return {"method": "plain_torch", "threads": threads, "batch": global_batch, "images_per_epoch": images,
                "epoch_seconds": seconds, "images_per_s": images / seconds}
    finally:
        torch.set_num_threads(previous)


def ray_train(root: Path, limit: int, size: int, batch: int, threads: int, epochs: int = EPOCHS) -> dict:
    """:func:`semcolor.train.fit` with WORKERS workers on the same pairs; figures of its last epoch."""
    from semcolor.train import TrainConfig, fit

    with tempfile.TemporaryDirectory(prefix="semcolor-bench-train-") as runs:
        start = time.perf_counter()
        result = fit(TrainConfig(images=str(root / "images"), masks=str(root / "masks"), limit=limit, arch=ARCH,
                                 size=size, epochs=epochs, batch_size=batch, workers=WORKERS,
                                 cpus_per_worker=max(threads / WORKERS, 0.5), storage=runs,
                                 name=f"bench-{uuid.uuid4().hex[:6]}", keep=1, max_failures=0))
        wall = time.perf_counter() - start
    last = result.history[-1]
    images = result.data_counts["train"] // WORKERS // batch * batch * WORKERS
    return {"method": "ray_train", "workers": WORKERS, "threads_per_worker": max(1, round(threads / WORKERS)),
            "batch": batch * WORKERS, "images_per_epoch": images, "epoch_seconds": last["train_time_s"],
            "images_per_s": last["train_images_per_s"], "fit_wall_seconds": wall,
            "val_seconds_last_epoch": last["val_time_s"]}


def run(args: argparse.Namespace) -> int:
    """Both methods, a table, and OUT/train.json."""
    from semcolor.ray_env import init_ray

    logging.basicConfig(level=logging.WARNING)
    root = Path(args.data) if args.data else DEFAULT_DATA
    limit = args.limit or 256
    train_pairs = _pairs(root, limit)
    print(f"plain_torch: {train_pairs.num_rows} pairs, {EPOCHS} epochs ...", flush=True)
    load_before = os.getloadavg()[0]
    plain = plain_torch(train_pairs, args.size, WORKERS * args.batch_size, args.threads)
    plain["load_avg_1min_before_after"] = [load_before, os.getloadavg()[0]]
    init_ray(args.address, args.num_cpus or args.threads)
    print(f"ray_train: {WORKERS} workers, {EPOCHS} epochs ...", flush=True)
    load_before = os.getloadavg()[0]
    ray_row = ray_train(root, limit, args.size, args.batch_size, args.threads)
    ray_row["load_avg_1min_before_after"] = [load_before, os.getloadavg()[0]]
    rows = [plain, ray_row]
    ratio = ray_row["images_per_s"] / plain["images_per_s"]
    print(f"training throughput: {ARCH} at {args.size} px, {train_pairs.num_rows} training pairs of {root}, "
          f"global batch {WORKERS * args.batch_size}, epoch {EPOCHS} of {EPOCHS} timed")
    print(f"{'method':>12} | {'workers x threads':>17} | {'epoch s':>8} | {'images/s':>8}")
    for row in rows:
        layout = (f"{row['workers']} x {row['threads_per_worker']}" if row["method"] == "ray_train"
                  else f"1 x {row['threads']}")
        print(f"{row['method']:>12} | {layout:>17} | {row['epoch_seconds']:8.1f} | {row['images_per_s']:8.2f}")
    print(f"ray_train / plain_torch = {ratio:.2f}; Ray Train fit() wall time {ray_row['fit_wall_seconds']:.0f} s "
          f"for {EPOCHS} epochs incl. worker start-up, validation and checkpoints")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"arch": ARCH, "size": args.size, "pairs": train_pairs.num_rows, "epochs": EPOCHS, "rows": rows,
           "ratio_ray_over_plain": ratio, "cpu_count": os.cpu_count(), "platform": platform.platform(),
           "torch": torch.__version__}
    (out / "train.json").write_text(json.dumps(doc, indent=2))
    print("1-min load average before/after each method (other processes share these cores): "
          + ", ".join(f"{r['method']} {r['load_avg_1min_before_after'][0]:.1f}/{r['load_avg_1min_before_after'][1]:.1f}"
                      for r in rows))
    print(f"wrote {out / 'train.json'}")
    return 0
