"""TrainConfig: every knob of a training run, validated once, shared by the driver (driver.py) and the workers
(loop.py). Plain data (JSON-serialisable), so it travels to Ray workers and into run records as it is."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from semcolor.data.pairs import images_option, manifest_option, masks_option
from semcolor.model.config import (
    ARCHS,
    COLOR_HEADS,
    COLOR_LOSSES,
    COLOR_MASKS,
    MASK_LOSSES,
    PRECISIONS,
    SEG_DECODERS,
    SEG_STRIDES,
    LossConfig,
    ModelConfig,
)
from semcolor.options import option, parse_count_range

BINS_COLOR_WEIGHT = 0.3
"""Default weight of the bins head's color loss (see ``TrainConfig.color_weight``)."""


def _url_list(value: str | list[str], need: str) -> list[str]:
    """A repeatable URL option's value (one URL or a list) -> a list of non-empty URLs; else ValueError ``need``."""
    urls = [str(u) for u in ([value] if isinstance(value, str) else value)]
    if not urls or any(not u for u in urls):
        raise ValueError(f"{need}; got {urls!r}")
    return urls


@dataclass(kw_only=True)
class TrainConfig:
    """A training run. Sizes in pixels, learning rates per step, times in minutes.

    Data: ``images`` + ``masks`` (two prefixes) or ``manifest``; with none of them, ``synth_n`` synthetic pairs are
    generated into the run directory (and the log says so). The split is a hash of each key (seed 0), so
    ``semcolor evaluate --val-fraction`` sees the same validation pairs.
    """

    images: str | None = images_option()
    masks: str | None = masks_option()
    manifest: str | None = manifest_option()
    photos: list[str] | None = option(None, help="colour photos without masks (a prefix, or a manifest whose mask "
                                      "column is empty; repeatable): they join the training stream and teach "
                                      "colour only (their pixels count in the colour loss and in the AB prior, never "
                                      "in the segmentation loss); each batch holds --photos-share of them")
    photos_share: float = option(0.5, help="with --photos: the share of each batch (of --batch-size per worker) "
                                 "that is photos without masks; an epoch is one pass over the labelled pairs")
    train_pairs: list[str] | None = option(None, help="more image/mask pairs that only train, never validate (a "
                                           "manifest; repeatable): e.g. pseudo-labels, the masks a trained model "
                                           "drew for photos without masks (`semcolor colorize --masks`, then "
                                           "`semcolor manifest`); the validation split stays the main pairs'")
    arch: str = option("unet", choices=ARCHS, help="network: unet (skip connections) or resnet34 (the reference's "
                       "transposed-conv decoder)")
    n_classes: int = option(2, help="segmentation classes: 2 = binary masks (value > 127 is foreground); more = "
                            "class-id masks, 255 = ignore")
    size: int = option(128, help="training resolution in pixels (images are squashed to size x size)")
    pretrained: str | None = option(None, help="encoder weights: 'imagenet' (torchvision download) or a local "
                                    ".safetensors / state-dict file; default random init")
    init: str | None = option(None, help="a semcolor checkpoint (a run's checkpoint folder, local or s3://) whose "
                              "weights start this run: every tensor it shares with this model by name and shape "
                              "(encoder, decoder, colour head), the rest at its init; the AB prior is this run's "
                              "data's. E.g. the last checkpoint of a colour-only pre-training (--seg-weight 0 "
                              "--mask-loss none --photos URL). Not a resume: the run starts at epoch 0")
    shared_lr_scale: float = option(1.0, help="learning rate of the weights the mask shares with the colour "
                                    "(encoder, decoder, colour head) as a multiple of --lr; the mask's own (its "
                                    "head and refiner stages) learn at --lr. E.g. 0.1 after a colour-only --init "
                                    "stage: the mask learns on its colour features without unlearning them; 0 "
                                    "freezes them (and their normalisation statistics)")
    epochs: int = option(10, help="epochs to train (a resumed run continues up to this many)")
    batch_size: int = option(16, help="images per step per worker; the global batch is batch_size x workers")
    lr: float = option(1e-3, help="peak AdamW learning rate, reached after the warm-up")
    weight_decay: float = option(1e-4, help="AdamW weight decay (not applied to norms and biases)")
    warmup_epochs: float = option(1.0, help="epochs of linear learning-rate warm-up")
    min_lr_ratio: float = option(0.02, help="the cosine decays the learning rate to lr x min_lr_ratio at the last "
                                 "step")
    grad_clip: float = option(1.0, help="max global L2 norm of the gradients (0 disables clipping)")
    seg_weight: float = option(1.0, help="weight of the segmentation cross-entropy in the loss")
    color_weight: float | None = option(None, help="weight of the color term in the loss; default 1 for the "
                                        "regression head, 0.3 for the bins head (whose cross-entropy over 261 bins "
                                        "is ~5x the segmentation's and would otherwise drown it)")
    color_mask: str = option("all", choices=COLOR_MASKS, help="pixels the color loss counts: all, or foreground "
                             "only (the reference's choice, which never learns background color)")
    color_head: str = option("bins", choices=COLOR_HEADS, help="bins: a distribution over 261 in-gamut AB bins "
                             "(rebalanced soft-target cross-entropy; vivid colors, decoded at --vividness); "
                             "regression: AB by tanh (the first model; tends to sepia)")
    rebalance: float = option(0.8, help="bins head: mix of the rebalancing weights with uniform, 1 / ((1 - m) prior "
                              "+ m / Q); 1 = no rebalancing, nearer 1 = milder (Zhang et al. use 0.5, which buys "
                              "color with accuracy; vividness then adds color at inference)")
    seg_to_color: bool = option(False, help="feed the segmentation probabilities to the color head (the "
                                "segmentation -> color link)")
    color_loss: str = option("mse", choices=COLOR_LOSSES, help="regression head: its loss on AB")
    seg_stride: int = option(1, choices=SEG_STRIDES, help="stride of the segmentation logits: 4 = at the decoder's "
                             "1/4 resolution with the color head, 2 = one more light stage on the encoder's "
                             "stride-2 features, 1 = and one at full resolution on the L image (masks that follow "
                             "edges)")
    seg_decoder: str = option("shared", choices=SEG_DECODERS, help="where the segmentation path starts: shared = "
                              "the colour head's decoder (the heads compete for its features), own = a decoder of "
                              "its own at half the channels on the same encoder (the heads share only the encoder; "
                              "+1.3 GFLOPs per 256 x 256 image, `semcolor bench model`)")
    mask_loss: str = option("lovasz", choices=MASK_LOSSES, help="a region term beside the segmentation "
                            "cross-entropy, scored per image: dice, or lovasz (Lovasz-softmax, a surrogate of the "
                            "IoU), or none")
    mask_loss_weight: float = option(1.0, help="weight of --mask-loss relative to the cross-entropy")
    workers: int | str = option(1, help="Ray Train workers (data-parallel DDP): N, or MIN:MAX for elastic training "
                                "(starts with as many as the cluster holds, at least MIN; a lost node shrinks the "
                                "group, a node added grows it, each time from the last checkpoint). The batch per "
                                "worker stays --batch-size; the learning rate follows the global batch: --lr is the "
                                "peak at MAX workers, lr x W / MAX with W")
    resize_interval: float = option(60.0, help="elastic training: seconds between checks for room to grow the "
                                    "worker group")
    cpus_per_worker: float = option(2.0, help="Ray CPUs per worker; torch uses max(1, round(cpus_per_worker)) "
                                    "threads. The default layout, 1 worker x 2 CPUs, on one 2-core node: "
                                    "0.88-0.92 of the model-only bound at 128 px, 2 workers x 1 0.79-0.93 "
                                    "(`semcolor bench train` on two hosts), no all-reduce; 1.99 in bf16 with AMX "
                                    "(--precision bf16 --channels-last); across nodes, one worker per node")
    gpus_per_worker: float = option(0.0, help="GPUs per worker (> 0: CUDA, NCCL, bf16 autocast)")
    storage: str = option("runs", help="run storage: a local folder or s3:// (any URL semcolor.core.storage "
                          "accepts with a pyarrow filesystem)")
    name: str | None = option(None, help="run name (the run directory is STORAGE/NAME); rerunning with the same "
                              "name resumes from its last checkpoint; default arch-size-timestamp")
    val_fraction: float = option(0.2, help="share of pairs held out for validation (a hash of each key, so "
                                 "`semcolor evaluate --val-fraction` sees the same pairs)")
    limit: int | None = option(None, help="use only the first N pairs")
    synth_n: int = option(64, help="pairs to synthesize into the run directory when no data is given")
    seed: int = option(0, help="seed of initialisation, shuffling and augmentation")
    max_failures: int = option(2, help="worker failures Ray Train recovers from (from the last checkpoint)")
    keep: int = option(2, help="checkpoints kept: the best KEEP by validation mIoU (and the latest, for resuming)")
    time_budget: float | None = option(None, help="minutes of training, counted once the data is decoded: "
                                       "training stops after the epoch in which the budget runs out, and the cosine "
                                       "schedule anneals by the budget's end as well as by --epochs (whichever "
                                       "comes first)")
    shuffle_buffer: int = option(256, help="rows in each worker's local shuffle buffer")
    channels_last: bool | None = option(None, help="channels-last memory format for the model and its inputs; "
                                        "default: on CUDA only (on CPU in fp32 it measured no faster; with "
                                        "--precision bf16 on a CPU with AMX it is part of the 2x: `semcolor bench "
                                        "train`)")
    precision: str = option("auto", choices=PRECISIONS, help="forward precision: auto (bf16 autocast on CUDA, fp32 "
                            "on CPU), bf16 (autocast on CPU too), fp32")
    ddp_bucket_mb: float = option(25.0, help="DDP gradient bucket size in MB: each bucket's all-reduce starts as "
                                  "soon as its gradients are ready, overlapping the rest of the backward pass")
    augment: bool = option(True, help="training augmentation: random resized crops (--crop-scale-min to 100 %% of "
                           "the area, aspect 3:4 to 4:3, resized back: scale jitter) and horizontal flips, the same "
                           "for image and mask, and --lightness-jitter; --no-augment trains on the images as they are")
    crop_scale_min: float = option(0.5, help="with --augment: the least share of the image's area a random resized "
                                   "crop covers (up to all of it); lower is stronger scale jitter")
    lightness_jitter: float = option(0.0, help="with --augment: per-image contrast and brightness jitter of the "
                                     "gray input (L contrast x U(1-F, 1+F) about its mean, brightness + U(-F/2, "
                                     "F/2) of the L range, clipped); the colour and mask targets unchanged; 0 off")
    copy_paste: float = option(0.0, help="with --augment: the share of training images that get another labelled "
                               "image's foreground pasted in (scaled by 0.5-1 and placed at random; its mask with "
                               "it: simple copy-paste, new silhouettes in new surroundings each epoch); 0 off")
    ema: float = option(0.0, help="decay per step of an exponential moving average of the weights (e.g. 0.998: "
                        "about the last 500 steps), which is validated, checkpointed and served instead of the raw "
                        "weights (smoother across epochs); 0 off")
    start_timeout: float = option(10.0, help="minutes the run may wait for room for its workers (workers x "
                                  "--cpus-per-worker / --gpus-per-worker; MIN workers when elastic). A request the "
                                  "cluster can never hold (no autoscaler) is refused at once; one that could fit later "
                                  "(CPUs held by other work, nodes an autoscaler may add) waits, with a progress line "
                                  "every 30 s, before any data is read; past this it stops in one line (exit 2). Ray "
                                  "Train's own attempts to start the worker group (RAY_TRAIN_WORKER_GROUP_START_"
                                  "TIMEOUT_S each, 60 s by default), at the start and after a failure or resize, are "
                                  "bounded to about as long over the run")

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"Wrong arch {self.arch!r}; supported: {list(ARCHS)}")
        if (self.images is None) != (self.masks is None):
            raise ValueError("give both images and masks (two prefixes), or a manifest, or neither (synthetic data)")
        if self.manifest is not None and self.images is not None:
            raise ValueError("give either manifest or images + masks, not both")
        if self.photos is not None:
            self.photos = _url_list(self.photos, "--photos needs a URL (a prefix or a manifest)")
            if not 0.0 < self.photos_share < 1.0:
                raise ValueError(f"photos_share must be in (0, 1) (some pairs and some photos in each batch); got "
                                 f"{self.photos_share}")
            if self.color_mask == "foreground":
                raise ValueError("--photos with --color-mask foreground: photos have no foreground, so they would "
                                 "teach nothing; use --color-mask all (the default) with --photos")
            if min(self.photo_batch, self.batch_size - self.photo_batch) < 1:
                raise ValueError(f"photos_share {self.photos_share} of a batch of {self.batch_size} leaves "
                                 f"{self.photo_batch} photos and {self.batch_size - self.photo_batch} pairs per batch;"
                                 " need at least one of each (raise --batch-size or change --photos-share)")
        if self.train_pairs is not None:
            self.train_pairs = _url_list(self.train_pairs, "--train-pairs needs a manifest URL")
        self.workers = self._normalized_workers(self.workers)
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "size": self.size,
                    "synth_n": self.synth_n, "shuffle_buffer": self.shuffle_buffer}
        for key, value in positive.items():
            if value <= 0:
                raise ValueError(f"{key} must be positive; got {value}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1) (some pairs to train on, some to validate); "
                             f"got {self.val_fraction}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema is a decay per step, in [0, 1) (0: off); got {self.ema}")
        if not 0.0 <= self.copy_paste <= 1.0:
            raise ValueError(f"copy_paste is a share of the images, in [0, 1]; got {self.copy_paste}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0 or self.grad_clip < 0:
            raise ValueError(f"need lr > 0, weight_decay >= 0, warmup_epochs >= 0, grad_clip >= 0; got "
                             f"{self.lr}, {self.weight_decay}, {self.warmup_epochs}, {self.grad_clip}")
        if self.shared_lr_scale < 0:
            raise ValueError(f"shared_lr_scale must be >= 0 (0 freezes the shared weights); got "
                             f"{self.shared_lr_scale}")
        if not 0.0 < self.crop_scale_min <= 1.0:
            raise ValueError(f"crop_scale_min must be in (0, 1] (a share of the image's area); got "
                             f"{self.crop_scale_min}")
        if not 0.0 <= self.lightness_jitter < 1.0:
            raise ValueError(f"lightness_jitter must be in [0, 1) (0: off); got {self.lightness_jitter}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio}")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ValueError(f"need cpus_per_worker > 0 and gpus_per_worker >= 0; got {self.cpus_per_worker}, "
                             f"{self.gpus_per_worker}")
        if self.keep < 1 or self.max_failures < 0:
            raise ValueError(f"need keep >= 1 and max_failures >= 0; got {self.keep}, {self.max_failures}")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"limit must be positive; got {self.limit}")
        if self.resize_interval <= 0:
            raise ValueError(f"resize_interval must be positive seconds; got {self.resize_interval}")
        if self.ddp_bucket_mb <= 0:
            raise ValueError(f"ddp_bucket_mb must be positive; got {self.ddp_bucket_mb}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"time_budget must be positive minutes; got {self.time_budget}")
        self.model_config()  # validates n_classes, size, pretrained
        self.loss_config()  # validates the loss knobs

    @staticmethod
    def _normalized_workers(workers: int | str) -> int | str:
        """N (int or "N") -> N; "MIN:MAX" -> "MIN:MAX" (MIN = MAX -> that int)."""
        parsed = parse_count_range(workers, "workers")
        if isinstance(parsed, int):
            return parsed
        return parsed[0] if parsed[0] == parsed[1] else f"{parsed[0]}:{parsed[1]}"

    @property
    def photo_batch(self) -> int:
        """Photos without masks per batch per worker: ``round(photos_share x batch_size)``; 0 without --photos."""
        return int(round(self.photos_share * self.batch_size)) if self.photos else 0

    @property
    def pair_batch(self) -> int:
        """Labelled pairs per batch per worker (the rest of ``batch_size``)."""
        return self.batch_size - self.photo_batch

    @property
    def worker_range(self) -> tuple[int, int]:
        """(MIN, MAX) workers; MIN = MAX for a fixed group."""
        parsed = parse_count_range(self.workers, "workers")
        return parsed if isinstance(parsed, tuple) else (parsed, parsed)

    def lr_at(self, world: int) -> float:
        """Peak learning rate with ``world`` workers: --lr at MAX workers, scaled with the global batch (the linear
        scaling rule of Goyal et al. 2017; the batch per worker never changes)."""
        return self.lr * world / self.worker_range[1]

    def model_config(self) -> ModelConfig:
        return ModelConfig(arch=self.arch, n_classes=self.n_classes, input_size=self.size, pretrained=self.pretrained,
                           color_head=self.color_head, seg_to_color=self.seg_to_color, rebalance=self.rebalance,
                           seg_stride=self.seg_stride, seg_decoder=self.seg_decoder)

    def loss_config(self) -> LossConfig:
        color_weight = self.color_weight
        if color_weight is None:
            color_weight = BINS_COLOR_WEIGHT if self.color_head == "bins" else 1.0
        return LossConfig(seg_weight=self.seg_weight, color_weight=color_weight, color_mask=self.color_mask,
                          color_loss=self.color_loss, mask_loss=self.mask_loss,
                          mask_loss_weight=self.mask_loss_weight)

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
