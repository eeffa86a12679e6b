"""TrainConfig: every knob of a training run, validated once, shared by the driver (train.py) and the workers
(train_loop.py). Plain data (JSON-serialisable), so it travels to Ray workers and into run records as it is."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from semcolor.losses import LossConfig
from semcolor.model import ARCHS, ModelConfig


@dataclass
class TrainConfig:
    """A training run. Sizes in pixels, learning rates per step, times in minutes.

    Data: ``images`` + ``masks`` (two prefixes) or ``manifest``; with none of them, ``synth_n`` synthetic pairs are
    generated into the run directory (and the log says so). The split is a hash of each key (seed 0), so
    ``semcolor evaluate --val-fraction`` sees the same validation pairs.
    """

    images: str | None = None
    masks: str | None = None
    manifest: str | None = None
    arch: str = "unet"
    n_classes: int = 2
    size: int = 128
    pretrained: str | None = None
    epochs: int = 10
    batch_size: int = 16
    """Per worker; the global batch is batch_size x workers."""
    lr: float = 1e-3
    """Peak AdamW learning rate, reached after the warm-up."""
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.02
    """The cosine decays the learning rate to lr x min_lr_ratio at the last step."""
    grad_clip: float = 1.0
    """Max global L2 norm of the gradients (0 disables clipping)."""
    seg_weight: float = 1.0
    color_weight: float = 1.0
    color_mask: str = "all"
    color_loss: str = "mse"
    workers: int = 2
    cpus_per_worker: float = 1.0
    """Ray CPUs per worker; torch uses max(1, round(cpus_per_worker)) threads."""
    gpus_per_worker: float = 0.0
    storage: str = "runs"
    """Run storage: a local folder or s3:// (any URL semcolor.storage accepts with a pyarrow filesystem)."""
    name: str | None = None
    """Run name; the run directory is storage/name. Reusing a name resumes that run from its last checkpoint."""
    val_fraction: float = 0.2
    limit: int | None = None
    synth_n: int = 64
    seed: int = 0
    max_failures: int = 2
    keep: int = 2
    """Checkpoints kept: the best ``keep`` by validation mIoU (the latest is always kept too, for resuming)."""
    time_budget: float | None = None
    """Minutes of training (counted from the trainer's start, after the data is decoded): training stops after
    the epoch in which the budget runs out, and the cosine schedule anneals by the budget's end as well as by
    ``epochs`` (whichever comes first), so a budgeted run ends with a low learning rate."""
    shuffle_buffer: int = 256
    """Rows in each worker's local shuffle buffer."""
    fault_after_epoch: int | None = None
    """TEST ONLY: rank 0's process exits once, right after reporting this epoch's checkpoint (a marker file in the
    run directory makes it fire once per run), to prove recovery through FailureConfig(max_failures)."""

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"Wrong arch {self.arch!r}; supported: {list(ARCHS)}")
        if (self.images is None) != (self.masks is None):
            raise ValueError("give both images and masks (two prefixes), or a manifest, or neither (synthetic data)")
        if self.manifest is not None and self.images is not None:
            raise ValueError("give either manifest or images + masks, not both")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "workers": self.workers,
                    "size": self.size, "synth_n": self.synth_n, "shuffle_buffer": self.shuffle_buffer}
        for key, value in positive.items():
            if value <= 0:
                raise ValueError(f"{key} must be positive; got {value}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1) (some pairs to train on, some to validate); "
                             f"got {self.val_fraction}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0 or self.grad_clip < 0:
            raise ValueError(f"need lr > 0, weight_decay >= 0, warmup_epochs >= 0, grad_clip >= 0; got "
                             f"{self.lr}, {self.weight_decay}, {self.warmup_epochs}, {self.grad_clip}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio}")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ValueError(f"need cpus_per_worker > 0 and gpus_per_worker >= 0; got {self.cpus_per_worker}, "
                             f"{self.gpus_per_worker}")
        if self.keep < 1 or self.max_failures < 0:
            raise ValueError(f"need keep >= 1 and max_failures >= 0; got {self.keep}, {self.max_failures}")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"limit must be positive; got {self.limit}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"time_budget must be positive minutes; got {self.time_budget}")
        self.model_config()  # validates n_classes, size, pretrained
        self.loss_config()  # validates the loss knobs

    def model_config(self) -> ModelConfig:
        return ModelConfig(arch=self.arch, n_classes=self.n_classes, input_size=self.size, pretrained=self.pretrained)

    def loss_config(self) -> LossConfig:
        return LossConfig(seg_weight=self.seg_weight, color_weight=self.color_weight, color_mask=self.color_mask,
                          color_loss=self.color_loss)

    @property
    def has_data(self) -> bool:
        return self.images is not None or self.manifest is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)
