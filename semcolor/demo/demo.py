"""`semcolor demo`: the whole product in one command, on this machine, in about three minutes.

1. Synthesize training pairs (:mod:`semcolor.data.synth`: a world where the gray image determines color and mask).
2. Train a small model with Ray Train for a fixed number of epochs (2 workers, :func:`semcolor.train.driver.fit`).
3. Turn unseen synthetic scans (another seed, a larger size) and scikit-image's sample photos into gray inputs.
4. Colorize them with the bulk Ray Data job (:func:`semcolor.bulk.job.colorize`, masks on).
5. Measure the scans against their truth (PSNR beside the gray input's, mask IoU) and write a contact sheet
   (input | colorized | mask | original) with those figures per row; print where everything is.

Everything goes under ``--out`` (default ``demo_out``), which the demo owns: a folder it made before
(marked by ``.semcolor-demo``) is replaced; any other non-empty folder is refused.
The model learns the synthetic world (its colors and masks follow from texture and shape); the photos lie
outside that world and show the pipeline (full resolution, EXIF, masks, records), not photo-realistic color:
that takes a real training run (README, the quality table).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from semcolor.core.flip_average import check_tta, tta_option
from semcolor.core.refine import check_refine, refine_option
from semcolor.model.config import check_vividness, vividness_option
from semcolor.options import config_from_args, option

MARKER = ".semcolor-demo"


@dataclass(kw_only=True)
class DemoOptions:
    """The options of `semcolor demo`."""

    out: str = option("demo_out", help="output folder (the demo owns it: a folder from an earlier demo is replaced)")
    fast: bool = option(False, help="smallest settings (what the test suite runs)")
    vividness: float = vividness_option()
    refine: str = refine_option()
    tta: str = tta_option()

    def __post_init__(self) -> None:
        check_vividness(self.vividness)
        check_refine(self.refine)
        check_tta(self.tta)

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes in pixels, time in minutes."""

    synth_n: int
    synth_size: int
    epochs: int
    batch_size: int
    lr: float
    photos: tuple[str, ...]
    scans: int
    scan_size: int


FULL = DemoSettings(synth_n=256, synth_size=64, epochs=12, batch_size=8, lr=2e-3,
                    photos=PHOTOS, scans=6, scan_size=256)
FAST = DemoSettings(synth_n=96, synth_size=64, epochs=8, batch_size=8, lr=3e-3,
                    photos=("astronaut",), scans=3, scan_size=128)
SCAN_SEED = 1
"""Scans come from another seed than the training pairs (seed 0): unseen images of the same world."""


def _prepare_out(out: Path) -> None:
    """Create ``out``, replacing an earlier demo's folder; refuse a foreign non-empty folder."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise ValueError(f"--out {out} exists and is not a semcolor demo folder (no {MARKER}); "
                             "choose another folder or empty it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `semcolor demo`; the next demo run replaces this folder\n")


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 gray (H, W), as a scanner would store it (ITU-R 601 luma)."""
    return np.asarray(Image.fromarray(rgb).convert("L"))


def write_inputs(out: Path, settings: DemoSettings) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Grayscale inputs under ``out/inputs/{scans,photos}/``; returns (key -> color original uint8 RGB,
    key -> true mask uint8 0/255 for the scans)."""
    import skimage.data

    from semcolor.data.synth import make_pair

    originals: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for i in range(settings.scans):
        rgb, mask = make_pair(i, settings.scan_size, seed=SCAN_SEED)
        originals[f"scans/scan{i:02d}"], masks[f"scans/scan{i:02d}"] = rgb, mask
    for name in settings.photos:
        originals[f"photos/{name}"] = getattr(skimage.data, name)()[..., :3]
    for key, rgb in originals.items():
        path = out / "inputs" / f"{key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_to_gray(rgb)).save(path)
    return originals, masks


@dataclass(frozen=True)
class RowScore:
    """One output measured against its truth: PSNR of the colorized image and of the gray input (AB = 0, the
    source's own L) in dB, and the mask's foreground IoU."""

    psnr: float
    gray_psnr: float
    iou: float


def score_row(original: np.ndarray, colorized: np.ndarray, mask: np.ndarray, truth: np.ndarray) -> RowScore:
    """uint8 RGB original and colorized (H, W, 3), predicted and true masks (H, W; foreground > 127)."""
    from semcolor.core.colorizer import merge_full_resolution
    from semcolor.core.lightness import rgb_to_l8
    from semcolor.model.metrics import psnr

    gray = merge_full_resolution(rgb_to_l8(original), np.zeros((2, 8, 8), np.int8), refine="bilinear")
    pred, true = mask > 127, truth > 127
    union = int((pred | true).sum())
    iou = float((pred & true).sum() / union) if union else 1.0
    return RowScore(psnr(colorized, original), psnr(gray, original), iou)


def write_sheet(out: Path, originals: dict[str, np.ndarray], truths: dict[str, np.ndarray], colorized: Path
                ) -> tuple[Path, dict[str, RowScore]]:
    """``out/contact_sheet.png``: per key, input | colorized | mask | original, labelled with the row's PSNR
    (beside the gray input's) and mask IoU where truth exists; returns the sheet's path and the scores."""
    from semcolor.demo.contact_sheet import contact_sheet

    def load(path: Path) -> np.ndarray | None:
        return np.asarray(Image.open(path)) if path.exists() else None

    rows, scores = [], {}
    for key, rgb in originals.items():
        color, mask = load(colorized / f"{key}.png"), load(colorized / "masks" / f"{key}.png")
        label = f"{key}: outside the synthetic world (no mask truth)"
        if key in truths and color is not None and mask is not None:
            score = scores[key] = score_row(rgb, color, mask, truths[key])
            label = (f"{key} (unseen): PSNR {score.psnr:.1f} dB (gray {score.gray_psnr:.1f}), "
                     f"mask IoU {score.iou:.2f}")
        rows.append((label, [load(out / "inputs" / f"{key}.png"), color, mask, rgb]))
    sheet = contact_sheet(rows, ["input (gray)", "colorized", "mask", "original"], cell=224)
    path = out / "contact_sheet.png"
    Image.fromarray(sheet).save(path)
    return path, scores


def run_demo(args: argparse.Namespace) -> int:
    """`semcolor demo [--out DIR] [--fast]`."""
    from semcolor.bulk.job import colorize
    from semcolor.data.synth import write_synth
    from semcolor.ray_env import init_ray
    from semcolor.train.driver import TrainConfig, fit

    options = config_from_args(DemoOptions, args)
    settings = FAST if options.fast else FULL
    out = Path(options.out).resolve()
    started = time.perf_counter()
    _prepare_out(out)
    init_ray(args.address, args.num_cpus)

    synth = out / "synth"
    write_synth(str(synth), settings.synth_n, settings.synth_size, seed=0)
    print(f"[demo] {settings.synth_n} synthetic pairs ({settings.synth_size} px) -> {synth}", flush=True)

    config = TrainConfig(images=str(synth / "images"), masks=str(synth / "masks"), size=settings.synth_size,
                         epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, workers=2,
                         cpus_per_worker=1.0,
                         storage=str(out / "runs"), name="demo", warmup_epochs=min(1.0, settings.epochs / 4),
                         augment=False)  # the world has no scale variation to learn: a short run learns faster without
    result = fit(config)
    print(f"[demo] trained {settings.epochs} epochs: {result.summary}", flush=True)

    originals, truths = write_inputs(out, settings)
    colorized = out / "colorized"
    # torch, not the CPU default onnxruntime: for a handful of images the export (verified against torch, ~15 s on
    # 2 cores) would cost more than onnxruntime saves
    summary = colorize(str(out / "inputs"), str(colorized), result.best_checkpoint, batch_size=8, masks=True,
                       vividness=options.vividness, refine=options.refine, tta=options.tta,
                       backend="torch")
    print(f"[demo] {summary.line()}", flush=True)
    sheet, scores = write_sheet(out, originals, truths, colorized)
    if scores:
        n = len(scores)
        mean = RowScore(*(sum(getattr(s, f) for s in scores.values()) / n for f in ("psnr", "gray_psnr", "iou")))
        (out / "scores.json").write_text(json.dumps({"mean": asdict(mean), "scans": {k: asdict(v) for k, v in
                                                                                     scores.items()}}, indent=1))
        print(f"[demo] {n} unseen synthetic scans at {settings.scan_size} px: PSNR {mean.psnr:.2f} dB vs the gray "
              f"input's {mean.gray_psnr:.2f} ({mean.psnr - mean.gray_psnr:+.2f} dB), mask IoU {mean.iou:.3f} "
              f"(per scan: {out / 'scores.json'})", flush=True)

    print(f"[demo] done in {time.perf_counter() - started:.0f} s. Everything is under {out}:\n"
          f"  training data     {synth}/images, {synth}/masks\n"
          f"  training run      {result.run_dir} (metrics.jsonl, curves.png)\n"
          f"  model             {result.best_checkpoint}\n"
          f"  gray inputs       {out / 'inputs'}\n"
          f"  colorized + masks {colorized} (records in {colorized / '_manifest'})\n"
          f"  contact sheet     {sheet}", flush=True)
    return 0 if summary.failed == 0 else 1
