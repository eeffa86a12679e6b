"""EvaluateConfig: the options of one evaluation, declared once (the CLI, jobs and Python callers read them)."""

from __future__ import annotations

from dataclasses import dataclass

from semcolor.core.decode import DEFAULT_MAX_PIXELS
from semcolor.core.flip_average import check_tta, tta_option
from semcolor.core.refine import check_refine, refine_option
from semcolor.data.pairs import images_option, manifest_option, masks_option
from semcolor.model.config import check_vividness, vividness_option
from semcolor.options import option


@dataclass(kw_only=True)
class EvaluateConfig:
    """One evaluation: a checkpoint measured on image/mask pairs at the sources' full resolution."""

    checkpoint: str = option(help="model directory URL (config.json + model.safetensors, or a Ray Train checkpoint)")
    images: str | None = images_option()
    masks: str | None = masks_option()
    manifest: str | None = manifest_option()
    out: str = option(help="output folder URL: metrics.json and grid.png")
    limit: int | None = option(None, help="evaluate only the first N pairs (after the split)")
    size: int | None = option(None, help="model resolution in pixels; default the checkpoint's input size")
    vividness: float = vividness_option()
    refine: str = refine_option()
    tta: str = tta_option()
    batch_size: int = option(16, help="images per model batch")
    val_fraction: float | None = option(None, help="evaluate only the validation split of this fraction (the hash "
                                        "split `semcolor train` uses)")
    grid_rows: int = option(8, help="rows (pairs) drawn in grid.png; 0 draws none")
    actors: int = option(1, help="model actors")
    cpus_per_actor: float = option(1.0, help="CPUs (and torch threads) per model actor")
    gpus_per_actor: float = option(0.0, help="GPUs per model actor")
    max_pixels: int = option(DEFAULT_MAX_PIXELS, help="pairs with more pixels are recorded as too_large")

    def __post_init__(self) -> None:
        check_vividness(self.vividness)
        check_refine(self.refine)
        check_tta(self.tta)
        if self.batch_size <= 0 or self.actors <= 0 or self.grid_rows < 0 or self.cpus_per_actor <= 0:
            raise ValueError(f"need batch_size > 0, actors > 0, cpus_per_actor > 0, grid_rows >= 0; got "
                             f"{self.batch_size}, {self.actors}, {self.cpus_per_actor}, {self.grid_rows}")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"limit must be positive, got {self.limit}")
