"""Online colorization with Ray Serve: the application builder ``semcolor.serve:app`` and ``semcolor serve``.

Three ways to start the same application (the replica and its routes live in :mod:`semcolor.serve_app`)::

    semcolor serve --checkpoint s3://bucket/ckpt --port 8000 --replicas 1:4
    serve run semcolor.serve:app checkpoint=s3://bucket/ckpt max_batch_size=16
    serve deploy config.yaml   # applications: [{name: semcolor, import_path: semcolor.serve:app,
                               #                 route_prefix: /, args: {checkpoint: ..., num_gpus: 1}}]

``args`` are validated by :class:`ServeArgs` (strings from the command line are converted; unknown keys
are refused). The HTTP host/port belong to Serve itself (``serve.start(http_options=...)``, or
``http_options`` in a config file); ``semcolor serve`` binds 127.0.0.1 unless told otherwise.
"""

# No `from __future__ import annotations` here: Serve reads the builder's annotation at runtime to find ServeArgs.
import argparse
import json
import os
import signal
import sys
import threading
from typing import Any, Literal

import ray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from ray import serve
from ray.serve import Application

from semcolor.serve_app import SemcolorService, ServiceSettings

APP_NAME = "semcolor"


class ServeArgs(BaseModel):
    """Arguments of the ``semcolor.serve:app`` builder (``serve run ... key=value`` or a config file's ``args``)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(description="model directory URL (config.json + model.safetensors)")
    device: str = Field("auto", description="auto (cuda when the replica has a GPU), cpu, cuda, cuda:N")
    size: int | None = Field(None, ge=32, description="model resolution; default: the checkpoint's input_size")
    max_batch_size: int = Field(8, ge=1, description="most requests stacked into one forward")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="how long a batch waits to fill, seconds")
    max_body_mb: float = Field(25.0, gt=0, description="largest request body, MiB (413 above)")
    max_pixels: int = Field(50_000_000, gt=0, description="largest image, width x height (413 above)")
    num_replicas: int | Literal["auto"] = Field(1, description="fixed replica count, or 'auto' (Serve's defaults)")
    autoscaling_config: dict[str, Any] | None = Field(
        None, description="Serve autoscaling_config (min_replicas, max_replicas, target_ongoing_requests, ...)")
    max_ongoing_requests: int | None = Field(
        None, ge=1, description="requests a replica takes at once; default 4 x max_batch_size")
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per replica")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (fractions share a GPU)")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads; default max(1, num_cpus)")
    jpeg_quality: int = Field(90, ge=1, le=95)

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


def app(args: ServeArgs) -> Application:
    """The application builder behind ``semcolor.serve:app``; Serve validates ``args`` into :class:`ServeArgs`."""
    return SemcolorService.options(**args.deployment_options()).bind(args.settings())


def build_app(args: ServeArgs | dict[str, Any]) -> Application:
    """The same application from Python: a :class:`ServeArgs` or a dict of its fields."""
    return app(args if isinstance(args, ServeArgs) else ServeArgs.model_validate(args))


def parse_replicas(text: str, max_batch_size: int) -> dict[str, Any]:
    """``"N"`` -> ``{"num_replicas": N}``; ``"MIN:MAX"`` -> an autoscaling_config that targets one full batch
    of ongoing requests per replica. Raises ValueError on anything else."""
    parts = str(text).split(":")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--replicas must be N or MIN:MAX (autoscaling); got {text!r}") from None
    if len(numbers) == 1:
        return {"num_replicas": numbers[0]}
    if len(numbers) == 2 and 0 <= numbers[0] <= numbers[1] and numbers[1] >= 1:
        return {"autoscaling_config": {"min_replicas": numbers[0], "max_replicas": numbers[1],
                                       "target_ongoing_requests": max_batch_size}}
    raise ValueError(f"--replicas must be N or MIN:MAX with 0 <= MIN <= MAX, MAX >= 1; got {text!r}")


def serve_args_from_cli(args: argparse.Namespace) -> ServeArgs:
    """The ``semcolor serve`` flags as :class:`ServeArgs`."""
    return ServeArgs(
        checkpoint=args.checkpoint,
        size=args.size,
        max_batch_size=args.max_batch_size,
        batch_wait_timeout_s=args.batch_wait_timeout,
        max_body_mb=args.max_body_mb,
        max_pixels=args.max_pixels,
        num_cpus=args.cpus_per_replica,
        num_gpus=args.gpus_per_replica,
        **parse_replicas(args.replicas, args.max_batch_size),
    )


def run_serve(args: argparse.Namespace) -> int:
    """``semcolor serve``: deploy the app on ``--host``:``--port`` (127.0.0.1:8000) and block until Ctrl-C
    or SIGTERM, then delete the app (and stop the local Ray it started).

    Uses the Ray this process is already connected to, else ``--address`` / ``RAY_ADDRESS``, else starts a
    local Ray. ``--no-blocking`` returns after the deployment is up; it needs a Ray that outlives this
    command (a cluster, or a Ray this process initialized itself).
    """
    serve_args = serve_args_from_cli(args)
    started_ray = False
    if not ray.is_initialized():
        address = args.address or os.environ.get("RAY_ADDRESS")
        if address is None and not args.blocking:
            print("semcolor serve: --no-blocking needs a running Ray cluster (--address or RAY_ADDRESS); "
                  "a local Ray started here would stop when this command exits", file=sys.stderr)
            return 2
        if address is None:  # "local": never attach to a `ray start` cluster found in /tmp/ray by accident
            ray.init(address="local", num_cpus=args.num_cpus)
            started_ray = True
        else:
            ray.init(address=address)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(app(serve_args), name=APP_NAME, route_prefix="/")
    print(f"semcolor serving {args.checkpoint} at http://{args.host}:{args.port}/ "
          f"(API docs: /docs; app name {APP_NAME!r})", flush=True)
    if not args.blocking:
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())  # `kill`, `docker stop`: same as Ctrl-C
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    print("semcolor serve: stopping", file=sys.stderr, flush=True)
    serve.delete(APP_NAME)
    if started_ray:
        serve.shutdown()
        ray.shutdown()
    return 0
