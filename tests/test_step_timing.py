"""The training step's clock: phases add up to the step, the all-reduce is timed through DDP's hook, and the split
of backward and all-reduce follows the last bucket's launch."""

from __future__ import annotations

import socket
import time

import pytest
import torch
import torch.distributed as dist
from torch import nn

from semcolor.train.step_timing import PHASES, StepClock, _union_seconds


def test_union_of_intervals_counts_overlaps_once():
    assert _union_seconds([]) == 0.0
    assert _union_seconds([(0.0, 1.0), (0.5, 2.0), (3.0, 4.0), (3.2, 3.4)]) == pytest.approx(3.0)


def test_phases_add_up_to_the_steps_wall_time():
    clock = StepClock()
    start = time.perf_counter()
    for _ in range(2):
        clock.start()
        for phase in PHASES:
            time.sleep(0.002)
            if phase == "backward":
                clock.backward_done()
            elif phase != "allreduce":  # backward_done accounts for both
                clock.lap(phase)
    wall = time.perf_counter() - start
    seconds = clock.take()
    assert seconds["steps"] == 2
    total = sum(seconds[p] for p in PHASES)
    assert 0.9 * wall <= total <= wall
    assert all(seconds[p] >= 0.004 for p in PHASES if p != "allreduce")
    assert seconds["allreduce"] == 0.0  # no buckets launched: backward keeps all of it
    assert clock.take()["steps"] == 0  # take resets


def test_backward_splits_at_the_last_bucket_launch():
    clock = StepClock()
    clock.start()
    t0 = time.perf_counter()
    clock._launched = [t0 + 0.001, t0 + 0.005]  # as the hook records them
    clock._intervals = [(t0 + 0.001, t0 + 0.004), (t0 + 0.005, t0 + 0.007)]
    time.sleep(0.02)
    clock.backward_done()
    seconds = clock.take()
    assert seconds["backward"] == pytest.approx(0.005, abs=1e-3)
    assert seconds["allreduce"] > 0.01
    assert seconds["allreduce_busy"] == pytest.approx(0.005, abs=1e-9)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hook_times_ddp_all_reduce_and_keeps_its_gradients():
    """A one-process gloo group: the timed hook sees every bucket and DDP's gradients equal plain autograd's."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(64, 2048), nn.ReLU(), nn.Linear(2048, 512), nn.ReLU(), nn.Linear(512, 4))
        reference = nn.Sequential(nn.Linear(64, 2048), nn.ReLU(), nn.Linear(2048, 512), nn.ReLU(), nn.Linear(512, 4))
        reference.load_state_dict(net.state_dict())
        ddp = nn.parallel.DistributedDataParallel(net, bucket_cap_mb=1)  # 4.7 MB of parameters: several buckets
        clock = StepClock()
        clock.attach(ddp)
        x = torch.randn(8, 64)
        for _ in range(2):  # DDP rebuilds its buckets (at bucket_cap_mb) after the first step
            net.zero_grad()
            clock.start()
            ddp(x).square().mean().backward()
            launches = len(clock._launched)
            clock.backward_done()
        reference(x).square().mean().backward()
        for p, q in zip(net.parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad)
        seconds = clock.take()
        assert launches >= 2
        assert seconds["allreduce_busy"] > 0.0
        assert seconds["backward"] > 0.0 and seconds["allreduce"] >= 0.0
    finally:
        dist.destroy_process_group()


def test_model_bound_measures_forward_and_backward():
    from semcolor.benchmarks.train import model_bound

    bound = model_bound(size=32, batch=2, threads=1, steps=1)
    assert bound["forward_s"] > 0 and bound["backward_s"] > 0
    assert bound["images_per_s"] == pytest.approx(2 / (bound["forward_s"] + bound["backward_s"]))
