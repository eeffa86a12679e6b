"""The `semcolor` command: one argparse tree for every subcommand.

Each subcommand's handler lives beside the capability it fronts and is imported lazily,
so `semcolor --help` stays fast and the job entrypoints in `jobs/` reuse this same tree.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from semcolor import __version__

# subcommand -> "module:function"; each function takes the parsed argparse.Namespace and returns an exit code.
HANDLERS: dict[str, str] = {
    "synth": "semcolor.synth:run_synth",
    "manifest": "semcolor.data:run_manifest",
    "train": "semcolor.train:run_train",
    "evaluate": "semcolor.evaluate:run_evaluate",
    "colorize": "semcolor.infer:run_colorize",
    "serve": "semcolor.serve:run_serve",
    "demo": "semcolor.demo:run_demo",
    "bench": "semcolor.bench:run_bench",
    "info": "semcolor.model:run_info",
}


def _add_data_source(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--images", help="URL of the images prefix (local path, file://, s3://, any fsspec URL)")
    p.add_argument("--masks", help="URL of the masks prefix, paired with --images by relative key")
    p.add_argument("--manifest", help="URL of a Parquet/CSV manifest with columns image, mask (instead of --images/--masks)")


def _add_ray(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a new local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a new local Ray (default: all)")


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; `jobs/*.py` parse their argv with this same parser."""
    parser = argparse.ArgumentParser(
        prog="semcolor",
        description="Colorize grayscale scans and segment their foreground with one dual-head network, on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"semcolor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("synth", help="write synthetic image/mask pairs: DST/images/<key>.png, DST/masks/<key>.png")
    p.add_argument("dst", help="destination URL")
    p.add_argument("--n", type=int, default=64, help="number of pairs")
    p.add_argument("--size", type=int, default=128, help="side of each square image, pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-classes", type=int, default=2, help="2: binary masks (0/255); >2: class-id masks")

    p = sub.add_parser("manifest", help="list and pair images with masks once, write a Parquet manifest")
    p.add_argument("--images", required=True, help="URL of the images prefix")
    p.add_argument("--masks", required=True, help="URL of the masks prefix")
    p.add_argument("--out", required=True, help="URL of the manifest to write (.parquet)")

    p = sub.add_parser("train", help="train SegColorNet with Ray Train (DDP)")
    _add_data_source(p)
    p.add_argument("--arch", choices=["resnet34", "unet"], default="unet")
    p.add_argument("--n-classes", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16, help="per worker")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--size", type=int, default=128, help="training resolution, pixels (square)")
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers")
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--storage", default="runs", help="run storage URL (local path or s3://)")
    p.add_argument("--name", default=None, help="run name; rerunning with the same name resumes")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seg-weight", type=float, default=1.0)
    p.add_argument("--color-weight", type=float, default=1.0)
    p.add_argument("--color-mask", choices=["all", "foreground"], default="all")
    p.add_argument("--color-loss", choices=["mse", "l1", "huber"], default="mse")
    p.add_argument("--pretrained", default=None, help="'imagenet' or a local weights file (default: random init)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-failures", type=int, default=2, help="worker failures to recover from")
    p.add_argument("--keep", type=int, default=2, help="checkpoints to keep (best by validation mIoU)")
    p.add_argument("--synth-n", type=int, default=64, help="pairs to synthesize when no data is given")
    p.add_argument("--limit", type=int, default=None, help="use only the first N pairs")
    p.add_argument("--time-budget", type=float, default=None, help="stop after this many minutes (ends the epoch)")
    _add_ray(p)

    p = sub.add_parser("evaluate", help="metrics.json and grid.png of a checkpoint on image/mask pairs")
    p.add_argument("--checkpoint", required=True, help="model directory URL (config.json + model.safetensors)")
    _add_data_source(p)
    p.add_argument("--out", required=True, help="output directory URL")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--size", type=int, default=None, help="model resolution (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--val-fraction", type=float, default=None,
                   help="evaluate only the validation split of this fraction (same hash split as train)")
    p.add_argument("--grid-rows", type=int, default=8)
    _add_ray(p)

    p = sub.add_parser("colorize", help="colorize an archive in bulk with Ray Data, resumable")
    p.add_argument("src", help="source URL (prefix of images, or a manifest .parquet/.csv)")
    p.add_argument("dst", help="destination URL")
    p.add_argument("--checkpoint", required=True, help="model directory URL")
    p.add_argument("--size", type=int, default=None, help="model resolution (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--actors", default="1", help="model actors (or MIN:MAX for autoscaling)")
    p.add_argument("--gpus-per-actor", type=float, default=0.0)
    p.add_argument("--format", choices=["png", "jpg", "webp"], default="png")
    p.add_argument("--quality", type=int, default=90, help="jpg/webp quality")
    p.add_argument("--masks", action="store_true", help="also write DST/masks/<key>.png")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--max-pixels", type=int, default=100_000_000, help="larger sources are recorded as errors")
    p.add_argument("--threads-per-actor", type=int, default=None,
                   help="torch threads per CPU model actor (default: this machine's cores / actors; on CPU, "
                        "N one-thread actors beat one N-thread actor)")
    _add_ray(p)

    p = sub.add_parser("serve", help="serve the model over HTTP with Ray Serve")
    p.add_argument("--checkpoint", required=True, help="model directory URL")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--replicas", default="1", help="replicas: N, or MIN:MAX to autoscale")
    p.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs (and torch threads) per replica")
    p.add_argument("--gpus-per-replica", type=float, default=0.0)
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--batch-wait-timeout", type=float, default=0.01, help="seconds")
    p.add_argument("--size", type=int, default=None, help="model resolution (default: the checkpoint's)")
    p.add_argument("--max-body-mb", type=float, default=25.0)
    p.add_argument("--max-pixels", type=int, default=50_000_000)
    p.add_argument("--blocking", action=argparse.BooleanOptionalAction, default=True,
                   help="keep running until interrupted")
    _add_ray(p)

    p = sub.add_parser("demo", help="synth data, train briefly, colorize sample photos, write a contact sheet")
    p.add_argument("--out", default="demo_out", help="output folder")
    p.add_argument("--fast", action="store_true", help="smallest settings (used by the test suite)")
    _add_ray(p)

    p = sub.add_parser("bench", help="benchmarks: print a table, write JSON")
    p.add_argument("what", choices=["model", "data", "colorize", "train", "serve"])
    p.add_argument("--out", default="bench_out", help="folder for the JSON results")
    p.add_argument("--data", default=None, help="dataset root with images/ and masks/ (default: ECSSD beside the repo)")
    p.add_argument("--s3", action="store_true", help="also measure through a local moto S3 server")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    _add_ray(p)

    p = sub.add_parser("info", help="parameters, GFLOPs and CPU throughput of both architectures")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `semcolor` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module_name, func_name = HANDLERS[args.command].split(":")
    handler = getattr(importlib.import_module(module_name), func_name)
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
