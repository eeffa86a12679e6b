"""The training step's clock: phases add up to the step, the all-reduce is timed through DDP's hook, and the split
of backward and all-reduce follows the last bucket's launch. The clock under test reads a fake clock whose
durations the test chooses, so each phase's seconds are known before the code runs."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import torch
import torch.distributed as dist
from torch import nn

from semcolor.train.step_timing import PHASES, StepClock, _union_seconds


class FakeClock:
    """Seconds that move only when the test says: ``advance(s)``; ``tick`` (default 0) is added at each reading,
    so that every reading is distinct. Thread-safe (DDP's hook reads it from the communication thread)."""

    def __init__(self, now: float = 100.0, tick: float = 0.0) -> None:
        self.now, self.tick = now, tick
        self.readings: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.now += self.tick
            self.readings.append(self.now)
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def test_union_of_intervals_counts_overlaps_once():
    assert _union_seconds([]) == 0.0
    assert _union_seconds([(0.0, 1.0), (0.5, 2.0), (3.0, 4.0), (3.2, 3.4)]) == pytest.approx(3.0)
    assert _union_seconds([(5.0, 6.0), (0.0, 10.0)]) == pytest.approx(10.0)  # a later start inside an earlier one


def _step(clock: StepClock, fake: FakeClock, seconds: dict[str, float], buckets=()) -> None:
    """One step in which each phase takes ``seconds[phase]`` on the fake clock; ``buckets`` are (launch, done)
    offsets from the backward's start, as DDP's hook would record them."""
    clock.start()
    for phase in ("data_wait", "preprocess", "forward"):
        fake.advance(seconds[phase])
        clock.lap(phase)
    backward_start = fake.now
    clock._launched = [backward_start + launch for launch, _ in buckets]
    clock._intervals = [(backward_start + launch, backward_start + done) for launch, done in buckets]
    fake.advance(seconds["backward"] + seconds["allreduce"])
    clock.backward_done()
    fake.advance(seconds["optimizer"])
    clock.lap("optimizer")


def test_each_phase_gets_its_own_seconds_and_take_resets():
    """Durations 1, 2, 4, ... (each a power of two): a phase credited with its neighbour's time, or a lap missed,
    gives a sum no other phase mix gives."""
    fake = FakeClock()
    clock = StepClock(clock=fake)
    durations = {p: float(2 ** i) for i, p in enumerate(PHASES)}  # allreduce = 16: the tail after the last launch
    buckets = [(1.0, 3.0), (durations["backward"], durations["backward"] + 10.0)]  # last launch at backward's end
    _step(clock, fake, durations, buckets)
    _step(clock, fake, durations, buckets)
    seconds = clock.take()
    assert seconds == {**{p: 2 * durations[p] for p in PHASES}, "allreduce_busy": 2 * (2.0 + 10.0), "steps": 2.0}
    assert clock.take() == {**dict.fromkeys((*PHASES, "allreduce_busy"), 0.0), "steps": 0.0}


@pytest.mark.parametrize("buckets, backward, allreduce, busy", [
    # two buckets, the last launched 5 s into a 20 s backward: 5 s of gradient work, a 15 s exposed tail
    ([(1.0, 4.0), (5.0, 7.0)], 5.0, 15.0, 5.0),
    # overlapping buckets: busy counts their union once
    ([(1.0, 9.0), (2.0, 6.0), (8.0, 12.0)], 8.0, 12.0, 11.0),
    # no bucket (one worker without DDP): backward keeps all of it
    ([], 20.0, 0.0, 0.0),
    # a launch recorded before this backward began (a stale one) is clamped to the backward's start
    ([(-3.0, -1.0)], 0.0, 20.0, 2.0),
])
def test_backward_splits_at_the_last_bucket_launch(buckets, backward, allreduce, busy):
    fake = FakeClock()
    clock = StepClock(clock=fake)
    _step(clock, fake, {"data_wait": 0.5, "preprocess": 0.25, "forward": 3.0, "backward": 20.0, "allreduce": 0.0,
                        "optimizer": 1.0}, buckets)
    seconds = clock.take()
    assert (seconds["backward"], seconds["allreduce"], seconds["allreduce_busy"]) == (backward, allreduce, busy)
    assert seconds["backward"] + seconds["allreduce"] == 20.0  # the split shares loss.backward()'s time, no more
    assert (seconds["data_wait"], seconds["preprocess"], seconds["forward"], seconds["optimizer"]) == (0.5, 0.25,
                                                                                                       3.0, 1.0)


def test_the_default_clock_is_wall_seconds():
    clock = StepClock()
    clock.start()
    time.sleep(0.02)
    clock.lap("data_wait")
    assert 0.02 <= clock.take()["data_wait"] < 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hook_times_ddp_all_reduce_and_keeps_its_gradients():
    """A one-process gloo group: the timed hook sees every bucket (launch and completion, on the clock given) and
    DDP's gradients equal plain autograd's; the split is at the last launch the hook saw."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(64, 2048), nn.ReLU(), nn.Linear(2048, 512), nn.ReLU(), nn.Linear(512, 4))
        reference = nn.Sequential(nn.Linear(64, 2048), nn.ReLU(), nn.Linear(2048, 512), nn.ReLU(), nn.Linear(512, 4))
        reference.load_state_dict(net.state_dict())
        ddp = nn.parallel.DistributedDataParallel(net, bucket_cap_mb=1)  # 4.7 MB of parameters: several buckets
        fake = FakeClock(tick=1.0)  # every reading one second after the previous one
        clock = StepClock(clock=fake)
        clock.attach(ddp)
        x = torch.randn(8, 64)
        expected = {"backward": 0.0, "allreduce": 0.0, "allreduce_busy": 0.0}
        for _ in range(2):  # DDP rebuilds its buckets (at bucket_cap_mb) after the first step
            net.zero_grad()
            clock.start()
            backward_start = fake.now
            ddp(x).square().mean().backward()
            launched, intervals = list(clock._launched), list(clock._intervals)
            clock.backward_done()
            returned = fake.now
            # every launched bucket completed before backward() returned, each after its own launch
            assert sorted(s for s, _ in intervals) == sorted(launched) and all(e > s for s, e in intervals)
            assert backward_start < min(launched) and max(e for _, e in intervals) < returned
            expected["backward"] += max(launched) - backward_start
            expected["allreduce"] += returned - max(launched)
            expected["allreduce_busy"] += _union_seconds(intervals)
        reference(x).square().mean().backward()
        for p, q in zip(net.parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad)
        seconds = clock.take()
        assert len(launched) >= 2
        assert {k: seconds[k] for k in expected} == expected
        assert seconds["allreduce"] >= 2 * 2.0  # per step: the last bucket's completion was read in between
    finally:
        dist.destroy_process_group()


def test_model_bound_is_the_fastest_rounds_forward_and_backward_without_the_warm_up(monkeypatch):
    """The model's forward and backward each move a fake clock by a known amount per call (the warm-up's by far
    more, the second round's least): the bound is that round's images/s and its forward and backward seconds."""
    import functools

    import semcolor.benchmarks.train as bench
    import semcolor.model.network as network
    from semcolor.benchmarks._bound import best_of

    fake = FakeClock()
    # (forward, backward) seconds of each call: the warm-up, then three rounds of one step each
    durations = [(1000.0, 1000.0), (0.5, 1.0), (0.25, 0.5), (0.5, 0.75)]
    calls = []
    build = network.build_model

    def build_timed(config):
        model = build(config)

        def after_forward(module, inputs, output):
            forward_s, backward_s = durations[len(calls)]
            calls.append(1)
            fake.advance(forward_s)
            output[0].register_hook(lambda grad: fake.advance(backward_s))

        model.register_forward_hook(after_forward)
        return model

    monkeypatch.setattr(network, "build_model", build_timed)
    monkeypatch.setattr(time, "perf_counter", fake)  # the step's own readings
    monkeypatch.setattr(bench, "best_of", functools.partial(best_of, clock=fake))  # the rounds' wall clock
    bound = bench.model_bound(size=32, batch=2, threads=1, rounds=3)
    assert len(calls) == 4
    assert bound["round_images_per_s"] == pytest.approx([2 / 1.5, 2 / 0.75, 2 / 1.25])
    assert bound["images_per_s"] == pytest.approx(2 / 0.75)
    assert (bound["forward_s"], bound["backward_s"]) == pytest.approx((0.25, 0.5))
