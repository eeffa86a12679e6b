"""`evaluate(checkpoint, pairs...) -> metrics`: a checkpoint measured on image/mask pairs at the sources' resolution,
distributed over Ray Data, and the `semcolor evaluate` command.

Protocol (DESIGN "Quality measures"): each source is decoded at full resolution; its lightness, resized to the
model's size, goes through the network (:class:`semcolor.core.colorizer.Colorizer`, the one inference core); the
predicted AB is upsampled and merged with the source's own full-resolution L, and that RGB uint8 is compared with
the source (PSNR peak 255, SSIM data_range 255, colorfulness), per image, then averaged. The gray baseline
(AB = 0 with the same L) is measured beside it. Grayscale sources are left out of the color metrics and counted.
Segmentation: the predicted mask, upsampled to full resolution, against the true mask; one confusion matrix over
all pixels (pixel accuracy, per-class IoU, mIoU), and the boundary IoU of the foreground (contour bands of
:data:`semcolor.model.metrics.BOUNDARY_TOLERANCE_PX` pixels at full resolution, summed over images).

Pipeline: pairs -> read + decode (Ray tasks, bad files recorded, never raised) -> an actor pool that loads the
checkpoint once per actor and turns each batch into partial accumulators (a confusion matrix and two color sums)
-> summed on the driver. Writes ``OUT/metrics.json`` and ``OUT/grid.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from typing import Any

import numpy as np

from semcolor.core import storage
from semcolor.core.decode import (
    DEFAULT_MAX_PIXELS,
    ERROR,
    OK,
    READ_ERROR,
    DataError,
    Sample,
    decode_pair,
)
from semcolor.core.figures import figure_png
from semcolor.core.flip_average import DEFAULT_TTA
from semcolor.core.refine import DEFAULT_REFINE
from semcolor.evaluation.config import EvaluateConfig
from semcolor.model.metrics import BoundaryAccumulator, ColorAccumulator, SegmentationAccumulator, json_safe
from semcolor.options import config_from_args
from semcolor.ray_env import storage_env

log = logging.getLogger(__name__)


def read_pair(key: str, image_url: str, mask_url: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Sample:
    """Read and decode one pair at the image's full resolution (a mask of another size is resized to it and
    flagged). Raises DataError (bad file) or OSError (unreadable)."""
    return decode_pair(storage.read_bytes(image_url), storage.read_bytes(mask_url), None, max_pixels, key)


def decode_full_resolution(batch: dict[str, np.ndarray], max_pixels: int = DEFAULT_MAX_PIXELS
                           ) -> dict[str, np.ndarray]:
    """Ray Data UDF: pairs (``key``, ``image``, ``mask`` URLs) -> full-resolution rows, one per pair.

    Out: ``key``; ``rgb`` object array of uint8 (H, W, 3); ``mask`` object array of uint8 (H, W);
    ``status``, ``kind``, ``reason`` str; ``mask_resized`` bool. Bad rows hold 1x1 zeros.
    """
    keys, rgbs, masks, status, kinds, reasons, resized = [], [], [], [], [], [], []
    for key, image_url, mask_url in zip(batch["key"], batch["image"], batch["mask"]):
        key = str(key)
        sample, kind, reason = None, "", ""
        try:
            sample = read_pair(key, str(image_url), str(mask_url), max_pixels)
        except DataError as exc:
            kind, reason = exc.kind, exc.reason
        except OSError as exc:
            kind, reason = READ_ERROR, f"{type(exc).__name__}: {exc}"
        keys.append(key)
        status.append(OK if sample is not None else ERROR)
        rgbs.append(sample.rgb if sample is not None else np.zeros((1, 1, 3), np.uint8))
        masks.append(sample.mask if sample is not None else np.zeros((1, 1), np.uint8))
        kinds.append(kind)
        reasons.append(reason)
        resized.append(sample is not None and sample.mask_resized)
    rgb_col = np.empty(len(rgbs), dtype=object)
    mask_col = np.empty(len(masks), dtype=object)
    rgb_col[:], mask_col[:] = rgbs, masks
    return {"key": np.array(keys, dtype=object), "rgb": rgb_col, "mask": mask_col,
            "status": np.array(status, dtype=object), "kind": np.array(kinds, dtype=object),
            "reason": np.array(reasons, dtype=object), "mask_resized": np.array(resized, bool)}


def target_classes(mask: np.ndarray, n_classes: int) -> np.ndarray:
    """A mask as stored (binary 0/255, or class ids with 255 = ignore) -> class ids (binary: value > 127)."""
    return (mask > 127).astype(np.uint8) if n_classes == 2 else mask


def predict_full_resolution(colorizer, rgbs: list[np.ndarray], vividness: float | None = None
                            ) -> list[dict[str, np.ndarray]]:
    """Full-resolution RGB sources -> per image ``l8``, ``pred`` RGB, ``gray`` RGB (AB = 0) and ``mask`` class ids,
    all at the source's (H, W). One forward pass at the colorizer's size, colors decoded at ``vividness``."""
    prepared = [colorizer.prepare(rgb) for rgb in rgbs]
    ab8, fg8 = colorizer.predict(np.stack([small for _, small in prepared]), vividness)
    out = []
    for (l8, small), ab, fg in zip(prepared, ab8, fg8):
        pred, stored = colorizer.finish(l8, ab, fg, small)
        out.append({"l8": l8, "pred": pred, "gray": colorizer.merge(l8, np.zeros_like(ab), small),
                    "mask": target_classes(stored, colorizer.n_classes)})
    return out


class MetricsActor:
    """Ray Data actor: loads the checkpoint once; each batch of decoded pairs -> one row of partial accumulators.

    Out columns (one row per batch): ``seg`` float64 (n_classes^2,) confusion counts, ``boundary`` float64
    (2 (n_classes - 1),) boundary-band intersections and unions, ``color`` and ``gray``
    float64 (7,) ColorAccumulator tensors (model and AB = 0 baseline), ``images`` int (good rows), ``bad`` str
    (JSON list of ``{key, kind, reason}``), ``mask_resized`` int.
    """

    def __init__(self, checkpoint: str, size: int | None, threads: int, device: str = "auto",
                 vividness: float | None = None, refine: str = DEFAULT_REFINE, tta: str = DEFAULT_TTA) -> None:
        import torch

        from semcolor.model.inference import load_colorizer

        torch.set_num_threads(max(1, threads))
        self.colorizer = load_colorizer(checkpoint, device=device, size=size, refine=refine, tta=tta)
        self.n_classes = self.colorizer.n_classes
        self.vividness = vividness

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seg, col, gray = SegmentationAccumulator(self.n_classes), ColorAccumulator(), ColorAccumulator()
        boundary = BoundaryAccumulator(self.n_classes)
        good = [i for i, status in enumerate(batch["status"]) if status == OK]
        if good:
            rgbs = [np.asarray(batch["rgb"][i]) for i in good]
            for i, rgb, out in zip(good, rgbs, predict_full_resolution(self.colorizer, rgbs, self.vividness)):
                truth = target_classes(np.asarray(batch["mask"][i]), self.n_classes)
                seg.update(out["mask"][None], truth[None])
                boundary.update(out["mask"], truth)
                col.update(out["pred"], rgb)
                gray.update(out["gray"], rgb)
        bad = [{"key": str(k), "kind": str(kind), "reason": str(r)}
               for k, status, kind, r in zip(batch["key"], batch["status"], batch["kind"], batch["reason"])
               if status != OK]
        return {"seg": seg.to_tensor().numpy()[None], "boundary": boundary.to_tensor().numpy()[None],
                "color": col.to_tensor().numpy()[None],
                "gray": gray.to_tensor().numpy()[None], "images": np.array([len(good)]),
                "bad": np.array([json.dumps(bad)], dtype=object),
                "mask_resized": np.array([int(np.sum(batch["mask_resized"]))])}


def _select_pairs(images: str | None, masks: str | None, manifest: str | None, limit: int | None,
                  val_fraction: float | None):
    """Pairs to evaluate: all, or the validation split of ``val_fraction`` (the training split's hash, seed 0);
    then the first ``limit``."""
    from semcolor.data.pairs import load_pairs, split_pairs

    pairs = load_pairs(images, masks, manifest)
    if val_fraction is not None:
        _, pairs = split_pairs(pairs, val_fraction, seed=0)
    if limit is not None:
        pairs = pairs.slice(0, limit)
    if pairs.num_rows == 0:
        raise ValueError(f"no pairs to evaluate in images={images} masks={masks} manifest={manifest} "
                         f"(val_fraction={val_fraction}, limit={limit})")
    return pairs


def _grid_png(colorizer, pairs, rows: int, max_pixels: int, vividness: float | None = None) -> bytes:
    """grid.png: per row gray input | predicted color | truth | predicted mask | true mask, for the first ``rows``
    good pairs (same decode and inference path as the metrics)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = []
    for key, image_url, mask_url in zip(*(pairs[c].to_pylist() for c in ("key", "image", "mask"))):
        if len(samples) == rows:
            break
        try:
            sample = read_pair(key, image_url, mask_url, max_pixels)
        except (DataError, OSError):
            continue  # recorded by the distributed pass; the grid shows good pairs only
        samples.append((key, sample.rgb, sample.mask))
    if not samples:
        raise ValueError("no readable pair to draw in grid.png")
    outs = predict_full_resolution(colorizer, [s[1] for s in samples], vividness)
    n_classes = colorizer.n_classes
    titles = ("gray input (L)", "predicted color", "truth", "predicted mask", "true mask")
    fig, axes = plt.subplots(len(samples), 5, figsize=(5 * 2.4, len(samples) * 2.0), squeeze=False)
    for r, ((key, rgb, mask), out) in enumerate(zip(samples, outs)):
        panels = (out["l8"], out["pred"], rgb, out["mask"], target_classes(mask, n_classes))
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            gray_panel = panel.ndim == 2
            vmax = 255 if c == 0 else max(1, n_classes - 1)
            ax.imshow(panel, cmap="gray" if gray_panel else None, vmin=0 if gray_panel else None,
                      vmax=vmax if gray_panel else None, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(key, fontsize=8)
    return figure_png(fig, dpi=80)


def evaluate(checkpoint: str, out: str, **options: Any) -> dict[str, Any]:
    """Measure ``checkpoint`` on pairs; write ``out/metrics.json`` and ``out/grid.png``; return the metrics.

    ``options``: the other :class:`EvaluateConfig` fields (``images`` + ``masks`` or ``manifest``, ``val_fraction``,
    ``limit``, ``size``, ...). See :func:`run_evaluation`.
    """
    return run_evaluation(EvaluateConfig(checkpoint=checkpoint, out=out, **options))


def run_evaluation(config: EvaluateConfig) -> dict[str, Any]:
    """Measure ``config.checkpoint`` on the connected Ray (``actors`` model actors); write ``metrics.json`` and
    ``grid.png`` under ``config.out``. Returns the metrics dict (see the module docstring for the protocol)."""
    import ray
    from ray.data import ActorPoolStrategy

    from semcolor.model.checkpoint import load_config
    from semcolor.model.inference import load_colorizer

    checkpoint, batch_size = config.checkpoint, config.batch_size
    model_config, _ = load_config(checkpoint)  # fail fast on a bad checkpoint, before any Ray work
    model_size = int(config.size or model_config.input_size)
    pairs = _select_pairs(config.images, config.masks, config.manifest, config.limit, config.val_fraction)
    env = storage_env([checkpoint, *pairs["image"].to_pylist()[:1], *pairs["mask"].to_pylist()[:1]])
    remote_env = {"runtime_env": {"env_vars": env}} if env else {}
    blocks = [pairs.slice(i, batch_size) for i in range(0, pairs.num_rows, batch_size)]
    ds = ray.data.from_arrow(blocks).map_batches(
        decode_full_resolution, batch_size=batch_size, batch_format="numpy",
        fn_kwargs={"max_pixels": config.max_pixels}, udf_modifying_row_count=False, **remote_env)
    gpus = config.gpus_per_actor
    actor_args = {"num_gpus": gpus} if gpus > 0 else {}
    partials = ds.map_batches(
        MetricsActor, batch_size=batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=config.actors),
        fn_constructor_kwargs={"checkpoint": checkpoint, "size": model_size,
                               "threads": max(1, int(round(config.cpus_per_actor))),
                               "device": "cuda" if gpus > 0 else "cpu", "vividness": config.vividness,
                               "refine": config.refine, "tta": config.tta},
        num_cpus=config.cpus_per_actor, **actor_args, **remote_env).take_all()

    n = model_config.n_classes
    seg, col, gray = SegmentationAccumulator(n), ColorAccumulator(), ColorAccumulator()
    boundary = BoundaryAccumulator(n)
    bad: list[dict[str, str]] = []
    images_done = mask_resized = 0
    for row in partials:
        seg = seg + SegmentationAccumulator.from_tensor(n, _tensor(row["seg"]))
        boundary = boundary + BoundaryAccumulator.from_tensor(n, _tensor(row["boundary"]))
        col = col + ColorAccumulator.from_tensor(_tensor(row["color"]))
        gray = gray + ColorAccumulator.from_tensor(_tensor(row["gray"]))
        images_done += int(row["images"])
        mask_resized += int(row["mask_resized"])
        bad.extend(json.loads(row["bad"]))
    if images_done == 0:
        raise ValueError(f"none of the {pairs.num_rows} pairs could be read; first errors: {bad[:3]}")
    seg_result, col_result, gray_result = seg.result(), col.result(), gray.result()
    metrics: dict[str, Any] = {
        "checkpoint": checkpoint, "arch": model_config.arch, "n_classes": n, "model_size": model_size,
        "color_head": model_config.color_head, "seg_to_color": model_config.seg_to_color,
        "seg_stride": model_config.seg_stride, "seg_decoder": model_config.seg_decoder,
        "vividness": config.vividness if model_config.color_head == "bins" else None, "refine": config.refine,
        "tta": config.tta,
        "protocol": "predict at model size; AB upsampled and merged with the source's full-resolution L; "
                    "RGB uint8 vs the source, per image then averaged; masks at full resolution",
        "pixel_accuracy": seg_result["pixel_accuracy"], "iou": seg_result["iou"], "miou": seg_result["miou"],
        **boundary.result(),
        **{k: col_result[k] for k in ("mse", "psnr", "ssim", "colorfulness_pred", "colorfulness_true",
                                      "colorfulness_ratio")},
        "gray_baseline": {"mse": gray_result["mse"], "psnr": gray_result["psnr"], "ssim": gray_result["ssim"],
                          "colorfulness": gray_result["colorfulness_pred"]},
        "counts": {"pairs": pairs.num_rows, "evaluated": images_done, "color_evaluated": col_result["images"],
                   "skipped_gray": col_result["skipped_gray"], "bad": len(bad),
                   **{f"bad:{k}": v for k, v in sorted(Counter(b["kind"] for b in bad).items())},
                   "mask_resized": mask_resized},
        "bad_files": bad,
    }
    out = config.out
    storage.makedirs(out)
    storage.write_text(storage.join(out, "metrics.json"), json.dumps(json_safe(metrics), indent=2))
    if config.grid_rows > 0:
        colorizer = load_colorizer(checkpoint, device="cpu", size=model_size, refine=config.refine, tta=config.tta)
        storage.write_bytes(storage.join(out, "grid.png"),
                            _grid_png(colorizer, pairs, config.grid_rows, config.max_pixels, config.vividness))
    return metrics


def _tensor(values):
    import torch

    return torch.from_numpy(np.array(values, dtype=np.float64))  # a writable copy




def summary_line(metrics: dict[str, Any], out: str) -> str:
    """One line: segmentation and color metrics beside the gray baseline, and the counts."""
    g, c = metrics["gray_baseline"], metrics["counts"]
    return (f"semcolor evaluate: mIoU {metrics['miou']:.3f} (pixel acc {metrics['pixel_accuracy']:.3f}, boundary IoU "
            f"{metrics['boundary_iou']:.3f} at {metrics['boundary_tolerance_px']} px); PSNR "
            f"{metrics['psnr']:.2f} dB vs gray {g['psnr']:.2f}; SSIM {metrics['ssim']:.3f} vs gray {g['ssim']:.3f}; "
            f"colorfulness {metrics['colorfulness_pred']:.1f} (truth {metrics['colorfulness_true']:.1f}); "
            f"{c['evaluated']} images, {c['skipped_gray']} gray sources left out of color, {c['bad']} bad files; "
            f"{storage.join(out, 'metrics.json')}, {storage.join(out, 'grid.png')}")


def run_evaluate(args: argparse.Namespace) -> int:
    """`semcolor evaluate --checkpoint URL (--images URL --masks URL | --manifest URL) --out DIR ...`."""
    from semcolor.model.checkpoint import load_config
    from semcolor.ray_env import init_ray, require_shared_paths

    config = config_from_args(EvaluateConfig, args)
    load_config(config.checkpoint)  # a bad checkpoint fails in one line before any Ray starts
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    init_ray(args.address, args.num_cpus)
    require_shared_paths({"--checkpoint": config.checkpoint, "--images": config.images, "--masks": config.masks,
                          "--manifest": config.manifest}, args.shared_path)
    metrics = run_evaluation(config)
    print(summary_line(metrics, config.out), flush=True)
    return 0
