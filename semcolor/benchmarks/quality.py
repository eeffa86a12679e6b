"""`semcolor bench quality`: the quality protocol, one trained model per row, measured the same way.

Protocol (DESIGN "Quality measures"): ECSSD (``--data``, default beside the checkout), split 80/20 by a hash of
each key (seed 0, the split `semcolor train` and `semcolor evaluate --val-fraction` use). Each row trains with
Ray Train on the 80 % for the same fixed amount of work (:data:`EPOCHS` epochs at :data:`SIZE` px, global batch
2 x :data:`BATCH`: 7.5 minutes on an idle 2-core machine, about 30 under heavy load; a fixed amount of work,
not a wall-clock budget, so that a busy machine gives every row the same training), then `semcolor evaluate` measures its best
checkpoint on the 20 % at the photos' full resolution, with the gray baseline (AB = 0) beside it.

Columns: mIoU, pixel accuracy, PSNR, SSIM, colorfulness / truth, PSNR - gray (dB), training minutes.
Prints a table; writes ``OUT/quality.json`` and each row's evaluation grid as ``OUT/quality-ROW-grid.png``.
``--limit N`` keeps the first N pairs (a smoke run; the figures then mean nothing).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semcolor.benchmarks._report import print_table, write_result
from semcolor.core import storage

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ecssd"
SIZE = 96
EPOCHS = 7
BATCH = 16
LR = 2e-3
VAL_FRACTION = 0.2


@dataclass(frozen=True)
class Row:
    """One trained model of the table: a name and the TrainConfig fields it sets beyond the protocol's."""

    name: str
    description: str
    train: dict[str, Any] = field(default_factory=dict)


ROWS: tuple[Row, ...] = (
    Row("regression", "UNet, MSE on AB over all pixels (the first model)", {"color_loss": "mse"}),
)


def run_row(row: Row, images: str, masks: str, out: str, work: str, limit: int | None) -> dict[str, Any]:
    """Train ``row`` under the protocol (run and evaluation under ``work``), evaluate its best checkpoint; the
    row's figures. Its evaluation grid is copied to ``out``."""
    from semcolor.evaluation.job import evaluate
    from semcolor.train.config import TrainConfig
    from semcolor.train.driver import fit

    config = TrainConfig(images=images, masks=masks, arch="unet", size=SIZE, epochs=EPOCHS, batch_size=BATCH,
                         lr=LR, workers=2, val_fraction=VAL_FRACTION, storage=storage.join(work, "runs"),
                         name=f"quality-{row.name}-{time.strftime('%Y%m%d-%H%M%S')}", limit=limit, **row.train)
    started = time.perf_counter()
    result = fit(config)
    train_minutes = (time.perf_counter() - started) / 60.0
    eval_dir = storage.join(work, f"eval-{row.name}")
    m = evaluate(result.best_checkpoint, eval_dir, images=images, masks=masks, val_fraction=VAL_FRACTION,
                 limit=limit)
    grid = storage.join(out, f"quality-{row.name}-grid.png")
    storage.write_bytes(grid, storage.read_bytes(storage.join(eval_dir, "grid.png")))
    gray = m["gray_baseline"]
    return {
        "row": row.name, "miou": m["miou"], "pixel_accuracy": m["pixel_accuracy"], "psnr": m["psnr"],
        "ssim": m["ssim"], "colorfulness_ratio": m["colorfulness_ratio"], "psnr_minus_gray": m["psnr"] - gray["psnr"],
        "train_minutes": train_minutes,
        "detail": {"description": row.description,
                   "train_config": {**config.to_dict(), "storage": "(a temporary folder)"}, "best_epoch": result.best_epoch,
                   "gray_baseline": gray, "counts": m["counts"], "grid": grid},
    }


def run(args: argparse.Namespace) -> int:
    """Every row of :data:`ROWS`; a table and ``OUT/quality.json``."""
    from semcolor.ray_env import init_ray

    root = Path(args.data) if args.data else DEFAULT_DATA
    if not (root / "images").is_dir():
        raise ValueError(f"no dataset at {root} (needs images/ and masks/); pass --data")
    init_ray(args.address, args.num_cpus)
    rows = []
    with tempfile.TemporaryDirectory(prefix="semcolor-quality-") as work:  # runs and evaluations; not kept
        for row in ROWS:
            print(f"[quality] row {row.name}: {row.description}", flush=True)
            rows.append(run_row(row, str(root / "images"), str(root / "masks"), args.out, work, args.limit))
            print_table([{k: v for k, v in r.items() if k != "detail"} for r in rows])
    write_result(args.out, "quality", {
        "protocol": {"data": str(root), "val_fraction": VAL_FRACTION, "size": SIZE, "epochs": EPOCHS,
                     "batch_per_worker": BATCH, "workers": 2, "lr": LR, "limit": args.limit,
                     "evaluation": "full resolution on the validation split; gray baseline = AB 0"},
        "rows": rows,
    })
    return 0
