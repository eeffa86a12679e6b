"""`fit(TrainConfig) -> TrainResult` on Ray Train (TorchTrainer, Train v2) and the `semcolor train` command.

The driver lists and decodes the pairs once (Ray Data, materialized in the object store at training size),
splits them by a hash of each key, and hands ``train`` (split across workers, equal shards) and ``val`` (every
worker iterates it and evaluates its own share of batches) to the trainer; the loop itself is in
:mod:`semcolor.train.loop`. The run directory ``STORAGE/NAME`` (local or s3://) holds Ray Train's checkpoints
and, at the end:

- ``best/``: the best checkpoint by validation mIoU as a model directory (config.json + model.safetensors);
- ``metrics.jsonl``: one JSON line per epoch; ``curves.png``: losses, mIoU and PSNR per epoch;
- ``data_report.json``: pair counts and every skipped file with its reason;
- ``ab_prior.json`` (bins head): the training split's pixel counts per AB bin and the smoothed prior.

Rerunning with the same name resumes from the run's latest checkpoint (Ray Train restores it by name).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from semcolor.core import storage
from semcolor.model.metrics import json_safe
from semcolor.options import config_from_args
from semcolor.ray_env import (
    init_ray,
    require_cuda_where_gpus,
    require_shared_paths,
    storage_env,
)
from semcolor.train.config import TrainConfig
from semcolor.train.loop import STATE_NAME, train_loop_per_worker
from semcolor.train.preflight import require_room, start_errors, start_retries

__all__ = ["TrainConfig", "TrainResult", "fit", "run_train"]

log = logging.getLogger(__name__)

SYNTH_DIR = "synth_data"
BEST_DIR = "best"
SCORE_METRIC = "val_miou"


@dataclass
class TrainResult:
    """What a run left behind. URLs are in the storage's form (local paths or s3://...)."""

    name: str
    run_dir: str
    best_checkpoint: str
    """Model directory (config.json + model.safetensors) of the best epoch by validation mIoU: RUN_DIR/best."""
    best_epoch: int
    best_metrics: dict[str, Any]
    latest_checkpoint: str
    """Ray Train's latest checkpoint directory (also a model directory; holds the training state too)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """One metrics dict per epoch (what ``metrics.jsonl`` holds)."""
    data_counts: dict[str, int] = field(default_factory=dict)
    summary: str = ""


def _run_dir(config: TrainConfig, name: str) -> str:
    base = config.storage
    if storage.is_local(base):
        base = storage.resolve(base)[1]  # absolute: Ray Train workers run in their own working directories
    return storage.join(base, name)


def _storage_for_ray(config: TrainConfig) -> tuple[str, Any]:
    """RunConfig's (storage_path, storage_filesystem): an absolute local path, or a pyarrow filesystem + path."""
    fs, path = storage.resolve(config.storage)
    if storage.is_local(config.storage):
        return path, None
    return path, fs  # s3:// (with the endpoint semcolor.core.storage resolves) or any fsspec scheme


def _data_source(config: TrainConfig, run_dir: str) -> tuple[str | None, str | None, str | None]:
    """(images, masks, manifest) to read; synthesizes ``synth_n`` pairs into the run directory when none is given."""
    if config.has_data:
        return config.images, config.masks, config.manifest
    from semcolor.data.synth import write_synth

    root = storage.join(run_dir, SYNTH_DIR)
    banner = "#" * 100
    if storage.exists(storage.join(root, "masks")):
        log.warning("\n%s\n# NO DATA GIVEN (--images/--masks or --manifest): training on the SYNTHETIC pairs already "
                    "in %s\n%s", banner, root, banner)
    else:
        log.warning("\n%s\n# NO DATA GIVEN (--images/--masks or --manifest): GENERATING %d SYNTHETIC pairs at %d px "
                    "into %s and training on them\n%s", banner, config.synth_n, config.size, root, banner)
        write_synth(root, config.synth_n, config.size, seed=config.seed, n_classes=config.n_classes)
    return storage.join(root, "images"), storage.join(root, "masks"), None


def _datasets(config: TrainConfig, run_dir: str) -> tuple[dict[str, Any], dict[str, int]]:
    """Materialized Ray datasets ``train`` and ``val`` (columns rgb, mask) and, with --photos, ``photos`` (column
    rgb), and data counts; writes data_report.json."""
    from semcolor.data.pairs import load_pairs, split_for_training
    from semcolor.data.pipeline import load_dataset, load_photo_dataset

    images, masks, manifest = _data_source(config, run_dir)
    pairs = load_pairs(images, masks, manifest, limit=config.limit)
    if pairs.num_rows == 0:
        raise ValueError(f"no image/mask pairs in images={images} masks={masks} manifest={manifest}")
    # --train-pairs (e.g. pseudo-labels) join the training side only; listed before any decoding, as the photos
    train_pairs, val_pairs, train_only = split_for_training(pairs, config.val_fraction, config.train_pairs,
                                                              seed=config.seed)
    if train_pairs.num_rows == 0 or val_pairs.num_rows == 0:
        raise ValueError(f"the split of {pairs.num_rows} pairs at val_fraction={config.val_fraction} left "
                         f"{train_pairs.num_rows} to train and {val_pairs.num_rows} to validate; use more pairs")
    photos = None
    if config.photos:  # listed before any decoding: a bad --photos URL ends the run here, in one line
        import numpy as np

        from semcolor.data.photos import load_photos

        photos = load_photos(config.photos)
        # in a seeded random order: a run that sees part of a large set sees all of its folders, not the first ones
        photos = photos.take(np.random.default_rng(config.seed).permutation(photos.num_rows))
    train_ds, train_report = load_dataset(train_pairs, config.size)
    # In key order: every worker (and a single process) sees the same batches in the same order.
    val_ds, val_report = load_dataset(val_pairs.sort_by("key"), config.size, preserve_order=True)
    datasets = {"train": train_ds.select_columns(["rgb", "mask"]).materialize(),
                "val": val_ds.select_columns(["rgb", "mask"]).materialize()}
    errors = train_report.errors + val_report.errors
    counts = {"pairs": pairs.num_rows, "train_only_pairs": train_only, "train": train_report.rows,
              "val": val_report.rows,
              "skipped": len(errors), "mask_resized": train_report.mask_resized + val_report.mask_resized}
    if photos is not None:
        photos_ds, photos_report = load_photo_dataset(photos, config.size)
        datasets["photos"] = photos_ds.select_columns(["rgb"]).materialize()
        errors += photos_report.errors
        counts.update(photos=photos_report.rows, skipped=len(errors))
    for ds in datasets.values():  # epochs print one line each (the loop's); no bar per worker and iteration
        ds.context.enable_progress_bars = False
    report = {"counts": counts, "errors": errors,
              "source": {"images": images, "masks": masks, "manifest": manifest, "train_pairs": config.train_pairs,
                         "photos": config.photos}}
    storage.write_text(storage.join(run_dir, "data_report.json"), json.dumps(report, indent=1))
    log.info("data: %s", counts)
    return datasets, counts


def _ab_prior(config: TrainConfig, datasets: dict[str, Any], run_dir: str) -> list[float] | None:
    """The smoothed AB prior (Q,) of the training split and the photos without masks over the bins head's in-gamut
    bins (None for the regression head).

    Counted by a Ray Data pass over the decoded training rows (at training size); the counts are written to
    ``RUN_DIR/ab_prior.json``. A resumed run restores its prior from its checkpoint and does not use this one.
    """
    if config.color_head != "bins":
        return None
    import torch

    from semcolor.core import ab_grid
    from semcolor.data.color_prior import ab_counts
    from semcolor.model import color_bins

    start = time.perf_counter()
    bins = ab_grid.gamut_bins()
    counts = sum(ab_counts(datasets[name], bins) for name in ("train", "photos") if name in datasets)
    prior = color_bins.smooth_prior(torch.from_numpy(counts), bins)
    storage.write_text(storage.join(run_dir, "ab_prior.json"), json.dumps(
        {"grid": ab_grid.GRID, "bins": bins.tolist(), "counts": counts.tolist(), "prior": prior.tolist()}))
    log.info("AB prior: %d pixels over %d bins (%d empty before smoothing) in %.1f s", int(counts.sum()), len(bins),
             int((counts == 0).sum()), time.perf_counter() - start)
    return prior.float().tolist()


def _scaling(config: TrainConfig, resources: dict[str, float]):
    """Ray Train's ScalingConfig: a fixed group of N workers, or an elastic (MIN, MAX) one."""
    from ray.train import ScalingConfig

    low, high = config.worker_range
    use_gpu = config.gpus_per_worker > 0
    if low == high:
        return ScalingConfig(num_workers=high, use_gpu=use_gpu, resources_per_worker=resources)
    return ScalingConfig(num_workers=(low, high), use_gpu=use_gpu, resources_per_worker=resources,
                         elastic_resize_monitor_interval_s=config.resize_interval)


def _trainer(config: TrainConfig, name: str, run_dir: str, datasets: dict[str, Any], train_rows: int,
             deadline: float | None, train_loop: Callable[[dict[str, Any]], None],
             ab_prior: list[float] | None = None):
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
    )
    from ray.train.torch import TorchTrainer

    split = [name for name in ("train", "photos") if name in datasets]  # every worker validates on all of val
    storage_path, filesystem = _storage_for_ray(config)
    env = storage_env([config.storage, config.images, config.masks, config.manifest])
    resources = {"CPU": config.cpus_per_worker}
    if config.gpus_per_worker > 0:
        resources["GPU"] = config.gpus_per_worker
    return TorchTrainer(
        train_loop,
        train_loop_config={"train": config.to_dict(), "train_rows": train_rows, "run_dir": run_dir,
                           "deadline": deadline, "ab_prior": ab_prior},
        scaling_config=_scaling(config, resources),
        run_config=RunConfig(
            name=name, storage_path=storage_path, storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=config.max_failures,
                                         controller_failure_limit=start_retries(config)),  # not forever
            logging_config=LoggingConfig(log_level="WARNING"),  # Ray Train's own INFO lines; the loop's still print
            worker_runtime_env={"env_vars": env} if env else None,
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep, checkpoint_score_attribute=SCORE_METRIC,
                                               checkpoint_score_order="max"),
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=split),
    )


def _checkpoint_url(run_dir: str, checkpoint) -> str:
    """A Ray Train checkpoint (path on the storage filesystem) -> URL under the run directory."""
    return storage.join(run_dir, posixpath.basename(checkpoint.path.rstrip("/")))


def _score(metrics: dict[str, Any]) -> float:
    v = metrics.get(SCORE_METRIC)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf


def _copy_model_dir(src: str, dst: str) -> None:
    """Copy model.safetensors then config.json (a model directory is complete once its config.json exists).

    Local: read + atomic write. Object stores: a server-side copy (S3 CopyObject), nothing passes through here.
    """
    from semcolor.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME

    for name in (WEIGHTS_NAME, CONFIG_NAME):
        src_url, dst_url = storage.join(src, name), storage.join(dst, name)
        if storage.is_local(src_url) or storage.scheme_of(src_url) != storage.scheme_of(dst_url):
            storage.write_bytes(dst_url, storage.read_bytes(src_url))
        else:
            fs, src_path = storage.resolve(src_url)
            fs.copy_file(src_path, storage.resolve(dst_url)[1])


def _finish(result, config: TrainConfig, name: str, run_dir: str, counts: dict[str, int]) -> TrainResult:
    """Best checkpoint as RUN_DIR/best, metrics.jsonl, curves.png, and the summary line."""
    from semcolor.train.curves import plot_curves

    if result.checkpoint is None:
        raise RuntimeError(f"run {name} ended without any checkpoint in {run_dir}")
    latest = _checkpoint_url(run_dir, result.checkpoint)
    history = json.loads(storage.read_text(storage.join(latest, STATE_NAME)))["history"]
    candidates = [(ckpt, m) for ckpt, m in (result.best_checkpoints or [])] or [(result.checkpoint, history[-1])]
    best_ckpt, best_metrics = max(candidates, key=lambda cm: _score(cm[1]))
    best_src = _checkpoint_url(run_dir, best_ckpt)
    best_dst = storage.join(run_dir, BEST_DIR)
    _copy_model_dir(best_src, best_dst)
    lines = "".join(json.dumps(json_safe(h)) + "\n" for h in history)
    storage.write_text(storage.join(run_dir, "metrics.jsonl"), lines)
    storage.write_bytes(storage.join(run_dir, "curves.png"),
                        plot_curves(history, title=f"{name}: {config.arch} at {config.size} px, {config.workers} "
                                                   f"workers"))
    m = best_metrics
    summary = (f"semcolor train {name}: best checkpoint {best_dst} (epoch {m['epoch']} of {len(history)} done; "
               f"copied from {best_src}): val mIoU {m['val_miou']:.3f}, pixel acc {m['val_pixel_accuracy']:.3f}, "
               f"PSNR {m['val_psnr']:.2f} dB (gray {m['val_gray_psnr']:.2f}), SSIM {m['val_ssim']:.3f} "
               f"(gray {m['val_gray_ssim']:.3f}), colorfulness {m['val_colorfulness_ratio']:.2f} of truth; "
               f"metrics {storage.join(run_dir, 'metrics.jsonl')}, curves {storage.join(run_dir, 'curves.png')}")
    return TrainResult(name=name, run_dir=run_dir, best_checkpoint=best_dst, best_epoch=int(m["epoch"]),
                       best_metrics=dict(m), latest_checkpoint=latest, history=history, data_counts=counts,
                       summary=summary)


def fit(config: TrainConfig, train_loop: Callable[[dict[str, Any]], None] = train_loop_per_worker) -> TrainResult:
    """Train (or resume) the run ``config.storage/config.name`` on the connected Ray cluster (ray.init first,
    or a local Ray starts). Returns where the best checkpoint is and the per-epoch history.

    ``train_loop``: the per-worker function (default :func:`semcolor.train.loop.train_loop_per_worker`); tests
    wrap it to kill a worker mid-run.
    """
    name = config.name or f"{config.arch}-{config.size}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = _run_dir(config, name)
    if config.init:  # a missing or foreign --init ends the run here, in one line, before any data is decoded
        from semcolor.model.checkpoint import load_config

        load_config(config.init)
    storage.makedirs(run_dir)
    log.info("run %s in %s (rerun with --name %s to resume)", name, run_dir, name)
    datasets, counts = _datasets(config, run_dir)
    most = config.worker_range[1]
    for what, rows, batch in (("training pairs", counts["train"], config.pair_batch),
                              ("photos without masks", counts.get("photos", 0), config.photo_batch)):
        if batch and rows // most < batch:
            raise ValueError(f"{rows} {what} over {most} workers is {rows // most} per worker, less than the "
                             f"{batch} of them each batch holds; lower --batch-size or --workers"
                             + (" or change --photos-share" if config.photos else ""))
    ab_prior = _ab_prior(config, datasets, run_dir)
    # The budget counts training time: it starts once the data is decoded, as the trainer starts.
    deadline = time.time() + 60.0 * config.time_budget if config.time_budget else None
    trainer = _trainer(config, name, run_dir, datasets, counts["train"], deadline, train_loop, ab_prior)
    with start_errors(config):  # Ray Train giving up on starting the workers: one line
        result = trainer.fit()
    out = _finish(result, config, name, run_dir, counts)
    log.info("%s", out.summary)
    return out


def run_train(args: argparse.Namespace) -> int:
    """`semcolor train ...`: fit, then print the one summary line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(TrainConfig, args)
    init_ray(args.address, args.num_cpus)
    require_shared_paths({"--images": config.images, "--masks": config.masks, "--manifest": config.manifest,
                          "--storage": config.storage, "--init": config.init, **{f"--photos ({i + 1})": url for i, url in enumerate(config.photos or [])}},
                         args.shared_path)
    require_room(config)  # before any data: refuse what never fits, wait (bounded) for what could
    require_cuda_where_gpus("--gpus-per-worker", config.gpus_per_worker)
    result = fit(config)
    print(result.summary, flush=True)
    return 0
