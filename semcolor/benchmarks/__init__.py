"""Benchmarks run by `semcolor bench WHAT`: each module has ``run(args) -> int``, prints a table and writes
``OUT/WHAT.json`` (figures + the machine, load, command and date they were measured with)."""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass

from semcolor.model.config import BACKENDS, PRECISIONS
from semcolor.options import option

BENCHMARKS = ("model", "data", "colorize", "train", "serve", "quality", "plan")


@dataclass(kw_only=True)
class BenchOptions:
    """The options of `semcolor bench`; each benchmark reads those it needs."""

    what: str = option(help="which benchmark", choices=BENCHMARKS, positional=True)
    out: str = option("bench_out", help="folder for the JSON results (the committed ones are in docs/benchmarks)")
    data: str | None = option(None, help="dataset root with images/ and masks/ (default: ECSSD in ../shared beside "
                              "the checkout)")
    s3: bool = option(False, help="also measure through a local moto S3 server")
    limit: int | None = option(None, help="use only the first N pairs of the dataset")
    size: int = option(256, help="model resolution in pixels")
    batch_size: int = option(16, help="images per model batch")
    threads: int = option(2, help="torch threads (the machine's share the benchmark may use)")
    backend: str = option("auto", choices=BACKENDS, help="colorize, serve: the inference backend of the model-only "
                          "bound and of the actors / replicas measured (auto = onnxruntime on CPU, as `semcolor "
                          "colorize` and `semcolor serve` run)")
    precision: str = option("auto", choices=PRECISIONS, help="colorize: the torch forward's precision in the bound, "
                            "the naive loop and the actors (`semcolor colorize --precision`); bf16 runs torch, and "
                            "the results go to OUT/colorize-bf16.json")
    device: str = option("cpu", choices=("cpu", "cuda"), help="colorize: where the model runs; cuda: torch with "
                         "bf16 autocast and channels_last in the bound and the naive loop, and one model actor "
                         "with one GPU in the pipeline (its figures are per GPU)")
    photos_data: str | None = option(None, help="quality: the photos without masks of the rows that train with them "
                                     "(default: photos-unlabeled in ../shared beside the checkout)")
    work: str | None = option(None, help="quality: keep the training runs and evaluations in this folder: a rerun "
                              "reuses what is finished there and resumes a run stopped midway (default: a temporary "
                              "folder, removed at the end)")
    rows: str | None = option(None, help="quality: comma-separated names of the trained rows to run (default all); "
                              "plan: some of plan,first_output,rerun; colorize: 'resolution' for the per-resolution "
                              "stage costs alone (OUT/colorize-resolution.json)")


def run_bench(args: argparse.Namespace) -> int:
    """`semcolor bench WHAT`: run ``semcolor.benchmarks.WHAT.run(args)``."""
    module = importlib.import_module(f"semcolor.benchmarks.{args.what}")
    return int(module.run(args) or 0)
