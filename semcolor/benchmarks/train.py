"""`semcolor bench train`: Ray Train's images/s against the model-only bound, and where a step's time goes.

Same pairs (the training split of ``--limit`` pairs of ``--data``, default :data:`DEFAULT_LIMIT` of ECSSD beside
the repo), same model (U-Net, random init), ``--size`` pixels, the same global batch (2 x ``--batch-size``) and the
same ``--threads`` CPUs for every row:

- ``bound``: the model alone in one process (this driver) with ``--threads`` torch threads: forward, loss and
  backward on a batch of random L already in memory (no data, no optimizer, no all-reduce); one warm-up step, then
  the best of :data:`BOUND_ROUNDS` rounds of one step each (:mod:`semcolor.benchmarks._bound`). It is what the CPUs
  can do for the model at that size and batch.
- a worker layout of :data:`LAYOUTS` (``--rows`` picks some): :func:`semcolor.train.driver.fit` as users run it
  (Ray Data pipeline, augmentation, DDP over gloo, AdamW), :data:`EPOCHS` epochs of which the last is timed: the
  loop's images/s (all workers' images over the epoch's wall time) and the loop's own clock of each step's phases
  (:mod:`semcolor.train.step_timing`: data wait, preprocess, forward, backward, exposed all-reduce, optimizer),
  in seconds per step, averaged over the workers.

Ratio: a layout's images/s over the mean of the two bound measurements taken just before and just after it, so
load from elsewhere on a shared machine falls on both. Prints a table, writes ``OUT/train.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from semcolor.benchmarks._bound import best_of, statistic
from semcolor.benchmarks._report import write_result
from semcolor.data.pairs import load_pairs, split_pairs
from semcolor.train.step_timing import PHASES

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ecssd"
DEFAULT_LIMIT = 240
"""Pairs when --limit is not given: ~190 to train, 6 steps of 2 x 16 per timed epoch."""
EPOCHS = 2
"""Ray Train epochs per layout; the last is timed (the first carries warm-up)."""
BOUND_ROUNDS = 3
BOUND_SECONDS = 0.0
"""The model-only bound is the best of BOUND_ROUNDS rounds of one step each (at least BOUND_SECONDS: one step)."""
ARCH = "unet"


@dataclass(frozen=True)
class Layout:
    """A way to spend the CPUs on one node: ``workers`` Ray Train workers sharing ``--threads`` CPUs equally, the
    global batch split between them, and the TrainConfig fields it sets beyond that."""

    name: str
    workers: int
    train: dict[str, Any] = field(default_factory=dict)


LAYOUTS: tuple[Layout, ...] = (
    Layout("2 workers", 2),
    Layout("1 worker", 1),
    Layout("2 workers, channels_last", 2, {"channels_last": True}),
    Layout("2 workers, one 100 MB bucket", 2, {"ddp_bucket_mb": 100.0}),
    Layout("1 worker bf16+channels_last", 1, {"precision": "bf16", "channels_last": True}),
)
"""The last layout trains in bf16 autocast on CPU too (AMX where the CPU has it); its ratio is to the same fp32
bound as every row's, so above 1 it beats what fp32 allows."""


def _training_pairs(root: Path, limit: int) -> int:
    """How many pairs of the first ``limit`` under ``root`` train (the split fit makes)."""
    if not (root / "images").is_dir():
        raise ValueError(f"no dataset at {root} (needs images/ and masks/); pass --data")
    train, _ = split_pairs(load_pairs(str(root / "images"), str(root / "masks"), limit=limit), 0.2, seed=0)
    return train.num_rows


def model_bound(size: int, batch: int, threads: int, rounds: int = BOUND_ROUNDS) -> dict[str, Any]:
    """The model alone with ``threads`` torch threads: forward + loss + backward on ``batch`` random L images
    (B, 1, size, size) already in memory, timed by :func:`semcolor.benchmarks._bound.best_of` (``rounds`` rounds of
    one step) -> its figures: images/s, and the fastest step's seconds of forward (with the loss) and backward."""
    from semcolor.model.config import LossConfig, ModelConfig
    from semcolor.model.losses import multitask_loss
    from semcolor.model.network import build_model

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        model = build_model(ModelConfig(arch=ARCH, input_size=size)).train()
        x = torch.rand(batch, 1, size, size, generator=generator)
        target = torch.randint(0, 2, (batch, size, size), generator=generator)
        ab = torch.rand(batch, 2, size, size, generator=generator) * 80 - 40

        def step() -> dict[str, float]:
            t0 = time.perf_counter()
            seg, raw = model(x)
            loss, _ = multitask_loss(seg, raw, target, ab, LossConfig(), model.color_head)
            t1 = time.perf_counter()
            model.zero_grad(set_to_none=True)
            loss.backward()
            return {"forward": t1 - t0, "backward": time.perf_counter() - t1}

        return best_of(step, batch, rounds, BOUND_SECONDS).as_dict()
    finally:
        torch.set_num_threads(previous)


def ray_train(root: Path, limit: int, size: int, global_batch: int, threads: int, layout: Layout) -> dict[str, Any]:
    """:func:`semcolor.train.driver.fit` in ``layout`` on the pairs; figures of its last epoch."""
    from semcolor.train.driver import TrainConfig, fit

    with tempfile.TemporaryDirectory(prefix="semcolor-bench-train-") as runs:
        start = time.perf_counter()
        result = fit(TrainConfig(images=str(root / "images"), masks=str(root / "masks"), limit=limit, arch=ARCH,
                                 size=size, epochs=EPOCHS, batch_size=global_batch // layout.workers,
                                 workers=layout.workers, cpus_per_worker=threads / layout.workers, storage=runs,
                                 name=f"bench-{uuid.uuid4().hex[:6]}", keep=1, max_failures=0, **layout.train))
        wall = time.perf_counter() - start
    last = result.history[-1]
    return {"images_per_s": last["train_images_per_s"], "epoch_seconds": last["train_time_s"],
            "step_seconds": {phase: last[f"step_{phase}_s"] for phase in (*PHASES, "allreduce_busy")},
            "fit_wall_seconds": wall}


def _print_rows(rows: list[dict[str, Any]]) -> None:
    heads = ["layout", "workers x threads", "images/s", "bound", "ratio", *PHASES]
    print(" | ".join(f"{h:>11}" for h in heads))
    for r in rows:
        steps = r["step_seconds"]
        cells = [r["layout"], r["workers_x_threads"], f"{r['images_per_s']:.2f}", f"{r['bound_images_per_s']:.2f}",
                 f"{r['ratio']:.2f}", *(f"{steps[p]:.3f}" for p in PHASES)]
        print(" | ".join(f"{c:>11}" for c in cells))


def run(args: argparse.Namespace) -> int:
    """Each layout between two bound measurements; a table and ``OUT/train.json``."""
    from semcolor.ray_env import init_ray

    logging.basicConfig(level=logging.WARNING)
    root = Path(args.data) if args.data else DEFAULT_DATA
    limit = args.limit or DEFAULT_LIMIT
    wanted = [r.strip() for r in args.rows.split(",")] if getattr(args, "rows", None) else [x.name for x in LAYOUTS]
    unknown = set(wanted) - {x.name for x in LAYOUTS}
    if unknown:
        raise ValueError(f"unknown layouts {sorted(unknown)}; known: {[x.name for x in LAYOUTS]}")
    global_batch = 2 * args.batch_size
    pairs = _training_pairs(root, limit)
    if pairs < global_batch:
        raise ValueError(f"{pairs} training pairs < one global batch of {global_batch}; raise --limit")
    print(f"{pairs} training pairs of {root} at {args.size} px, global batch {global_batch}, {args.threads} CPUs; "
          f"layouts: {wanted}", flush=True)
    init_ray(args.address, args.num_cpus or args.threads)
    rows: list[dict[str, Any]] = []
    bound = model_bound(args.size, global_batch, args.threads)
    for layout in LAYOUTS:
        if layout.name not in wanted:
            continue
        load = os.getloadavg()[0]
        figures = ray_train(root, limit, args.size, global_batch, args.threads, layout)
        after = model_bound(args.size, global_batch, args.threads)
        bound_rate = (bound["images_per_s"] + after["images_per_s"]) / 2
        threads = max(1, round(args.threads / layout.workers))
        rows.append({"layout": layout.name, "workers_x_threads": f"{layout.workers} x {threads}",
                     "train": layout.train, **figures, "bound_images_per_s": bound_rate,
                     "bound_before_after": [bound, after], "ratio": figures["images_per_s"] / bound_rate,
                     "load_average_before_after": [load, os.getloadavg()[0]]})
        print(f"  {layout.name}: {figures['images_per_s']:.2f} images/s, bound {bound_rate:.2f} "
              f"-> {rows[-1]['ratio']:.2f}", flush=True)
        bound = after
    print(f"\ntraining throughput: {ARCH} at {args.size} px, {pairs} training pairs, global batch {global_batch}, "
          f"{args.threads} CPUs; seconds per step by phase (mean over workers; backward = gradient computation, "
          "allreduce = the all-reduce it could not hide)")
    _print_rows(rows)
    best = max(rows, key=lambda r: r["images_per_s"])
    print(f"fastest: {best['layout']} at {best['ratio']:.2f} of the model-only bound", flush=True)
    write_result(args.out, "train", {
        "benchmark": "train", "arch": ARCH, "size": args.size, "pairs": pairs, "global_batch": global_batch,
        "threads": args.threads, "ray_epochs": EPOCHS, "bound_statistic": statistic(BOUND_ROUNDS, BOUND_SECONDS),
        "ratio": "a layout's images/s (its last epoch) / the mean of the model-only bound measured just before and "
                 "just after it (forward + loss + backward, same size, global batch and threads)",
        "rows": rows, "fastest": best["layout"]})
    return 0
