"""`semcolor bench model`: parameters, GFLOPs per image and CPU forward images/s of both architectures, with the
segmentation head at each stride (1/4 as the color head, 1/2, full resolution).

Measured: parameter count and GFLOPs per ``--size`` image (counted, not timed), and images/s of eval-mode forward
passes on random input at (batch, 1, size, size), weights=None, ``--threads`` torch threads, batch 1 and 16. Every
rate is a model-only bound (:mod:`semcolor.benchmarks._bound`): the best of :data:`ROUNDS` rounds of at least
:data:`FORWARD_SECONDS` s (forward passes) or :data:`BACKEND_SECONDS` s (backends) each, after one warm-up call.
Absolute rates on a shared machine move with its load (the JSON records it).

``backends``: the unet's model-only images/s through :meth:`Colorizer.predict` (uint8 L in, int8 AB + mask out:
the call the bulk actors and the Serve replica make) with each inference backend (torch; onnxruntime on the
verified export), at ``--threads`` threads and at 1 thread (the bulk job's actors on a small machine), batch 1 and
16; the backends alternate per cell and ``onnxruntime_over_torch`` is the ratio within the cell, the figure the CPU
default follows. ``torch_bf16``: torch in bf16 autocast and channels_last (``--precision bf16`` of colorize and
serve: the CUDA branch, on CPU; fast where the CPU has bf16 units: AMX, AVX-512 BF16), with
``torch_bf16_over_onnxruntime`` in the cell.
Prints tables, writes ``OUT/model.json`` (with the environment block of :mod:`semcolor.benchmarks._report`).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from semcolor.benchmarks._bound import best_of, predict_bound, statistic
from semcolor.benchmarks._report import print_table, write_result
from semcolor.model.config import ARCHS, SEG_STRIDES, ModelConfig
from semcolor.model.network import build_model, count_parameters, gflops

ROUNDS = 3
FORWARD_SECONDS = 1.0
BACKEND_SECONDS = 2.0
"""A rate is the best of ROUNDS rounds of at least FORWARD_SECONDS (forward passes) or BACKEND_SECONDS (the
backends' ``Colorizer.predict``) each."""


def forward_throughput(model: nn.Module, size: int, batch: int, threads: int, seconds: float = FORWARD_SECONDS
                       ) -> float:
    """Images/s of eval-mode forward passes on CPU at (batch, 1, size, size) with ``threads`` torch threads: the
    best of :data:`ROUNDS` rounds of at least ``seconds``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model.eval()
        x = torch.rand(batch, 1, size, size)

        def forward() -> None:
            model(x)

        with torch.inference_mode():
            return best_of(forward, batch, ROUNDS, seconds).images_per_s
    finally:
        torch.set_num_threads(previous)


def model_info(size: int = 256, threads: int = 2, batches: tuple[int, ...] = (1, 16)) -> list[dict]:
    """Parameters, GFLOPs per image and CPU images/s for both architectures, each segmentation stride with the
    shared decoder and the full-resolution mask with its own decoder (weights=None)."""
    rows = []
    layouts = [(seg_stride, "shared") for seg_stride in SEG_STRIDES] + [(1, "own")]
    for arch in ARCHS:
        for seg_stride, seg_decoder in layouts:
            model = build_model(ModelConfig(arch=arch, input_size=size, seg_stride=seg_stride,
                                            seg_decoder=seg_decoder))
            row = {"arch": arch, "seg_stride": seg_stride, "seg_decoder": seg_decoder, "size": size,
                   "params_m": count_parameters(model) / 1e6, "gflops": gflops(model, size)}
            for b in batches:
                row[f"img_per_s_b{b}"] = forward_throughput(model, size, b, threads)
            rows.append(row)
    return rows


def backend_rows(size: int = 256, threads: int = 2, batches: tuple[int, ...] = (1, 16),
                 seconds: float = BACKEND_SECONDS) -> list[dict]:
    """Model-only images/s of the unet by backend, per (threads, batch) cell, the backends measured back to back."""
    import tempfile

    from semcolor.model import checkpoint
    from semcolor.model.config import ENGINES
    from semcolor.model.inference import load_colorizer

    previous = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory(prefix="semcolor-bench-model-") as work:
        torch.manual_seed(0)
        config = ModelConfig(arch="unet", input_size=size)
        ckpt = checkpoint.save(build_model(config), config, f"{work}/unet")
        try:
            for t in sorted({threads, 1}, reverse=True):
                torch.set_num_threads(t)
                colorizers = {b: load_colorizer(ckpt, device="cpu", size=size, backend=b, threads=t)
                              for b in ENGINES}
                colorizers["torch_bf16"] = load_colorizer(ckpt, device="cpu", size=size, backend="torch",
                                                          precision="bf16")  # channels_last with it
                for batch in batches:
                    row: dict = {"threads": t, "batch": batch}
                    for backend, colorizer in colorizers.items():
                        row[f"{backend}_img_per_s"] = predict_bound(colorizer, batch, ROUNDS, seconds).images_per_s
                    row["onnxruntime_over_torch"] = row["onnxruntime_img_per_s"] / row["torch_img_per_s"]
                    row["torch_bf16_over_onnxruntime"] = row["torch_bf16_img_per_s"] / row["onnxruntime_img_per_s"]
                    rows.append(row)
        finally:
            torch.set_num_threads(previous)
    return rows


def run(args: argparse.Namespace) -> int:
    """Print the tables and write ``OUT/model.json``."""
    rows = model_info(args.size, args.threads)
    print_table(rows)
    backends = backend_rows(args.size, args.threads)
    print_table(backends)
    write_result(args.out, "model", {"size": args.size, "threads": args.threads,
                                     "bound_statistic": {"rows": statistic(ROUNDS, FORWARD_SECONDS),
                                                         "backends": statistic(ROUNDS, BACKEND_SECONDS)},
                                     "rows": rows, "backends": backends})
    return 0
