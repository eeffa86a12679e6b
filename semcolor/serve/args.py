"""The arguments of the semcolor Serve application, declared once: ``serve run`` / config-file ``args``, the
``semcolor serve`` flags and each replica's settings all come from :class:`ServeArgs`."""

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from semcolor.core.flip_average import DEFAULT_TTA
from semcolor.core.refine import DEFAULT_REFINE
from semcolor.model.onnx_format import check_backend, check_precision
from semcolor.options import option


@dataclass(frozen=True)
class ServiceSettings:
    """What one replica needs; built by :meth:`ServeArgs.settings` (no defaults of its own)."""

    checkpoint: str
    device: str
    size: int | None  # model resolution; None = the checkpoint's input_size
    max_batch_size: int
    batch_wait_timeout_s: float
    max_body_bytes: int
    max_pixels: int
    torch_threads: int
    jpeg_quality: int
    refine: str
    backend: str = "auto"  # auto | torch | onnxruntime on CPU; a GPU replica always runs torch
    precision: str = "auto"  # auto | bf16 | fp32: the torch forward's (bf16 runs torch on a CPU replica too)
    tta: str = DEFAULT_TTA  # none | flip (semcolor.core.flip_average)


class ServeArgs(BaseModel):
    """Arguments of the ``semcolor.serve:app`` builder (``serve run ... key=value`` or a config file's ``args``)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(description="model directory URL (config.json + model.safetensors)")
    device: str = Field("auto", description="auto (cuda when the replica has a GPU), cpu, cuda, cuda:N")
    size: int | None = Field(None, ge=32, description="model resolution; default: the checkpoint's input_size")
    max_batch_size: int = Field(8, ge=1, description="most requests stacked into one forward")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="how long a batch waits to fill, seconds",
                                        json_schema_extra={"flag": "--batch-wait-timeout"})
    max_body_mb: float = Field(25.0, gt=0, description="largest request body, MiB (413 above)")
    max_pixels: int = Field(50_000_000, gt=0, description="largest image, width x height (413 above)")
    num_replicas: int | Literal["auto"] = Field(1, description="fixed replica count, or 'auto' (Serve's defaults)",
                                                json_schema_extra={"cli": False})
    autoscaling_config: dict[str, Any] | None = Field(
        None, description="Serve autoscaling_config (min_replicas, max_replicas, target_ongoing_requests, ...)",
        json_schema_extra={"cli": False})
    max_ongoing_requests: int | None = Field(
        None, ge=1, description="requests a replica takes at once; default 4 x max_batch_size")
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per replica (and its torch threads)",
                            json_schema_extra={"flag": "--cpus-per-replica"})
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (fractions share a GPU)",
                            json_schema_extra={"flag": "--gpus-per-replica"})
    torch_threads: int | None = Field(None, ge=1, description="model intra-op threads (torch or onnxruntime); "
                                      "default max(1, num_cpus)")
    backend: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="inference backend: auto (onnxruntime on CPU replicas, torch on GPU ones: the fastest "
        "measured on each), torch, or onnxruntime (CPU; the checkpoint is exported to ONNX and verified against "
        "torch once per node at replica start; a .onnx file from `semcolor export` is taken as it is). GPU replicas "
        "always run torch")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="the torch forward's precision: auto (bf16 autocast on GPU replicas, fp32 on CPU ones), "
        "bf16 (autocast and channels_last on CPU too: on a CPU with AMX about 1.6x onnxruntime's images/s, "
        "with AVX-512 BF16 1.0-1.45x, `semcolor bench model`; outputs within 2 LAB units of fp32; runs on the "
        "torch backend, so --backend auto then picks torch), or fp32")
    jpeg_quality: int = Field(90, ge=1, le=95, description="quality of JPEG answers (?format=jpeg)")
    refine: Literal["guided", "bilinear"] = Field(
        DEFAULT_REFINE, description="upsampling of colors and masks to the source's size: guided (by the "
        "full-resolution lightness; edges stay sharp) or bilinear")
    tta: Literal["none", "flip"] = Field(
        DEFAULT_TTA, description="test-time augmentation: none, or flip (each image and its mirror in one batch, "
        "their colors and masks averaged: twice the model's work per request)")

    @field_validator("autoscaling_config", mode="before")
    @classmethod
    def _json_autoscaling(cls, value: Any) -> Any:
        """Accept a JSON string from ``serve run ... autoscaling_config='{"max_replicas": 4}'``."""
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"autoscaling_config is not JSON: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ServeArgs":
        if self.autoscaling_config is not None and "num_replicas" in self.model_fields_set \
                and self.num_replicas != "auto":
            raise ValueError("give either num_replicas (fixed) or autoscaling_config, not both")
        check_backend(self.backend, self.checkpoint)
        check_precision(self.precision, self.backend, self.checkpoint)
        if isinstance(self.num_replicas, int) and self.num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1 or 'auto'; got {self.num_replicas}")
        return self

    def settings(self) -> ServiceSettings:
        """What each replica gets."""
        return ServiceSettings(
            checkpoint=self.checkpoint,
            device=self.device,
            size=self.size,
            max_batch_size=self.max_batch_size,
            batch_wait_timeout_s=self.batch_wait_timeout_s,
            max_body_bytes=int(self.max_body_mb * 1024 * 1024),
            max_pixels=self.max_pixels,
            torch_threads=self.torch_threads or max(1, int(self.num_cpus)),
            jpeg_quality=self.jpeg_quality,
            refine=self.refine,
            backend=self.backend,
            precision=self.precision,
            tta=self.tta,
        )

    def deployment_options(self) -> dict[str, Any]:
        """Options for ``SemcolorService.options(...)``: resources, concurrency, replicas or autoscaling."""
        options: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            # A replica must hold at least a full batch, plus the requests decoding while a batch runs.
            "max_ongoing_requests": self.max_ongoing_requests or 4 * self.max_batch_size,
        }
        if self.autoscaling_config is not None:
            options["autoscaling_config"] = self.autoscaling_config
        else:
            options["num_replicas"] = self.num_replicas
        return options


@dataclass(kw_only=True)
class ServeCommand:
    """What ``semcolor serve`` adds to :class:`ServeArgs`: where to listen, replicas as N or MIN:MAX, blocking."""

    host: str = option("127.0.0.1", help="address Serve's HTTP proxy binds (0.0.0.0 for every interface)")
    port: int = option(8000, help="HTTP port")
    proxy_location: str = option("EveryNode", choices=("EveryNode", "HeadOnly"), help="where Serve runs its HTTP "
                                 "proxies: on every node (a load balancer in front spreads clients over them) or on "
                                 "the head node only")
    replicas: str = option("1", help="replicas: N, or MIN:MAX to autoscale (one full batch of ongoing requests per "
                           "replica as the target)")
    blocking: bool = option(True, help="keep running until Ctrl-C or SIGTERM (--no-blocking returns once the "
                            "application is up; needs a Ray cluster that outlives the command)")
