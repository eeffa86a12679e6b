"""`semcolor demo`: the whole product in one command, on this machine, in about three minutes.

1. Synthesize training pairs (:mod:`semcolor.data.synth`: colored shapes on textured backgrounds, exact masks).
2. Train a small model briefly with Ray Train (2 workers, :func:`semcolor.train.driver.fit`).
3. Turn scikit-image's sample photos and some unseen synthetic scans into grayscale inputs.
4. Colorize them with the bulk Ray Data job (:func:`semcolor.bulk.job.colorize`, masks on).
5. Write a contact sheet (input | colorized | mask | original) and print where everything is.

Everything goes under ``--out`` (default ``demo_out``), which the demo owns: a folder it made before
(marked by ``.semcolor-demo``) is replaced; any other non-empty folder is refused.
A model trained for a minute or two on synthetic shapes learns their masks and a little color; on the
photos it mostly shows the pipeline (full resolution, EXIF, masks, records), not photo-realistic color.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

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

    def __post_init__(self) -> None:
        check_vividness(self.vividness)
        check_refine(self.refine)

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes in pixels, time in minutes."""

    synth_n: int
    synth_size: int
    epochs: int
    batch_size: int
    time_budget: float | None
    photos: tuple[str, ...]
    scans: int
    scan_size: int


FULL = DemoSettings(synth_n=256, synth_size=64, epochs=20, batch_size=8, time_budget=1.5,
                    photos=PHOTOS, scans=4, scan_size=320)
FAST = DemoSettings(synth_n=24, synth_size=64, epochs=1, batch_size=4, time_budget=None,
                    photos=("astronaut", "coffee"), scans=2, scan_size=96)


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


def write_inputs(out: Path, settings: DemoSettings) -> dict[str, np.ndarray]:
    """Grayscale inputs under ``out/inputs/{photos,scans}/``; returns key -> color original (uint8 RGB)."""
    import skimage.data

    from semcolor.data.synth import make_pair

    originals: dict[str, np.ndarray] = {}
    for name in settings.photos:
        rgb = getattr(skimage.data, name)()
        originals[f"photos/{name}"] = rgb[..., :3]
    for i in range(settings.scans):
        rgb, _ = make_pair(10_000 + i, settings.scan_size, seed=1)  # unseen: another seed than training
        originals[f"scans/scan{i:02d}"] = rgb
    for key, rgb in originals.items():
        path = out / "inputs" / f"{key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_to_gray(rgb)).save(path)
    return originals


def write_sheet(out: Path, originals: dict[str, np.ndarray], colorized: Path) -> Path:
    """``out/contact_sheet.png``: per key, input | colorized | mask | original."""
    from semcolor.demo.contact_sheet import contact_sheet

    rows = []
    for key, rgb in originals.items():
        def load(path: Path) -> np.ndarray | None:
            return np.asarray(Image.open(path)) if path.exists() else None

        rows.append((key, [load(out / "inputs" / f"{key}.png"), load(colorized / f"{key}.png"),
                           load(colorized / "masks" / f"{key}.png"), rgb]))
    sheet = contact_sheet(rows, ["input (gray)", "colorized", "mask", "original"])
    path = out / "contact_sheet.png"
    Image.fromarray(sheet).save(path)
    return path


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
                         epochs=settings.epochs, batch_size=settings.batch_size, workers=2,
                         storage=str(out / "runs"), name="demo", time_budget=settings.time_budget,
                         warmup_epochs=min(1.0, settings.epochs / 4))
    result = fit(config)
    print(f"[demo] trained: {result.summary}", flush=True)

    originals = write_inputs(out, settings)
    colorized = out / "colorized"
    summary = colorize(str(out / "inputs"), str(colorized), result.best_checkpoint, batch_size=8, masks=True,
                       vividness=options.vividness, refine=options.refine)
    print(f"[demo] {summary.line()}", flush=True)
    sheet = write_sheet(out, originals, colorized)

    print(f"[demo] done in {time.perf_counter() - started:.0f} s. Everything is under {out}:\n"
          f"  training data     {synth}/images, {synth}/masks\n"
          f"  training run      {result.run_dir} (metrics.jsonl, curves.png)\n"
          f"  model             {result.best_checkpoint}\n"
          f"  gray inputs       {out / 'inputs'}\n"
          f"  colorized + masks {colorized} (records in {colorized / '_manifest'})\n"
          f"  contact sheet     {sheet}", flush=True)
    return 0 if summary.failed == 0 else 1
