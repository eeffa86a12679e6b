"""`semcolor bench quality`: the quality protocol, one trained model per row, measured the same way.

Protocol (DESIGN "Quality measures"): ECSSD (``--data``, default beside the checkout), split 80/20 by a hash of
each key (seed 0, the split `semcolor train` and `semcolor evaluate --val-fraction` use). Each trained row trains
with Ray Train on the 80 % for the same fixed amount of work: :data:`EPOCHS_BY_SIZE` epochs at its size (the same
pixels seen at every size: 44 epochs at 96 px, 25 at 128, 16 at 160), one worker x 2 CPUs (the training default,
the fastest layout on one 2-core node: `semcolor bench train`), batch :data:`BATCH`, augmentation on: about 30
minutes on an idle 2-core machine; a fixed amount of work, not a wall-clock budget, so that a busy machine gives
every row the same training. A row may set its own epochs and say so (bf16-2x: twice the work, which bf16 autocast
on a CPU with AMX fits in about the same minutes). A row with photos without masks
(``--photos-data``, default the shared photos-unlabeled set) holds them at ``photos_share`` of each batch, so an
epoch (one pass over the pairs) costs 1 / (1 - share) as much and the row trains that many times fewer epochs.
A row with a first stage (``Row.pretrain``: colour alone, :data:`PRETRAIN_EPOCHS` epochs, no segmentation loss)
trains that stage first and starts its own training from the stage's last checkpoint (``--init``); its minutes
count both stages, and rows sharing a stage share its run in ``--work``. A row with a teacher (``Row.teacher``:
pseudo-labels) trains that row (or reuses it), has its best model draw masks for the photos without masks (`semcolor
colorize --masks --tta flip`, kept in ``WORK/pseudo-TEACHER``) and trains on them beside the pairs
(``--train-pairs``, never validated); its minutes count all three.
Then `semcolor evaluate` measures its best checkpoint on the 20 % at the photos' full resolution, with the gray
baseline (AB = 0) beside it. A bins-head row is measured at each vividness of :data:`VIVIDNESS` (inference rows of
one trained model), with the default guided upsampling; every trained row is measured once more with bilinear
upsampling (``refine=bilinear``, same checkpoint, default vividness) to show what the guided filter changes, and at
every vividness with test-time flip averaging (``tta=flip``: each photo and its mirror; a frontier of its own).

Columns: mIoU, pixel accuracy, boundary IoU (the foreground's contour bands of
:data:`semcolor.model.metrics.BOUNDARY_TOLERANCE_PX` px at full resolution), PSNR, SSIM, colorfulness / truth,
PSNR - gray (dB), training minutes.
The frontier: PSNR - gray where colorfulness / truth = :data:`FRONTIER_COLORFULNESS`, interpolated linearly
along the vividness knob between the two measured values around it.
Prints a table; writes ``OUT/quality.json`` and, per trained row, its evaluation grid at the default vividness as
``OUT/quality-ROW-grid.png``. With ``--work`` kept from an earlier run, trained rows and evaluations found there
(same checkpoint, vividness, upsampling and test-time augmentation) are reused, not redone, and a row's run
stopped midway resumes from its latest checkpoint. With ``--rows``, the other rows of an ``OUT/quality.json``
measured under the same protocol are kept in the table (one row can be added or redone without training the others
again). ``--limit N`` keeps the first N pairs (a smoke run; the figures then mean nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semcolor.benchmarks._report import portable, print_table, write_result
from semcolor.core import storage
from semcolor.core.flip_average import DEFAULT_TTA, TTA_MODES
from semcolor.core.refine import DEFAULT_REFINE
from semcolor.model.config import DEFAULT_VIVIDNESS
from semcolor.model.metrics import BOUNDARY_TOLERANCE_PX

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ecssd"
DEFAULT_PHOTOS = DEFAULT_DATA.parent / "photos-unlabeled" / "images"
EPOCHS_BY_SIZE = {96: 44, 128: 25, 160: 16}
"""Epochs per training size: about the same pixels seen (epochs x size^2 ~ 0.41 M) and CPU-minutes at each."""
BATCH = 32
LR = 2e-3
VAL_FRACTION = 0.2
VIVIDNESS = (0.0, 0.35, 0.5, 0.65, 1.0)
PRETRAIN_EPOCHS = 12
"""Epochs of the colour-only first stage (about 1 760 images each at 96 px: ~0.6 of a row's work on top of it)."""
FRONTIER_COLORFULNESS = 0.6


@dataclass(frozen=True)
class Row:
    """One trained model of the table: a name, its training size, and the TrainConfig fields it sets beyond the
    protocol's (``photos_share`` > 0: photos without masks join its batches)."""

    name: str
    description: str
    train: dict[str, Any] = field(default_factory=dict)
    size: int = 96
    pretrain: "Row | None" = None
    """A first stage whose last checkpoint starts the row's training (``init``), e.g. colour alone with no
    segmentation loss; None: the row starts from random init. Rows sharing a stage share its run."""
    teacher: "Row | None" = None
    """A row whose best model draws masks for the photos without masks (:func:`pseudo_labels`): they train this row
    beside the pairs (``--train-pairs``); its minutes count the teacher's training and the drawing too."""

    @property
    def epochs(self) -> int:
        """:data:`EPOCHS_BY_SIZE` at its size, times (1 - photos share) with photos (the same images per row)."""
        if "epochs" in self.train:  # a first stage, or a row of more work (bf16-2x), sets its own
            return int(self.train["epochs"])
        share = float(self.train.get("photos_share", 0.0)) if self.train.get("photos") else 0.0
        return max(1, round(EPOCHS_BY_SIZE[self.size] * (1.0 - share)))


_FINE = {"seg_stride": 1, "mask_loss": "none"}
_LOVASZ = {**_FINE, "mask_loss": "lovasz"}
_BF16 = {**_LOVASZ, "precision": "bf16", "channels_last": True}
COLOR_ONLY = Row("color-pretrain.stage1", "colour alone: no segmentation loss, photos without masks 9/16 of each "
                 "batch beside ECSSD's 80 %", {**_FINE, "photos": True, "photos_share": 0.5625, "seg_weight": 0.0,
                                               "epochs": PRETRAIN_EPOCHS})
BF16_2X_128 = Row("bf16-2x-128", f"as bf16-2x at 128 px ({2 * EPOCHS_BY_SIZE[128]} epochs)",
                  {**_BF16, "epochs": 2 * EPOCHS_BY_SIZE[128]}, size=128)
TRAIN_PAIRS, PHOTOS = 776, 1000
"""ECSSD's 80 % (the training split) and the photos without masks of the shared set."""
_PSEUDO_EPOCHS = round(BF16_2X_128.epochs * TRAIN_PAIRS / (TRAIN_PAIRS + PHOTOS))
COLOR_ONLY_LONG = dataclasses.replace(COLOR_ONLY, name="color-pretrain-long.stage1",
                                      train={**COLOR_ONLY.train, "epochs": 2 * PRETRAIN_EPOCHS})
ROWS: tuple[Row, ...] = (
    Row("bins", "UNet, 261 AB bins, soft targets, milder rebalancing (mix 0.8), color weight 0.3, annealed mean; "
        "segmentation at 1/4 (the model before masks that follow edges)",
        {"color_head": "bins", "seg_stride": 4, "mask_loss": "none"}),
    Row("mask-half", "as bins, the mask at 1/2 (a decoder stage on the stride-2 features)",
        {"seg_stride": 2, "mask_loss": "none"}),
    Row("mask-full", "as bins, the mask at full resolution (and a stage on the L image)", _FINE),
    Row("mask-full-lovasz", "as mask-full, plus the Lovasz-softmax term", _LOVASZ),
    Row("size-128", "as mask-full-lovasz at 128 px (25 epochs)", _LOVASZ, size=128),
    Row("size-160", "as mask-full-lovasz at 160 px (16 epochs)", _LOVASZ, size=160),
    Row("photos", "as mask-full-lovasz at 128 px, photos without masks half of each batch (12 epochs)",
        {**_LOVASZ, "photos": True, "photos_share": 0.5}, size=128),
    Row("color-pretrain", "as mask-full-lovasz, started from a colour-only pre-training of the whole network: "
        f"{PRETRAIN_EPOCHS} epochs over ECSSD's 80 % and the photos without masks (9/16 of each batch: about one "
        "pass over each per epoch) with no segmentation loss", _LOVASZ, pretrain=COLOR_ONLY),
    Row("color-pretrain-photos", "as color-pretrain, the photos a quarter of each batch in the joint training too "
        "(33 epochs: the same images)", {**_LOVASZ, "photos": True, "photos_share": 0.25}, pretrain=COLOR_ONLY),
    Row("color-pretrain-long", f"as color-pretrain, the colour-only stage twice as long ({2 * PRETRAIN_EPOCHS} "
        "epochs)", _LOVASZ, pretrain=COLOR_ONLY_LONG),
    Row("color-pretrain-long-frozen", "as color-pretrain-long, the weights the mask shares with the colour (encoder, "
        "decoder, colour head) frozen in the joint training (--shared-lr-scale 0): only the mask's head and "
        "refiner stages learn", {**_LOVASZ, "shared_lr_scale": 0.0}, pretrain=COLOR_ONLY_LONG),
    Row("color-pretrain-long-slow", "as color-pretrain-long, the shared weights at 0.1 of the learning rate in the "
        "joint training (--shared-lr-scale 0.1)", {**_LOVASZ, "shared_lr_scale": 0.1}, pretrain=COLOR_ONLY_LONG),
    Row("color-pretrain-long-mid", "as color-pretrain-long-slow, the shared weights at 0.3 of the learning rate "
        "(--shared-lr-scale 0.3)", {**_LOVASZ, "shared_lr_scale": 0.3}, pretrain=COLOR_ONLY_LONG),
    Row("bf16-2x", f"as mask-full-lovasz in bf16 autocast and channels_last (--precision bf16 --channels-last: "
        f"AMX on a CPU that has it), twice the epochs ({2 * EPOCHS_BY_SIZE[96]}) for about the same minutes",
        {**_BF16, "epochs": 2 * EPOCHS_BY_SIZE[96]}),
    BF16_2X_128,
    Row("pseudo-labels", f"as bf16-2x-128, its training set grown by pseudo-labels: bf16-2x-128's model (flip "
        f"averaged) draws masks for the {PHOTOS} photos without masks, which train beside ECSSD's 80 % as pairs "
        f"(--train-pairs); {_PSEUDO_EPOCHS} epochs of {TRAIN_PAIRS} + {PHOTOS} images: bf16-2x-128's steps",
        {**_BF16, "epochs": _PSEUDO_EPOCHS}, size=128, teacher=BF16_2X_128),
    Row("bf16-2x-aug", "as bf16-2x with stronger augmentation: crops of 25-100 % of the area (--crop-scale-min "
        "0.25) and the gray input's contrast and brightness jittered (--lightness-jitter 0.2)",
        {**_BF16, "epochs": 2 * EPOCHS_BY_SIZE[96], "crop_scale_min": 0.25, "lightness_jitter": 0.2}),
    Row("bf16-2x-paste", "as bf16-2x with copy-paste: half of the training images get the next image's foreground "
        "pasted in, scaled by 0.5-1 and placed at random, its mask with it (--copy-paste 0.5)",
        {**_BF16, "epochs": 2 * EPOCHS_BY_SIZE[96], "copy_paste": 0.5}),
    Row("bf16-2x-ema", "as bf16-2x, validated, kept and evaluated as the moving average of its weights (--ema 0.995: "
        "about the last 200 steps, 8 epochs)", {**_BF16, "epochs": 2 * EPOCHS_BY_SIZE[96], "ema": 0.995}),
    Row("bf16-2x-mask-decoder", "as bf16-2x, the mask on a decoder of its own (half the channels) from the shared "
        "encoder, so that the heads share only the encoder (--seg-decoder own)",
        {**_BF16, "epochs": 2 * EPOCHS_BY_SIZE[96], "seg_decoder": "own"}),
    Row("bf16-2x-mask-weight", "as bf16-2x, the colour term at a third of its default weight (--color-weight 0.1 "
        "against 0.3), so that the mask's gradients weigh three times as much in the shared encoder",
        {**_BF16, "epochs": 2 * EPOCHS_BY_SIZE[96], "color_weight": 0.1}),
)


def frontier(points: list[tuple[float, float, float]], target: float = FRONTIER_COLORFULNESS
             ) -> dict[str, float] | None:
    """(vividness, colorfulness ratio, PSNR - gray) points -> the PSNR - gray and vividness where the colorfulness
    ratio crosses ``target`` (linear interpolation between neighbouring vividness values); None if never reached."""
    pts = sorted(points)
    for (v0, c0, p0), (v1, c1, p1) in zip(pts, pts[1:]):
        if (c0 - target) * (c1 - target) <= 0 and c0 != c1:
            t = (target - c0) / (c1 - c0)
            return {"vividness": v0 + t * (v1 - v0), "psnr_minus_gray": p0 + t * (p1 - p0),
                    "colorfulness_ratio": target}
    return None


def _figures(name: str, vividness: float | None, refine: str, m: dict[str, Any], tta: str = DEFAULT_TTA
             ) -> dict[str, Any]:
    gray = m["gray_baseline"]
    label = name if vividness is None else f"{name} v={vividness:g}"
    if refine != DEFAULT_REFINE:
        label += f" {refine}"
    if tta != DEFAULT_TTA:
        label += f" {tta}"
    return {"row": label, "miou": m["miou"], "pixel_accuracy": m["pixel_accuracy"],
            "boundary_iou": m["boundary_iou"], "psnr": m["psnr"], "ssim": m["ssim"],
            "colorfulness_ratio": m["colorfulness_ratio"], "psnr_minus_gray": m["psnr"] - gray["psnr"]}


def _row_runs(work: str, row: Row) -> list[Path]:
    """The run folders of ``row`` under ``work/runs`` (a local folder), oldest first (their names end in a
    timestamp)."""
    runs = Path(work) / "runs"
    if not runs.is_dir():
        return []
    return sorted(p for p in runs.iterdir() if p.name.startswith(f"quality-{row.name}-2"))


def _trained_run(work: str, row: Row, wanted: Any) -> tuple[str, int, float, Any] | None:
    """A run of ``row`` already trained in ``work`` (``--work`` kept from an earlier run) with the TrainConfig
    ``wanted`` (all but its name and storage): (best checkpoint, best epoch, training minutes from its metrics, its
    TrainConfig), or None. Evaluation changes (decoding, upsampling) can then be measured on the same models without
    training them again; a run trained under another protocol is never reused."""
    import json

    from semcolor.model.checkpoint import load_config
    from semcolor.train.config import TrainConfig

    for path in _row_runs(work, row):
        run_dir = str(path)
        if not (path / "best").is_dir():
            continue
        history = [json.loads(line) for line in storage.read_text(storage.join(run_dir, "metrics.jsonl")).splitlines()]
        minutes = sum(h["train_time_s"] + h["val_time_s"] for h in history) / 60.0
        _, extra = load_config(storage.join(run_dir, "best"))
        # runs older than the --augment flag trained without augmentation
        config = TrainConfig.from_dict({"augment": False, **extra["train_config"]})
        if _training(config) != _training(wanted):
            print(f"[quality] row {row.name}: {run_dir} was trained with other settings; not reused", flush=True)
            continue
        return storage.join(run_dir, "best"), int(extra["epoch"]), minutes, config
    return None


def _unfinished_run(work: str, row: Row, wanted: Any) -> str | None:
    """The name of a run of ``row`` in ``work`` that was stopped before it finished (checkpoints, no ``best``) and
    trains what ``wanted`` trains, or None: training under that name resumes it from its latest checkpoint (Ray Train
    restores a run by name) instead of starting over."""
    from semcolor.model.checkpoint import load_config
    from semcolor.train.config import TrainConfig

    for path in reversed(_row_runs(work, row)):  # the newest first
        checkpoints = sorted(path.glob("checkpoint_epoch*"))
        if not checkpoints or (path / "best").exists():
            continue
        _, extra = load_config(str(checkpoints[-1]))
        if _training(TrainConfig.from_dict(extra["train_config"])) == _training(wanted):
            return path.name
    return None


def _training(config: Any) -> dict[str, Any]:
    """What a TrainConfig trains (its name and where it is stored left out)."""
    return {k: v for k, v in config.to_dict().items() if k not in ("name", "storage")}


def _evaluated(eval_dir: str, checkpoint: str, vividness: float | None, refine: str, grid: bool,
               limit: int | None, tta: str = DEFAULT_TTA) -> dict[str, Any] | None:
    """The metrics of an evaluation already made in ``eval_dir`` (``--work`` kept from an earlier run) of the same
    checkpoint, vividness (None: a regression model), upsampling, test-time augmentation and limit, with its grid
    when one is wanted; else None."""
    import json

    url = storage.join(eval_dir, "metrics.json")
    if limit is not None or not storage.exists(url) or (grid and not storage.exists(storage.join(eval_dir, "grid.png"))):
        return None
    m = json.loads(storage.read_text(url))
    same = ("boundary_iou" in m and m.get("checkpoint") == checkpoint and m.get("refine") == refine
            and m.get("tta", DEFAULT_TTA) == tta
            and (vividness is None or m.get("vividness") == vividness))
    return m if same else None


@dataclass(frozen=True)
class Trained:
    """A row's trained run: its best checkpoint and epoch, its latest checkpoint, training minutes (the epochs' own
    time), its TrainConfig, and whether it was reused from ``--work``."""

    best: str
    best_epoch: int
    latest: str
    minutes: float
    config: Any
    reused: bool


def train_row(row: Row, images: str, masks: str, work: str, limit: int | None, photos: str | None,
              init: str | None = None, train_pairs: list[str] | None = None) -> Trained:
    """Train ``row`` under the protocol in ``work/runs`` (starting from the checkpoint ``init`` if given, with the
    train-only pairs of the manifests ``train_pairs``), or reuse the run of it already there, or resume one stopped
    midway."""
    from semcolor.train.config import TrainConfig
    from semcolor.train.driver import fit

    train = dict(row.train)
    train.pop("epochs", None)
    if train.pop("photos", False):
        if photos is None:
            raise ValueError(f"row {row.name} trains with photos without masks; pass --photos-data")
        train["photos"] = [photos]
    config = TrainConfig(images=images, masks=masks, arch="unet", size=row.size, epochs=row.epochs,
                         batch_size=BATCH, lr=LR, workers=1, cpus_per_worker=2.0, val_fraction=VAL_FRACTION,
                         storage=storage.join(work, "runs"), init=init, train_pairs=train_pairs,
                         name=f"quality-{row.name}-{time.strftime('%Y%m%d-%H%M%S')}", limit=limit, **train)
    done = _trained_run(work, row, config)
    if done is not None:
        best, best_epoch, minutes, config = done
        print(f"[quality] row {row.name}: reusing the run trained in {best}", flush=True)
        return Trained(best, best_epoch, _latest_checkpoint(str(Path(best).parent)), minutes, config, True)
    unfinished = _unfinished_run(work, row, config)
    if unfinished is not None:
        print(f"[quality] row {row.name}: resuming the unfinished run {unfinished}", flush=True)
        config = dataclasses.replace(config, name=unfinished)
    started = time.perf_counter()
    result = fit(config)
    minutes = (time.perf_counter() - started) / 60.0
    if unfinished is not None:  # the epochs of both parts, as a reused run counts them
        minutes = sum(h["train_time_s"] + h["val_time_s"] for h in result.history) / 60.0
    return Trained(result.best_checkpoint, result.best_epoch, result.latest_checkpoint, minutes, config, False)


PSEUDO_TTA = "flip"
"""The teacher's test-time augmentation when it draws pseudo-labels (better masks for twice its model work)."""


def pseudo_labels(checkpoint: str, photos: str, work: str, teacher: str, limit: int | None) -> dict[str, Any]:
    """Masks drawn by the model at ``checkpoint`` for the photos without masks under ``photos`` (`semcolor colorize
    --masks --tta flip`: full resolution, 0/255), paired with their photos in a manifest for ``--train-pairs``:
    ``{"manifest", "pairs", "failed", "minutes"}``. Kept in ``work/pseudo-TEACHER`` and reused from there (the bulk
    job itself skips the keys it has done)."""
    import json

    from semcolor.bulk.job import colorize
    from semcolor.data.pairs import pair_prefixes, write_manifest

    folder = storage.join(work, f"pseudo-{teacher}")
    manifest, summary_url = storage.join(folder, "pairs.parquet"), storage.join(folder, "summary.json")
    if storage.exists(summary_url) and limit is None:
        done = json.loads(storage.read_text(summary_url))
        if done.get("checkpoint") == checkpoint:
            print(f"[quality] reusing the pseudo-labels of {teacher} in {folder}", flush=True)
            return {k: done[k] for k in ("manifest", "pairs", "failed", "minutes")}
    started = time.perf_counter()
    outputs = storage.join(folder, "outputs")
    summary = colorize(photos, outputs, checkpoint, masks=True, tta=PSEUDO_TTA, limit=limit)
    pairs = pair_prefixes(photos, storage.join(outputs, "masks")).pairs
    write_manifest(pairs, manifest)
    result = {"manifest": manifest, "pairs": pairs.num_rows, "failed": summary.failed,
              "minutes": (time.perf_counter() - started) / 60.0}
    storage.write_text(summary_url, json.dumps({**result, "checkpoint": checkpoint}))
    return result


def _in_work(path: str | None, work: str) -> str | None:
    """``path`` under the work folder as ``WORK/...`` (WORK = --work), so that the JSON names no machine's paths."""
    return None if path is None else "WORK/" + path[len(work):].lstrip("/")


def _latest_checkpoint(run_dir: str) -> str:
    """The newest ``checkpoint_epochNNNN`` folder of a local run directory."""
    checkpoints = sorted(Path(run_dir).glob("checkpoint_epoch*"))
    if not checkpoints:
        raise ValueError(f"{run_dir}: no checkpoint_epoch* folder")
    return str(checkpoints[-1])


def run_row(row: Row, images: str, masks: str, out: str, work: str, limit: int | None,
            photos: str | None = None) -> list[dict[str, Any]]:
    """Train ``row`` under the protocol (run and evaluations under ``work``), evaluate its best checkpoint (at
    every :data:`VIVIDNESS` for a bins head); the row's figures, one dict per evaluation. The evaluation grid at
    the default vividness is copied to ``out``."""
    from semcolor.evaluation.job import evaluate

    init, stage_minutes, train_pairs, pseudo = None, 0.0, None, None
    stage = row.pretrain
    if stage is not None:
        print(f"[quality] row {row.name}: first stage {stage.train}", flush=True)
        first = train_row(stage, images, masks, work, limit, photos)
        init, stage_minutes = first.latest, first.minutes
    if row.teacher is not None:
        if photos is None:
            raise ValueError(f"row {row.name} draws pseudo-labels for photos without masks; pass --photos-data")
        print(f"[quality] row {row.name}: the teacher {row.teacher.name}", flush=True)
        teacher = train_row(row.teacher, images, masks, work, limit, photos)
        pseudo = {**pseudo_labels(teacher.best, photos, work, row.teacher.name, limit),
                  "teacher_minutes": teacher.minutes}
        train_pairs = [pseudo["manifest"]]
        stage_minutes = teacher.minutes + pseudo["minutes"]
    trained = train_row(row, images, masks, work, limit, photos, init=init, train_pairs=train_pairs)
    best, best_epoch, config = trained.best, trained.best_epoch, trained.config
    train_minutes = stage_minutes + trained.minutes
    detail = {"description": row.description, "train_config": {**config.to_dict(), "storage": "(the work folder)",
                                                                 "init": _in_work(config.init, work),
                                                                 "train_pairs": [_in_work(u, work) for u in
                                                                                 config.train_pairs or []] or None},
              "pseudo_labels": None if pseudo is None else {**pseudo, "manifest": _in_work(pseudo["manifest"], work),
                                                             "teacher": row.teacher.name},
              "best_epoch": best_epoch, "reused": trained.reused,
              "first_stage": None if stage is None else {"train": stage.train, "minutes": stage_minutes},
              "checkpoint": _in_work(best, work)}
    # (vividness, refine, tta) per evaluation; None: a regression model, which has no vividness. Flip averaging
    # at every vividness too: its own frontier
    vividness_values = [None] if config.color_head == "regression" else sorted({*VIVIDNESS, DEFAULT_VIVIDNESS})
    default = None if config.color_head == "regression" else DEFAULT_VIVIDNESS
    settings = [(v, DEFAULT_REFINE, DEFAULT_TTA) for v in vividness_values] + [(default, "bilinear", DEFAULT_TTA)]
    settings += [(v, DEFAULT_REFINE, "flip") for v in vividness_values]
    rows = []
    for vividness, refine, tta in settings:
        eval_dir = storage.join(work, f"eval-{row.name}-{vividness}-{refine}" + ("" if tta == DEFAULT_TTA else
                                                                                  f"-{tta}"))
        grid_rows = 8 if (vividness in (None, DEFAULT_VIVIDNESS) and refine == DEFAULT_REFINE
                          and tta == DEFAULT_TTA) else 0
        m = _evaluated(eval_dir, best, vividness, refine, grid_rows > 0, limit, tta)
        if m is None:
            m = evaluate(best, eval_dir, images=images, masks=masks, val_fraction=VAL_FRACTION, limit=limit,
                         grid_rows=grid_rows, vividness=DEFAULT_VIVIDNESS if vividness is None else vividness,
                         refine=refine, tta=tta)
        else:
            print(f"[quality] row {row.name}: reusing the evaluation in {eval_dir}", flush=True)
        figures = _figures(row.name, vividness, refine, m, tta)
        if grid_rows:
            grid = storage.join(out, f"quality-{row.name}-grid.png")
            storage.write_bytes(grid, storage.read_bytes(storage.join(eval_dir, "grid.png")))
            detail["grid"] = f"quality-{row.name}-grid.png"  # beside quality.json
        rows.append({**figures, "train_minutes": train_minutes,
                     "detail": {**detail, "vividness": vividness, "refine": refine, "tta": tta,
                                "gray_baseline": m["gray_baseline"],
                                "counts": m["counts"]}})
    return rows


def run(args: argparse.Namespace) -> int:
    """The rows of :data:`ROWS` (``--rows`` picks some); a table and ``OUT/quality.json``."""
    from semcolor.ray_env import init_ray

    root = Path(args.data) if args.data else DEFAULT_DATA
    if not (root / "images").is_dir():
        raise ValueError(f"no dataset at {root} (needs images/ and masks/); pass --data")
    wanted = [r.strip() for r in args.rows.split(",")] if getattr(args, "rows", None) else [r.name for r in ROWS]
    unknown = set(wanted) - {r.name for r in ROWS}
    if unknown:
        raise ValueError(f"unknown quality rows {sorted(unknown)}; known: {[r.name for r in ROWS]}")
    init_ray(args.address, args.num_cpus)
    rows: list[dict[str, Any]] = kept_rows(args.out, _protocol(args, root), wanted)
    with tempfile.TemporaryDirectory(prefix="semcolor-quality-") as tmp:  # runs and evaluations, unless --work
        work = getattr(args, "work", None) or tmp
        for row in ROWS:
            if row.name not in wanted:
                continue
            print(f"[quality] row {row.name}: {row.description}", flush=True)
            rows.extend(run_row(row, str(root / "images"), str(root / "masks"), args.out, work, args.limit,
                                photos=str(_photos_root(args))))
            rows.sort(key=lambda r: [x.name for x in ROWS].index(_row_name(r)))
            print_table([{k: v for k, v in r.items() if k != "detail"} for r in rows])
            _write(args, root, rows)  # after every row: a long run stopped midway keeps what it measured
    return 0


def _photos_root(args: argparse.Namespace) -> Path:
    """The photos without masks of the rows that train with them: ``--photos-data`` or the shared set."""
    return Path(args.photos_data) if getattr(args, "photos_data", None) else DEFAULT_PHOTOS


def _row_name(figures: dict[str, Any]) -> str:
    """The trained row a line of the table belongs to ("bins v=0.45 bilinear" -> "bins")."""
    return figures["row"].split(" ")[0]


def _protocol(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """What every row of one table shares (compared before rows of an earlier table are kept)."""
    return portable({"data": str(root), "photos": str(_photos_root(args)), "val_fraction": VAL_FRACTION,
                     "epochs_by_size": {str(k): v for k, v in EPOCHS_BY_SIZE.items()},
                     "photo_rows": "epochs x (1 - photos share): the same images per row",
                     "batch_per_worker": BATCH, "workers": 1, "cpus_per_worker": 2, "lr": LR,
                     "limit": args.limit,
                     "vividness": list(VIVIDNESS), "default_vividness": DEFAULT_VIVIDNESS,
                     "default_refine": DEFAULT_REFINE,
                     "evaluation": "full resolution on the validation split; gray baseline = AB 0; boundary IoU "
                                   f"of the foreground at {BOUNDARY_TOLERANCE_PX} px"})


def kept_rows(out: str, protocol: dict[str, Any], rerun: list[str]) -> list[dict[str, Any]]:
    """The lines of ``OUT/quality.json`` whose trained row is not in ``rerun``, if that table was measured under
    ``protocol``; else none (a table never mixes protocols)."""
    import json

    url = storage.join(out, "quality.json")
    if not storage.exists(url):
        return []
    earlier = json.loads(storage.read_text(url))
    if earlier.get("protocol") != protocol:
        print(f"[quality] {url} was measured under another protocol; its rows are not kept", flush=True)
        return []
    kept = [r for r in earlier["rows"] if _row_name(r) not in rerun]
    if kept:
        print(f"[quality] keeping {len(kept)} lines of {url} (rows {sorted({_row_name(r) for r in kept})})",
              flush=True)
    return kept


def row_frontiers(rows: list[dict[str, Any]]) -> dict[str, dict[str, float] | None]:
    """The :func:`frontier` of each trained row measured at several vividness values (guided upsampling), keyed
    ``ROW`` (no test-time augmentation) or ``ROW TTA`` (e.g. ``bins flip``)."""
    frontiers = {}
    for row in ROWS:
        for tta in TTA_MODES:  # a row's frontier with each test-time augmentation it was measured with
            points = [(r["detail"]["vividness"], r["colorfulness_ratio"], r["psnr_minus_gray"]) for r in rows
                      if r["row"].startswith(f"{row.name} v=") and r["detail"]["refine"] == DEFAULT_REFINE
                      and r["detail"].get("tta", DEFAULT_TTA) == tta]
            if points:
                frontiers[row.name if tta == DEFAULT_TTA else f"{row.name} {tta}"] = frontier(points)
    return frontiers


def _write(args: argparse.Namespace, root: Path, rows: list[dict[str, Any]]) -> None:
    """The frontier of the rows so far, and ``OUT/quality.json``."""
    frontiers = row_frontiers(rows)
    print(f"frontier (PSNR - gray at colorfulness {FRONTIER_COLORFULNESS} of the truth): {frontiers}", flush=True)
    write_result(args.out, "quality", {
        "protocol": _protocol(args, root),
        "rows": rows,
        "frontier": {"colorfulness_ratio": FRONTIER_COLORFULNESS, "by_row": frontiers},
    })
