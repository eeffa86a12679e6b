"""Online colorization with Ray Serve: the application builder ``semcolor.serve:app`` and ``semcolor serve``.

Three ways to start the same application (the replica and its routes live in :mod:`semcolor.serve.replica`)::

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
import os
import signal
import sys
import time
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from semcolor.ray_env import init_ray, require_cuda_where_gpus, require_shared_paths
from semcolor.serve.args import ServeArgs
from semcolor.serve.replica import SemcolorService

APP_NAME = "semcolor"


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
    from semcolor.options import config_from_args

    return config_from_args(ServeArgs, args, **parse_replicas(args.replicas, args.max_batch_size))


def _deploy_failure(exc: Exception) -> str:
    """One line on why ``serve.run`` failed: the last error line of a failed deployment's status message (which
    holds the replica's traceback), else of the exception itself."""
    messages = [str(exc)]
    try:
        status = serve.status().applications.get(APP_NAME)
        if status is not None:
            messages = [d.message for d in status.deployments.values() if d.message] + [status.message] + messages
    except Exception:  # the controller may be gone too; the exception's own text is what is left
        pass
    for message in messages:
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line.split(":")[0] or line.startswith("Error")]
        if errors:
            return errors[-1]
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def run_serve(args: argparse.Namespace) -> int:
    """``semcolor serve``: deploy the app on ``--host``:``--port`` (127.0.0.1:8000) and block until Ctrl-C
    or SIGTERM, then delete the app (and stop the local Ray it started).

    Uses the Ray this process is already connected to, else ``--address`` / ``RAY_ADDRESS``, else starts a
    local Ray. ``--no-blocking`` returns after the deployment is up; it needs a Ray that outlives this
    command (a cluster, or a Ray this process initialized itself).
    """
    serve_args = serve_args_from_cli(args)
    address = args.address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized() and address is None and not args.blocking:
        print("semcolor serve: --no-blocking needs a running Ray cluster (--address or RAY_ADDRESS); "
              "a local Ray started here would stop when this command exits", file=sys.stderr)
        return 2
    from semcolor.model.inference import model_config_of

    model_config_of(serve_args.checkpoint)  # a bad model fails here, in one line, before any replica starts
    started_ray = init_ray(args.address, args.num_cpus)
    require_shared_paths({"--checkpoint": serve_args.checkpoint}, args.shared_path)
    require_cuda_where_gpus("--gpus-per-replica", serve_args.num_gpus)
    if args.blocking:  # after ray.init, which installs its own: `kill` = Ctrl-C while this command owns the app
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        serve.start(proxy_location=args.proxy_location, http_options={"host": args.host, "port": args.port})
        try:
            serve.run(app(serve_args), name=APP_NAME, route_prefix="/")
        except Exception as exc:  # a replica that fails to start: its traceback is in the deployment's status
            print(f"semcolor serve: the application did not start: {_deploy_failure(exc)}", file=sys.stderr)
            _stop(started_ray)
            return 1
        print(f"semcolor serving {args.checkpoint} at http://{args.host}:{args.port}/ "
              f"(API docs: /docs; app name {APP_NAME!r})", flush=True)
        if not args.blocking:
            return 0
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("semcolor serve: stopping", file=sys.stderr, flush=True)
        _stop(started_ray)
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop(started_ray: bool) -> None:
    """Take the application down: a local Ray this command started is shut down with everything in it (its
    processes may already have had the same SIGTERM); on a cluster the app is deleted and the cluster stays."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM while stopping must not cut it short
    if started_ray:
        ray.shutdown()
    else:
        serve.delete(APP_NAME)
