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
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two lanes side by side on 2 cores: each lane's own torch work gets one thread. With torch's
    # default (one per core) both lanes' OpenMP teams spin-wait for cores the other lane holds: a 10-s CPU test
    # took 70-105 s beside the other lane. (Ray workers the tests start set their own threads.)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


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


OWN_RAY_MODULES = frozenset({"test_commands_at_once.py", "test_jobs_submit.py", "test_multinode.py",
                             "test_ray_workers.py"})
"""The modules whose integration tests start a Ray or cluster of their own (marked ``own_ray``): several nodes, a
``ray start --head``, commands that start their own local Ray."""

BALANCING_MODULES = frozenset({"test_infer.py"})
"""Session-Ray modules that run in the own-Ray lane all the same, so that both lanes take about as long (measured
with ``--durations=0``: without them the session lane took ~590 s of tests, the own-Ray lane ~470 s). That lane's
worker starts the session's Ray and moto too, as for test_multinode."""


def lane(nodeid: str) -> str:
    """The pytest-xdist lane of a test id: ``own-ray`` for the tests of :data:`OWN_RAY_MODULES` and
    :data:`BALANCING_MODULES`, ``session-ray`` for all others (the session's ``ray_local``, moto, Serve, the unit
    tests)."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return "own-ray" if module in OWN_RAY_MODULES | BALANCING_MODULES else "session-ray"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``make test`` runs ``-n 2``: one worker per :func:`lane`, whole (xdist's scope scheduling with the lane as the
    scope). Both lanes spend about a third of their time waiting on start-ups and polls, so on 2 cores they overlap
    well. The scheduler sees test ids only (workers collect, not this process), hence a list of modules; the
    ``own_ray`` mark must agree with it (checked at collection). Not ``xdist_group`` marks with ``--dist
    loadgroup``: under pytest 9.2 they silently stop taking effect (pytest-xdist issue 1386). The own-Ray worker
    starts the session's Ray too, for the one test that compares a cluster's outputs with it (test_multinode)."""
    from xdist.scheduler import LoadScopeScheduling

    class LaneScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return lane(nodeid)

    return LaneScheduling(config, log)


_WORKER_LANE: list[str] = []


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under ``-n 2`` or more, a worker that is given tests of both lanes stops with the reason (an xdist that no
    longer calls the scheduler hook above would otherwise mix them silently)."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) < 2:
        return
    this = lane(item.nodeid)
    _WORKER_LANE[:] = _WORKER_LANE or [this]
    if _WORKER_LANE[0] != this:
        raise RuntimeError(f"pytest-xdist gave worker {os.environ.get('PYTEST_XDIST_WORKER')} tests of lanes "
                           f"{_WORKER_LANE[0]} and {this} ({item.nodeid}): tests/conftest.py's scheduler was not used")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``own_ray`` outside :data:`OWN_RAY_MODULES` would share a worker with the session's Ray."""
    stray = [item.nodeid for item in items if item.get_closest_marker("own_ray") and lane(item.nodeid) != "own-ray"]
    if stray:
        raise pytest.UsageError(f"tests marked own_ray outside OWN_RAY_MODULES (tests/conftest.py): {stray}")


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
def s3_request_log(s3_server: dict, tmp_path, monkeypatch) -> Iterator[str]:
    """The S3 server behind the benchmarks' latency proxy (no delay) that logs every request: AWS_ENDPOINT_URL
    points at the proxy while the test runs. Yields the log's path
    (:func:`semcolor.benchmarks._latency_proxy.read_request_log` reads it)."""
    from semcolor.benchmarks._latency_proxy import latency_proxy

    log = str(tmp_path / "requests.log")
    with latency_proxy(int(s3_server["endpoint"].rsplit(":", 1)[1]), 0.0, log) as (endpoint, _pid):
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        yield log


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
