"""A training run that cannot start says so: the room check before any data (unit: the decision, the wait with
a fake cluster), and on the session's 2-CPU Ray: ``semcolor train --workers 2`` (x 2 CPUs) is refused in one line,
a request that fits once other work lets go waits with a progress line and stops at ``--start-timeout``, and Ray
Train's own start of a group that cannot be placed ends instead of retrying forever (the hang it replaced)."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from semcolor.ray_env import node_types_autoscale
from semcolor.train.config import TrainConfig
from semcolor.train.preflight import (
    START_TIMEOUT_ENV,
    ClusterRoom,
    WorkerRequest,
    decide,
    require_room,
    start_retries,
    wait_for_room,
    workers_that_fit,
)

ONE_NODE = ({"CPU": 2.0, "memory": 8e9},)

# ---------------------------------------------------------------- unit


def room(totals=ONE_NODE, free=None, autoscaler=False) -> ClusterRoom:
    return ClusterRoom(totals=totals, free=totals if free is None else free, autoscaler=autoscaler)


def test_more_cpus_than_the_cluster_has_and_no_autoscaler_is_refused_naming_the_numbers_and_options() -> None:
    """The reported case: --workers 2 at the default 2 CPUs each, on a 2-CPU Ray."""
    decision = decide(WorkerRequest.of(TrainConfig(workers=2)), room())
    assert decision.action == "refuse"
    message = decision.message
    assert "\n" not in message
    for part in ("--workers 2 x --cpus-per-worker 2 = 4 CPUs", "2 CPUs on 1 node", "room for 1 such worker,",
                 "no autoscaler", "lower --workers or --cpus-per-worker", "--num-cpus", "--address"):
        assert part in message, (part, message)
    assert "--gpus-per-worker" not in message


def test_the_same_request_waits_when_an_autoscaler_may_add_nodes() -> None:
    decision = decide(WorkerRequest.of(TrainConfig(workers=2)), room(autoscaler=True))
    assert decision.action == "wait"
    assert "2 CPUs free of 2 CPUs on 1 node" in decision.message
    assert "waiting for the autoscaler to add nodes" in decision.message


def test_a_request_the_cluster_holds_waits_while_other_work_holds_the_cpus_and_starts_once_free() -> None:
    request = WorkerRequest.of(TrainConfig(workers=2, cpus_per_worker=1))
    busy = decide(request, room(free=({"CPU": 1.0},)))
    assert busy.action == "wait"
    assert "1 CPU free of 2 CPUs on 1 node (room for 2 such when free; other work holds the rest now)" in busy.message
    assert decide(request, room()).action == "start"


def test_a_worker_never_spans_nodes() -> None:
    """2 nodes of 1 CPU have 2 CPUs in all, but no room for one worker of 2 CPUs."""
    two = ({"CPU": 1.0}, {"CPU": 1.0})
    decision = decide(WorkerRequest.of(TrainConfig(workers=1)), room(totals=two))
    assert decision.action == "refuse"
    assert "2 CPUs on 2 nodes (at most 1 CPU on one), room for 0 such workers" in decision.message
    assert decide(WorkerRequest.of(TrainConfig(workers=2, cpus_per_worker=1)), room(totals=two)).action == "start"


def test_elastic_runs_need_room_for_min_workers_only() -> None:
    assert decide(WorkerRequest.of(TrainConfig(workers="1:4")), room()).action == "start"
    decision = decide(WorkerRequest.of(TrainConfig(workers="2:4")), room())
    assert decision.action == "refuse"
    assert "--workers 2:4 (at least 2) x --cpus-per-worker 2 = 4 CPUs" in decision.message


def test_gpus_are_counted_and_named() -> None:
    request = WorkerRequest.of(TrainConfig(workers=2, cpus_per_worker=1, gpus_per_worker=1))
    decision = decide(request, room())
    assert decision.action == "refuse"
    assert "--workers 2 x (--cpus-per-worker 1, --gpus-per-worker 1) = 2 CPUs, 2 GPUs" in decision.message
    assert "2 CPUs, 0 GPUs on 1 node, room for 0 such workers" in decision.message
    assert "--gpus-per-worker" in decision.message.split("lower", 1)[1]
    gpu_node = ({"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0})
    assert decide(request, room(totals=gpu_node)).action == "start"


def test_fractional_cpus_pack_without_float_error() -> None:
    assert workers_that_fit({"CPU": 0.1}, ({"CPU": 2.0},)) == 20
    assert workers_that_fit({"CPU": 0.5}, ({"CPU": 2.0}, {"CPU": 0.4})) == 4
    assert workers_that_fit({"CPU": 1.0, "GPU": 0.5}, ({"CPU": 8.0, "GPU": 1.0},)) == 2


class FakeCluster:
    """A cluster whose CPUs are held for the first ``busy_polls`` looks, and a record of autoscaler requests."""

    def __init__(self, busy_polls: int, autoscaler: bool = False) -> None:
        self.busy_polls, self.autoscaler, self.polls, self.asked = busy_polls, autoscaler, 0, []

    def room(self) -> ClusterRoom:
        self.polls += 1
        free = ({"CPU": 0.0},) if self.polls <= self.busy_polls else ONE_NODE
        return room(free=free, autoscaler=self.autoscaler)


def test_the_wait_says_why_and_returns_once_there_is_room(caplog) -> None:
    cluster = FakeCluster(busy_polls=3, autoscaler=True)
    request = WorkerRequest.of(TrainConfig(workers=2, cpus_per_worker=1))
    with caplog.at_level(logging.INFO, logger="semcolor.train.preflight"):
        wait_for_room(request, 60.0, room=cluster.room, poll_s=0.01, report_every_s=0.0,
                      ask_autoscaler=cluster.asked.append)
    assert cluster.polls == 4
    waits = [r.getMessage() for r in caplog.records if "waiting for room" in r.getMessage()]
    assert len(waits) == 3
    assert "--workers 2 x --cpus-per-worker 1 = 2 CPUs asked: 0 CPUs free of 2 CPUs on 1 node" in waits[0]
    assert "left of --start-timeout 1 min" in waits[0]
    assert "room to start training after" in caplog.records[-1].getMessage()
    # the autoscaler is asked for the workers' bundles while waiting, and the request is cleared after
    assert cluster.asked == [[{"CPU": 1.0}, {"CPU": 1.0}], []]


def test_the_wait_ends_at_its_timeout_in_one_line_and_clears_the_autoscaler_request() -> None:
    cluster = FakeCluster(busy_polls=10**9, autoscaler=True)
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"^no room to start within --start-timeout 0\.005 min: --workers 2 x "
                                         r"--cpus-per-worker 1 = 2 CPUs asked: 0 CPUs free") as err:
        wait_for_room(WorkerRequest(2, 2, 1.0), 0.3, room=cluster.room, poll_s=0.05,
                      ask_autoscaler=cluster.asked.append)
    assert 0.3 <= time.monotonic() - start < 5.0
    assert "\n" not in str(err.value) and "raise --start-timeout" in str(err.value)
    assert cluster.asked == [[{"CPU": 1.0}, {"CPU": 1.0}], []]


def test_no_wait_and_no_autoscaler_request_when_refused_or_free() -> None:
    for busy, request in ((10**9, WorkerRequest(3, 3, 1.0)), (0, WorkerRequest(2, 2, 1.0))):
        cluster = FakeCluster(busy_polls=busy)
        start = time.monotonic()
        try:
            wait_for_room(request, 60.0, room=cluster.room, poll_s=10.0, ask_autoscaler=cluster.asked.append)
        except ValueError as exc:
            assert busy and "could never start" in str(exc)
        assert time.monotonic() - start < 1.0 and cluster.polls == 1 and cluster.asked == []


def test_ray_trains_start_retries_are_bounded_by_the_start_timeout(monkeypatch) -> None:
    """Ray's default, controller_failure_limit -1, retries a start that timed out forever (the reported hang)."""
    monkeypatch.delenv(START_TIMEOUT_ENV, raising=False)
    assert start_retries(TrainConfig()) == 9  # 10 min default: 10 attempts of Ray's 60 s
    monkeypatch.setenv(START_TIMEOUT_ENV, "1")
    assert start_retries(TrainConfig(start_timeout=2 / 60)) == 1
    assert start_retries(TrainConfig(start_timeout=0.001)) == 0


def test_ray_train_giving_up_on_the_start_becomes_one_line_and_other_failures_pass_through(monkeypatch) -> None:
    from ray.train import ControllerError
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    from semcolor.train.preflight import start_errors

    monkeypatch.delenv(START_TIMEOUT_ENV, raising=False)
    with pytest.raises(ValueError) as err:
        with start_errors(TrainConfig(workers=2, cpus_per_worker=1)):
            raise ControllerError(WorkerGroupStartupTimeoutError(2))
    assert str(err.value) == (
        "--workers 2 x --cpus-per-worker 1 = 2 CPUs: Ray Train could not start the worker group within --start-timeout "
        "10 min (10 attempts of 60 s, RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S): WorkerGroupStartupTimeoutError: The "
        "worker group startup timed out after 60.0 seconds waiting for 2 workers")
    with pytest.raises(ControllerError):
        with start_errors(TrainConfig()):
            raise ControllerError(RuntimeError("a bug in a callback"))


def test_start_timeout_is_an_option_and_must_be_positive() -> None:
    from semcolor.cli import build_parser
    from semcolor.options import config_from_args

    args = build_parser(only="train").parse_args(["train", "--start-timeout", "0.5"])
    assert config_from_args(TrainConfig, args).start_timeout == 0.5
    assert TrainConfig().start_timeout == 10.0
    with pytest.raises(ValueError, match="start_timeout must be positive minutes"):
        require_room(TrainConfig(start_timeout=0))


def test_the_autoscaler_status_tells_a_configured_node_type_from_the_read_only_monitors() -> None:
    assert node_types_autoscale(["node_" + "ab" * 28]) is False
    assert node_types_autoscale(["node_" + "ab" * 28, "gpu_worker"]) is True
    assert node_types_autoscale(["ray.head.default"]) is True
    assert node_types_autoscale([]) is None


# ---------------------------------------------------------------- on the session's Ray (2 CPUs, no autoscaler)


def _hold_cpus(cpus: float):
    """A placement group holding ``cpus`` of the session's Ray (other work, as far as a run can tell)."""
    from ray.util.placement_group import placement_group

    deadline = time.monotonic() + 30
    while not workers_that_fit({"CPU": cpus}, _free()) and time.monotonic() < deadline:
        time.sleep(0.2)  # an earlier test's actors are still going away
    pg = placement_group([{"CPU": cpus}])
    assert pg.wait(30), "the session's Ray never had the CPUs free"
    return pg


def _free():
    from semcolor.ray_env import node_resources

    return node_resources()[1]


@pytest.mark.ray
def test_semcolor_train_refuses_more_workers_than_the_ray_holds_before_any_work(ray_local, tmp_path, capsys) -> None:
    from semcolor.cli import main
    from semcolor.ray_env import autoscaler_present

    assert autoscaler_present() is False  # a Ray this process started with ray.init
    start = time.monotonic()
    code = main(["train", "--workers", "2", "--storage", str(tmp_path / "runs"), "--name", "never"])
    assert code == 2 and time.monotonic() - start < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("semcolor train: --workers 2 x --cpus-per-worker 2 = 4 CPUs asked, but this Ray cluster "
                             "has 2 CPUs on 1 node, room for 1 such worker, and no autoscaler"), err[0]
    assert not (tmp_path / "runs").exists()  # refused before the run directory, data or synthesis


@pytest.mark.ray
def test_a_run_that_fits_once_other_work_ends_waits_then_starts_or_stops_at_the_timeout(ray_local, caplog) -> None:
    from ray.util import remove_placement_group

    config = TrainConfig(workers=2, cpus_per_worker=1, start_timeout=0.05)  # 3 s
    pg = _hold_cpus(1)
    try:
        start = time.monotonic()
        with caplog.at_level(logging.INFO, logger="semcolor.train.preflight"):
            with pytest.raises(ValueError, match="no room to start within --start-timeout 0.05 min") as err:
                require_room(config)
        assert 3.0 <= time.monotonic() - start < 15
        assert "1 CPU free of 2 CPUs on 1 node (room for 2 such when free" in str(err.value)
        assert any("waiting for room to start training: --workers 2 x --cpus-per-worker 1" in r.getMessage()
                   for r in caplog.records)
        threading.Timer(1.0, remove_placement_group, [pg]).start()
        start = time.monotonic()
        require_room(TrainConfig(workers=2, cpus_per_worker=1, start_timeout=0.5))
        assert 0.9 <= time.monotonic() - start < 20
    finally:
        remove_placement_group(pg)


@pytest.mark.ray
def test_ray_train_gives_up_starting_a_group_it_cannot_place_instead_of_retrying_forever(
        ray_local, quick_ray_train, monkeypatch, tmp_path) -> None:
    """The driver's own trainer (FailureConfig and error wrapper) while other work holds every CPU: 2 attempts of
    1 s (--start-timeout 2 s), then one line; with Ray's default limit this loops forever."""
    import ray.data
    from ray.util import remove_placement_group

    from semcolor.train.driver import _trainer
    from semcolor.train.preflight import start_errors

    monkeypatch.setenv(START_TIMEOUT_ENV, "1")
    config = TrainConfig(workers=1, cpus_per_worker=1, start_timeout=2 / 60, storage=str(tmp_path), name="stuck")
    rows = ray.data.from_items([{"rgb": 0, "mask": 0}])
    trainer = _trainer(config, "stuck", str(tmp_path / "stuck"), {"train": rows, "val": rows}, 1, None,
                       lambda _: None)
    pg = _hold_cpus(2)
    try:
        start = time.monotonic()
        with pytest.raises(ValueError, match="Ray Train could not start the worker group within --start-timeout") as err:
            with start_errors(config):
                trainer.fit()
        assert time.monotonic() - start < 60
        assert "(2 attempts of 1 s, RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S): WorkerGroupStartupTimeoutError" in str(
            err.value)
        assert "\n" not in str(err.value)
    finally:
        remove_placement_group(pg)
