"""Starting or joining Ray for the train/evaluate commands, and the storage settings Ray processes need."""

from __future__ import annotations

import os

from semcolor import storage

AWS_ENV: tuple[str, ...] = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Join ``address`` (else RAY_ADDRESS), or start a new local Ray with ``num_cpus`` (never silently joins another
    local cluster); a no-op when this process is already connected."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)


def storage_env(urls: list[str | None]) -> dict[str, str]:
    """The driver's AWS_* variables when any URL is s3://, for Ray workers started before they were set
    (pass as ``runtime_env={"env_vars": ...}``); empty otherwise."""
    if not any(u and storage.scheme_of(u) in ("s3", "s3a") for u in urls):
        return {}
    return {k: os.environ[k] for k in AWS_ENV if k in os.environ}
