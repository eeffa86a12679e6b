"""Shared fixtures: one local Ray per test session, a real S3 server (moto) on loopback, tiny checkpoints.

Unit tests use none of these. Integration tests ask for ``ray_local`` and/or ``s3_server``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_ECSSD = REPO_ROOT.parent / "shared" / "datasets" / "ecssd"

# Local Rays started by the tests run without token auth; set explicitly (Ray 2.60 defaults to token auth).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Keep Ray quiet and small on a 2-core machine.
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One local Ray (2 CPUs, no dashboard) for the whole session; shut down at the end."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}})
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict]:
    """moto's S3 server on 127.0.0.1 and a free port: a real HTTP endpoint.

    Yields ``{"endpoint": "http://127.0.0.1:PORT", "bucket": name}``; sets AWS_* so storage.py finds it.
    """
    from moto.server import ThreadedMotoServer
    import boto3

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    bucket = "semcolor-test"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    try:
        yield {"endpoint": endpoint, "bucket": bucket}
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_prefix(s3_server: dict) -> str:
    """A fresh s3:// prefix in the test bucket."""
    return f"s3://{s3_server['bucket']}/{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def ecssd_dir() -> Path:
    """The shared ECSSD folder (images/, masks/); skips with a reason when it is not beside the repo."""
    if not (SHARED_ECSSD / "images").is_dir():
        pytest.skip(f"ECSSD not found at {SHARED_ECSSD} (needs ../shared beside the checkout)")
    return SHARED_ECSSD
