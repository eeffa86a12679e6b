"""`semcolor bench model`: parameters, GFLOPs per image and CPU forward images/s of both architectures.

Measured: parameter count and GFLOPs per ``--size`` image (counted, not timed), and images/s of eval-mode forward
passes on random input at (batch, 1, size, size), weights=None, ``--threads`` torch threads, batch 1 and 16, for
at least 3 s after one warm-up pass. No ratios: absolute rates on a shared machine move with its load (the JSON
records it). Prints a table, writes ``OUT/model.json`` (with the environment block of
:mod:`semcolor.benchmarks._report`).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from semcolor.benchmarks._report import print_table, write_result
from semcolor.model.config import ARCHS, ModelConfig
from semcolor.model.network import build_model, count_parameters, gflops


def forward_throughput(model: nn.Module, size: int, batch: int, threads: int, seconds: float = 3.0) -> float:
    """Images/s of eval-mode forward passes on CPU at (batch, 1, size, size) with ``threads`` torch threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model.eval()
        x = torch.rand(batch, 1, size, size)
        with torch.inference_mode():
            model(x)  # warm-up
            n, start = 0, time.perf_counter()
            while True:
                model(x)
                n += batch
                elapsed = time.perf_counter() - start
                if elapsed >= seconds and n >= 2 * batch:
                    return n / elapsed
    finally:
        torch.set_num_threads(previous)


def model_info(size: int = 256, threads: int = 2, batches: tuple[int, ...] = (1, 16)) -> list[dict]:
    """Parameters, GFLOPs per image and CPU images/s for both architectures (weights=None)."""
    rows = []
    for arch in ARCHS:
        model = build_model(ModelConfig(arch=arch, input_size=size))
        row = {"arch": arch, "size": size, "params_m": count_parameters(model) / 1e6, "gflops": gflops(model, size)}
        for b in batches:
            row[f"img_per_s_b{b}"] = forward_throughput(model, size, b, threads)
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    """Print the table and write ``OUT/model.json``."""
    rows = model_info(args.size, args.threads)
    print_table(rows)
    write_result(args.out, "model", {"size": args.size, "threads": args.threads, "rows": rows})
    return 0
