"""The local Ray's worker pool: idle task workers are kept, not killed and started again for the next task."""

import os
import time

import psutil
import pytest

pytestmark = pytest.mark.ray


def test_idle_task_workers_survive_while_actors_outnumber_the_cpus(ray_local):
    """Ray kills a worker idle for 1 s while more workers than its soft limit exist (default: the CPUs); the bulk
    job on a small machine always has more (model actors, Ray Data's actors, fractional-CPU tasks), and each killed
    worker paid its imports again for the next task. :func:`semcolor.ray_env.local_system_config` keeps them."""
    import ray

    @ray.remote(num_cpus=0)
    class Holder:
        def pid(self) -> int:
            return os.getpid()

    @ray.remote(num_cpus=0.5)
    def task_pid(seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    holders = [Holder.remote() for _ in range(4)]  # with the 2 CPUs' task workers: more workers than CPUs
    ray.get([h.pid.remote() for h in holders])
    workers = set(ray.get([task_pid.remote(0.5) for _ in range(4)]))
    time.sleep(4.0)  # idle well past Ray's 1-s kill threshold
    gone = {pid for pid in workers if not psutil.pid_exists(pid)}
    for h in holders:
        ray.kill(h)
    assert len(workers) >= 2 and not gone, f"task workers {sorted(gone)} of {sorted(workers)} were killed while idle"
