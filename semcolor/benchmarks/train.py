"""`semcolor bench train`: training images/s, Ray Train with 2 workers vs a plain single-process PyTorch loop.

Same pairs (the training split of ``--limit`` pairs of ``--data``, default :data:`DEFAULT_LIMIT` of ECSSD beside
the repo), same model (U-Net, random init), same preprocessing (:func:`semcolor.data.preprocess.preprocess_batch`),
same loss and optimizer, same global batch (2 x ``--batch-size``, lowered when the training split is smaller
than that), ``--size`` pixels:

- ``plain_torch``: one process (this driver), ``--threads`` torch threads, pairs decoded once up front; one
  warm-up step, then one timed epoch;
- ``ray_train``: :func:`semcolor.train.driver.fit` with 2 workers of ``--threads / 2`` CPUs (one torch thread
  each), DDP over gloo, ``--batch-size`` per worker, :data:`EPOCHS` epochs of which the last is timed: the
  loop's own images/s (training steps only, all workers' images over rank 0's wall time); the whole ``fit``
  wall time (data decode, worker start-up, validation, checkpoints) is reported beside it.

Measured: images/s of the timed epoch. The two run alternately for :data:`ROUNDS` rounds, the order flipping
every round (plain, ray | ray, plain | ...), so load from elsewhere on a shared machine falls on both; the local
Ray is up (idle) during the plain rounds too. Ratio: per round, ray_train / plain_torch images/s of that round's
two adjacent runs; the summary gives each side's median and best images/s and the median of the per-round
ratios. Prints a table, writes ``OUT/train.json`` (with the environment block of
:mod:`semcolor.benchmarks._report`).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from semcolor.benchmarks._report import write_result
from semcolor.core import storage
from semcolor.core.decode import decode_pair
from semcolor.data.pairs import load_pairs, split_pairs
from semcolor.data.preprocess import preprocess_batch

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ecssd"
DEFAULT_LIMIT = 96
"""Pairs when --limit is not given: ~77 to train, 2 steps of 2 x 16 per epoch (~10 min on 2 cores at 256 px)."""
EPOCHS = 2
"""Ray Train epochs per round; the last is timed (the first carries warm-up)."""
ROUNDS = 2
"""Rounds of (plain, ray) runs, the order flipping every round."""
WORKERS = 2
ARCH = "unet"


def _pairs(root: Path, limit: int) -> pa.Table:
    """The training split (as fit makes it) of the first ``limit`` pairs under ``root``."""
    if not (root / "images").is_dir():
        raise ValueError(f"no dataset at {root} (needs images/ and masks/); pass --data")
    pairs = load_pairs(str(root / "images"), str(root / "masks"), limit=limit)
    train, _ = split_pairs(pairs, 0.2, seed=0)
    return train


def decode_all(train_pairs: pa.Table, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair decoded at ``size``: (rgb uint8 (N, S, S, 3), mask uint8 (N, S, S)); not timed."""
    samples = [decode_pair(storage.read_bytes(i), storage.read_bytes(m), size)
               for i, m in zip(train_pairs["image"].to_pylist(), train_pairs["mask"].to_pylist())]
    return torch.from_numpy(np.stack([s.rgb for s in samples])), torch.from_numpy(np.stack([s.mask for s in samples]))


def plain_torch(rgb: torch.Tensor, mask: torch.Tensor, size: int, global_batch: int, threads: int) -> dict:
    """One process: a fresh model, one warm-up AdamW step, then one timed epoch of steps."""
    from semcolor.model.config import LossConfig, ModelConfig
    from semcolor.model.losses import multitask_loss
    from semcolor.model.network import build_model

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        config = ModelConfig(arch=ARCH, input_size=size)
        model = build_model(config).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        loss_config = LossConfig()
        steps = len(rgb) // global_batch
        if steps == 0:
            raise ValueError(f"{len(rgb)} pairs < one batch of {global_batch}; raise --limit")
        generator = torch.Generator().manual_seed(0)

        def step(idx: torch.Tensor) -> None:
            b = preprocess_batch(rgb[idx], mask[idx], 2, train=True, generator=generator)
            seg, color_raw = model(b["l"])
            loss, _ = multitask_loss(seg, color_raw, b["target"], b["ab"], loss_config, model.color_head)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

        order = torch.randperm(len(rgb), generator=generator)
        step(order[:global_batch])  # warm-up
        start = time.perf_counter()
        for s in range(steps):
            step(order[s * global_batch:(s + 1) * global_batch])
        seconds = time.perf_counter() - start
        images = steps * global_batch
        return {"method": "plain_torch", "layout": f"1 x {threads}", "batch": global_batch,
                "images_per_epoch": images, "epoch_seconds": seconds, "images_per_s": images / seconds}
    finally:
        torch.set_num_threads(previous)


def ray_train(root: Path, limit: int, size: int, batch: int, threads: int) -> dict:
    """:func:`semcolor.train.driver.fit` with WORKERS workers on the same pairs; figures of its last epoch."""
    from semcolor.train.driver import TrainConfig, fit

    with tempfile.TemporaryDirectory(prefix="semcolor-bench-train-") as runs:
        start = time.perf_counter()
        result = fit(TrainConfig(images=str(root / "images"), masks=str(root / "masks"), limit=limit, arch=ARCH,
                                 size=size, epochs=EPOCHS, batch_size=batch, workers=WORKERS,
                                 cpus_per_worker=max(threads / WORKERS, 0.5), storage=runs,
                                 name=f"bench-{uuid.uuid4().hex[:6]}", keep=1, max_failures=0))
        wall = time.perf_counter() - start
    last = result.history[-1]
    images = result.data_counts["train"] // WORKERS // batch * batch * WORKERS
    return {"method": "ray_train", "layout": f"{WORKERS} x {max(1, round(threads / WORKERS))}",
            "batch": batch * WORKERS, "images_per_epoch": images, "epoch_seconds": last["train_time_s"],
            "images_per_s": last["train_images_per_s"], "fit_wall_seconds": wall,
            "val_seconds_last_epoch": last["val_time_s"]}


def _summary(rows: list[dict], ratios: list[float]) -> dict:
    """Median and best images/s of each method, and the median of the per-round ray / plain ratios."""
    out: dict = {}
    for method in ("plain_torch", "ray_train"):
        rates = [r["images_per_s"] for r in rows if r["method"] == method]
        out[method] = {"median_images_per_s": float(np.median(rates)), "best_images_per_s": max(rates)}
    out["ratio_ray_over_plain_median"] = float(np.median(ratios))
    out["ratio_ray_over_plain_per_round"] = ratios
    return out


def run(args: argparse.Namespace) -> int:
    """Both methods alternately for ROUNDS rounds, a table, and OUT/train.json."""
    from semcolor.ray_env import init_ray

    logging.basicConfig(level=logging.WARNING)
    root = Path(args.data) if args.data else DEFAULT_DATA
    limit = args.limit or DEFAULT_LIMIT
    train_pairs = _pairs(root, limit)
    batch = min(args.batch_size, train_pairs.num_rows // WORKERS)
    if batch < 1:
        raise ValueError(f"{train_pairs.num_rows} training pairs cannot make a batch for {WORKERS} workers; "
                         "raise --limit")
    if batch < args.batch_size:
        print(f"--batch-size lowered to {batch} per worker: one global batch must fit the {train_pairs.num_rows} "
              "training pairs", flush=True)
    global_batch = WORKERS * batch
    print(f"{train_pairs.num_rows} training pairs of {root} at {args.size} px, global batch {global_batch}; "
          f"{ROUNDS} rounds of plain_torch and ray_train, alternating", flush=True)
    rgb, mask = decode_all(train_pairs, args.size)
    init_ray(args.address, args.num_cpus or args.threads)
    methods = {"plain_torch": lambda: plain_torch(rgb, mask, args.size, global_batch, args.threads),
               "ray_train": lambda: ray_train(root, limit, args.size, batch, args.threads)}
    rows: list[dict] = []
    ratios: list[float] = []
    for round_ in range(ROUNDS):
        order = list(methods) if round_ % 2 == 0 else list(methods)[::-1]
        by_method: dict[str, float] = {}
        for method in order:
            load = os.getloadavg()[0]
            row = {"round": round_, **methods[method](), "load_average_before_after": [load, os.getloadavg()[0]]}
            print(f"  round {round_} {method:>11}: {row['images_per_s']:7.2f} images/s "
                  f"(load average {load:.1f} -> {row['load_average_before_after'][1]:.1f})", flush=True)
            rows.append(row)
            by_method[method] = row["images_per_s"]
        ratios.append(by_method["ray_train"] / by_method["plain_torch"])
    summary = _summary(rows, ratios)

    print(f"\ntraining throughput: {ARCH} at {args.size} px, {train_pairs.num_rows} training pairs, global batch "
          f"{global_batch}; timed: plain_torch's epoch after one warm-up step, ray_train's epoch {EPOCHS} of "
          f"{EPOCHS}")
    print(f"{'round':>5} | {'method':>11} | {'workers x threads':>17} | {'epoch s':>8} | {'images/s':>8} | "
          f"{'ray/plain (this round)':>22}")
    for row in rows:
        ratio = f"{ratios[row['round']]:.2f}" if row["method"] == "ray_train" else ""
        print(f"{row['round']:>5} | {row['method']:>11} | {row['layout']:>17} | {row['epoch_seconds']:8.1f} | "
              f"{row['images_per_s']:8.2f} | {ratio:>22}")
    for method in methods:
        s = summary[method]
        print(f"{method}: median {s['median_images_per_s']:.2f} images/s, best {s['best_images_per_s']:.2f}")
    print(f"ray_train / plain_torch, median of the per-round ratios (adjacent runs): "
          f"{summary['ratio_ray_over_plain_median']:.2f}")
    fit_walls = [r["fit_wall_seconds"] for r in rows if r["method"] == "ray_train"]
    print("Ray Train fit() wall time per round, incl. data decode, worker start-up, validation and checkpoints: "
          + ", ".join(f"{w:.0f} s" for w in fit_walls))
    write_result(args.out, "train", {
        "benchmark": "train", "arch": ARCH, "size": args.size, "pairs": train_pairs.num_rows,
        "batch_size_per_worker": batch, "global_batch": global_batch, "ray_epochs": EPOCHS, "rounds": ROUNDS,
        "ratio": "per round: ray_train / plain_torch images/s of that round's two adjacent runs (order flips every "
                 "round); summary: median of those",
        "rows": rows, "summary": summary})
    return 0
