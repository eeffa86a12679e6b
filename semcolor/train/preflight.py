"""Before a training run does any work: is there room for its workers, will there ever be, and how long to wait.

Ray Train v2 reserves exactly ``workers x resources_per_worker`` for the worker group (one placement group of one
bundle per worker, ``{"CPU": --cpus-per-worker, "GPU": --gpus-per-worker}``); its controller and helper actors ask
for no CPU. A bundle never spans nodes, so the workers a cluster can hold are counted node by node. The data
pipeline (decode, the AB prior) runs before the group starts and the datasets are materialized, so the group
may take every CPU (the default layout does: 1 worker x 2 CPUs on a 2-CPU Ray).

- :func:`decide`: pure (no Ray): start, wait, or refuse, with the line that says why.
- :func:`require_room`: the driver's call before any data is read: refuses what the cluster can never hold (no
  autoscaler), waits up to ``--start-timeout`` for what could fit later, with a progress line.
- :func:`start_retries` and :func:`start_errors`: bound Ray Train's own attempts to start the group. Left to its
  defaults, Ray Train v2 retries a start that timed out (``WorkerGroupStartupTimeoutError``, every
  ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S``, 60 s) forever (``FailureConfig.controller_failure_limit = -1``), and
  logs each retry at INFO, below the WARNING level semcolor runs it at: ``trainer.fit()`` never returned.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from semcolor.train.config import TrainConfig

log = logging.getLogger(__name__)

START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
"""Ray Train v2's timeout of one attempt to start the worker group (its placement group), seconds."""
RAY_START_TIMEOUT_S = 60.0
"""Ray Train v2's default for :data:`START_TIMEOUT_ENV`."""
REPORT_EVERY_S = 30.0
"""Seconds between progress lines while waiting for room."""
EPS = 1e-6


@dataclass(frozen=True)
class WorkerRequest:
    """What a run asks of the cluster: MIN..MAX workers (MIN = MAX for a fixed group), each with these resources."""

    min_workers: int
    max_workers: int
    cpus: float
    gpus: float = 0.0

    @classmethod
    def of(cls, config: TrainConfig) -> "WorkerRequest":
        low, high = config.worker_range
        return cls(low, high, float(config.cpus_per_worker), float(config.gpus_per_worker))

    @property
    def bundle(self) -> dict[str, float]:
        """One worker's resources, as Ray Train's ``resources_per_worker``."""
        return {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus > 0 else {})}

    def describe(self) -> str:
        """``--workers 2 x --cpus-per-worker 2 = 4 CPUs``; ``--workers 1:4 (at least 1) x (--cpus-per-worker 4,
        --gpus-per-worker 1) = 4 CPUs, 1 GPU``."""
        n = self.min_workers
        workers = f"--workers {n}" if n == self.max_workers else f"--workers {n}:{self.max_workers} (at least {n})"
        each = f"--cpus-per-worker {self.cpus:g}"
        if self.gpus > 0:
            each = f"({each}, --gpus-per-worker {self.gpus:g})"
        return f"{workers} x {each} = {_amounts({k: v * n for k, v in self.bundle.items()})}"


@dataclass(frozen=True)
class ClusterRoom:
    """The cluster as the request meets it: each alive node's total and free resources (same order), and whether an
    autoscaler may add nodes."""

    totals: Sequence[Mapping[str, float]]
    free: Sequence[Mapping[str, float]]
    autoscaler: bool


@dataclass(frozen=True)
class StartDecision:
    action: Literal["start", "wait", "refuse"]
    message: str
    """Refuse: the one line to stop with. Wait: why (what is asked, what is free). Start: empty."""


def workers_that_fit(bundle: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> int:
    """How many workers of ``bundle`` the ``nodes`` hold (a worker's bundle never spans nodes)."""
    need = {k: v for k, v in bundle.items() if v > 0}
    if not need:
        raise ValueError(f"a worker must ask for some resources; got {dict(bundle)}")
    return sum(min(math.floor(node.get(k, 0.0) / v + EPS) for k, v in need.items()) for node in nodes)


def _amounts(resources: Mapping[str, float]) -> str:
    """{"CPU": 4, "GPU": 2} -> '4 CPUs, 2 GPUs'."""
    return ", ".join(f"{v:g} {k}{'s' if v != 1 else ''}" for k, v in resources.items())


def _sum(nodes: Sequence[Mapping[str, float]], keys: Sequence[str]) -> dict[str, float]:
    return {k: sum(node.get(k, 0.0) for node in nodes) for k in keys}


def _cluster(room: ClusterRoom, keys: Sequence[str]) -> str:
    """'2 CPUs on 1 node' / '4 CPUs, 0 GPUs on 2 nodes (at most 2 CPUs, 0 GPUs on one)'."""
    n = len(room.totals)
    text = f"{_amounts(_sum(room.totals, keys))} on {n} node{'s' if n != 1 else ''}"
    if n > 1:
        most = {k: max(node.get(k, 0.0) for node in room.totals) for k in keys}
        text += f" (at most {_amounts(most)} on one)"
    return text


def decide(request: WorkerRequest, room: ClusterRoom) -> StartDecision:
    """Start when MIN workers fit the free resources now; refuse when they never can (the nodes' totals cannot
    hold them and no autoscaler may add nodes); wait otherwise."""
    bundle = request.bundle
    keys = list(bundle)
    need = request.min_workers
    if workers_that_fit(bundle, room.free) >= need:
        return StartDecision("start", "")
    hold = workers_that_fit(bundle, room.totals)
    if hold < need and not room.autoscaler:
        fixes = "--workers or --cpus-per-worker" + (" or --gpus-per-worker" if request.gpus > 0 else "")
        return StartDecision("refuse", (
            f"{request.describe()} asked, but this Ray cluster has {_cluster(room, keys)}, room for {hold} such "
            f"worker{'s' if hold != 1 else ''}, and no autoscaler to add nodes: training could never start; lower "
            f"{fixes}, or run on more (--num-cpus for a new local Ray, --address for a larger cluster)"))
    free = _amounts(_sum(room.free, keys))
    why = ("waiting for the autoscaler to add nodes" if hold < need
           else f"room for {hold} such when free; other work holds the rest now")
    return StartDecision("wait", f"{request.describe()} asked: {free} free of {_cluster(room, keys)} ({why})")


def cluster_room() -> ClusterRoom:
    """The connected Ray cluster's :class:`ClusterRoom`."""
    from semcolor.ray_env import autoscaler_present, node_resources

    totals, free = node_resources()
    return ClusterRoom(totals=totals, free=free, autoscaler=autoscaler_present())


def _request_from_autoscaler(bundles: list[dict[str, float]]) -> None:
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=bundles)


def wait_for_room(request: WorkerRequest, timeout_s: float, *, room: Callable[[], ClusterRoom] = cluster_room,
                  poll_s: float = 2.0, report_every_s: float = REPORT_EVERY_S,
                  ask_autoscaler: Callable[[list[dict[str, float]]], None] = _request_from_autoscaler) -> None:
    """Return once MIN workers fit the cluster's free resources; raise ValueError (one line) at once when they
    never can, or after ``timeout_s`` of waiting. While it waits: a progress line every ``report_every_s`` (what
    is asked, what is free, why it waits), and with an autoscaler, a standing request for the MIN workers'
    bundles (``ray.autoscaler.sdk.request_resources``, cleared when the wait ends: Ray Train asks for its own)."""
    current = room()
    decision = decide(request, current)
    if decision.action == "refuse":
        raise ValueError(decision.message)
    if decision.action == "start":
        return
    start = time.monotonic()
    deadline, next_report, asked = start + timeout_s, start, False
    try:
        while decision.action != "start":  # a "refuse" while waiting (nodes left): they may come back
            if current.autoscaler and not asked:
                ask_autoscaler([request.bundle] * request.min_workers)
                asked = True
            now = time.monotonic()
            if now >= deadline:
                raise ValueError(f"no room to start within --start-timeout {timeout_s / 60:g} min: "
                                 f"{decision.message}; free the resources, add nodes, or raise --start-timeout")
            if now >= next_report:
                log.warning("waiting for room to start training: %s; %.0f s left of --start-timeout %g min",
                            decision.message, deadline - now, timeout_s / 60)
                next_report = now + report_every_s
            time.sleep(max(0.0, min(poll_s, deadline - now)))
            current = room()
            decision = decide(request, current)
    finally:
        if asked:
            ask_autoscaler([])
    log.warning("room to start training after %.0f s of waiting", time.monotonic() - start)


def require_room(config: TrainConfig) -> None:
    """The driver's preflight, after Ray is connected and before any data is read (:func:`wait_for_room` with
    ``--start-timeout``)."""
    if not config.start_timeout > 0:
        raise ValueError(f"start_timeout must be positive minutes; got {config.start_timeout}")
    wait_for_room(WorkerRequest.of(config), 60.0 * config.start_timeout)


def start_attempt_s() -> float:
    """Seconds one Ray Train attempt to start the worker group waits for its placement group."""
    return float(os.environ.get(START_TIMEOUT_ENV, RAY_START_TIMEOUT_S))


def start_retries(config: TrainConfig) -> int:
    """``FailureConfig.controller_failure_limit``: the failed starts of the worker group Ray Train retries over the
    run, about ``--start-timeout`` minutes of attempts (Ray's default, -1, retries forever)."""
    return max(0, math.ceil(60.0 * config.start_timeout / start_attempt_s()) - 1)


@contextmanager
def start_errors(config: TrainConfig) -> Iterator[None]:
    """Around ``trainer.fit()``: Ray Train giving up on starting the worker group becomes one line (ValueError)."""
    from ray.train import ControllerError

    try:
        yield
    except ControllerError as exc:
        cause = exc.controller_failure
        kind = type(cause).__name__
        if kind not in ("WorkerGroupStartupTimeoutError", "WorkerGroupStartupFailedError",
                        "InsufficientClusterResourcesError"):
            raise
        lines = str(cause).strip().splitlines() or [kind]
        asked = WorkerRequest.of(config).describe()
        if kind == "InsufficientClusterResourcesError":  # the autoscaler's configured maximum is below the request
            raise ValueError(f"{asked}: more than this cluster's autoscaler may ever add ({' '.join(lines[:2])}); "
                             f"lower --workers or the resources per worker") from exc
        if kind == "WorkerGroupStartupFailedError":  # not a timeout: the workers failed to start, say why
            raise ValueError(f"{asked}: Ray Train's worker group failed to start: {kind}: {lines[0]}") from exc
        raise ValueError(
            f"{asked}: Ray Train could not start the worker group within --start-timeout {config.start_timeout:g} "
            f"min ({start_retries(config) + 1} attempts of {start_attempt_s():g} s, {START_TIMEOUT_ENV}): {kind}: "
            f"{lines[0].split('. ')[0]}") from exc
