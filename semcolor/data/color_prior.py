"""The empirical AB prior of a training set, counted by a distributed Ray Data pass.

Each ``map_batches`` task converts its rows' RGB to LAB and counts the pixels per AB bin; the driver only sums the
per-batch histograms (Q numbers each). The counts become the bins head's prior (smoothed, saved in the checkpoint)
and its class-rebalancing weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from semcolor.core import color
from semcolor.core import ab_grid

if TYPE_CHECKING:
    import ray.data

HIST_BATCH = 64


def batch_ab_histogram(batch: dict[str, np.ndarray], bins: np.ndarray, grid: float = ab_grid.GRID
                       ) -> dict[str, np.ndarray]:
    """Ray Data UDF: ``rgb`` uint8 (N, H, W, 3) -> ``counts`` int64 (1, Q): pixels per bin (cell of ``bins``)."""
    rgb = torch.from_numpy(np.array(batch["rgb"]))  # a writable copy: torch warns on read-only arrays
    ab = color.rgb_to_lab(color.uint8_to_float(rgb))[:, 1:].permute(0, 2, 3, 1).reshape(-1, 2)
    centres = torch.as_tensor(np.array(bins))  # a writable copy of the read-only argument
    idx = ab_grid.quantize(ab, centres, grid)
    return {"counts": np.bincount(idx.numpy(), minlength=len(bins)).astype(np.int64)[None]}


def ab_counts(ds: "ray.data.Dataset", bins: torch.Tensor, grid: float = ab_grid.GRID) -> np.ndarray:
    """int64 (Q,): pixels of the dataset's ``rgb`` column per AB bin, counted in Ray tasks, summed here."""
    per_batch = ds.select_columns(["rgb"]).map_batches(
        batch_ab_histogram, fn_kwargs={"bins": bins.numpy(), "grid": grid}, batch_size=HIST_BATCH,
        batch_format="numpy")
    total = np.zeros(len(bins), dtype=np.int64)
    for batch in per_batch.iter_batches(batch_size=None, batch_format="numpy"):
        total += batch["counts"].sum(axis=0)
    return total
