"""Shared fixtures: one local Ray per test session, a real S3 server (moto) on loopback, tiny checkpoints.

Unit tests use none of these. Integration tests ask for ``ray_local`` and/or ``s3_server``.
"""

from __future__ import annotations

import contextlib
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


@pytest.fixture(scope="session", autouse=True)
def semcolor_cache(tmp_path_factory) -> Iterator[Path]:
    """The session's own $SEMCOLOR_CACHE (ONNX exports ~100 MB each, the LAB table), set before any Ray or command
    starts so that their processes inherit it: tests never fill the user's cache, nor find exports an earlier run
    left there (every run pays what a fresh machine pays)."""
    from semcolor.core.cache import CACHE_ENV

    folder = tmp_path_factory.mktemp("semcolor-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(folder))
        yield folder


LANES = {True: "own-ray", False: "session-ray"}
"""pytest-xdist groups (``make test`` runs ``-n 2 --dist loadgroup``): the tests that start a Ray or cluster of their
own (marked ``own_ray``: several nodes, a ``ray start --head``, commands that start their own) run in one worker,
all the others (the session's ``ray_local``, moto, Serve, the unit tests) in the other. Both lanes spend a third
of their time waiting on start-ups and polls, so on 2 cores they overlap well (measured: 8 min 14 s for both at
once against 11-12 min one after the other), and no worker starts a second session Ray beside a cluster."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put every test in its lane (:data:`LANES`) when pytest-xdist distributes them."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        item.add_marker(pytest.mark.xdist_group(LANES[item.get_closest_marker("own_ray") is not None]))


@contextlib.contextmanager
def served(*cli_args: str) -> Iterator[str]:
    """``semcolor serve CLI_ARGS --host 127.0.0.1 --port <free> --no-blocking`` on the connected Ray; yields its
    base URL and deletes the app (and Serve) afterwards."""
    from ray import serve

    from semcolor.cli import build_parser
    from semcolor.serve.builder import APP_NAME, run_serve

    port = free_port()
    args = build_parser().parse_args(["serve", *cli_args, "--host", "127.0.0.1", "--port", str(port),
                                      "--no-blocking"])
    assert run_serve(args) == 0
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.delete(APP_NAME)
        serve.shutdown()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One local Ray (2 CPUs, no dashboard) for the whole session; shut down at the end."""
    import ray

    assert not ray.is_initialized(), "a test started Ray itself; Ray tests must use the ray_local fixture"
    # tests/ on the workers' path: test-only wrappers (tests/faults.py) run inside Ray workers.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO_ROOT / "tests")}})
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture
def quick_ray_train(monkeypatch) -> None:
    """Ray Train's controller polls its workers (health, reports, the end of the run) every 0.5 s instead of 2 s,
    and starts no preemption watcher (one actor process less per worker group; a test run is never drained). Set
    in this process: Ray Train passes its RAY_TRAIN_* variables on to the controller it starts."""
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict]:
    """moto's S3 server in its own process on 127.0.0.1 and a free port: a real HTTP endpoint, stopped by its pid.

    Yields ``{"endpoint": "http://127.0.0.1:PORT", "bucket": name}``; sets AWS_* so storage.py finds it.
    """
    from semcolor.benchmarks._local import moto_s3

    bucket = "semcolor-test"
    with moto_s3(bucket) as (endpoint, _pid):
        yield {"endpoint": endpoint, "bucket": bucket}


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
