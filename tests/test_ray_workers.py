"""The bulk job's local Ray keeps its idle task workers instead of killing them and starting new ones."""

import json
import os
import subprocess
import sys

import pytest

# A local Ray of 2 CPUs with the bulk job's settings: 2 zero-CPU actors (as the model actors and Ray Data's own
# actors, one of them a barrier) and 4 half-CPU tasks (as decode and merge on a small machine) held at the barrier
# until all 4 run, so 4 task workers exist at once: more workers than CPUs, 6 in all (the bulk job's setting keeps
# up to 7). Then idle, past Ray's 1-s threshold for killing idle workers beyond its soft limit: 4 s with the bulk
# job's settings (none may go), up to 20 s with Ray's own until one goes (a loaded machine delays Ray's check). The Ray gets
# the settings init_ray(keep_idle_workers=True) passes (the test of init_ray below checks that it does), without
# the dashboard init_ray starts for Ray Train (3 s less); "default" starts it with Ray's own settings.
SCRIPT = """
import json, os, sys, time
import psutil, ray
from semcolor.ray_env import keep_idle_workers_config, startup_concurrency

keep = sys.argv[1] == "keep"
ray.init(address="local", num_cpus=2, include_dashboard=False,
         _system_config=keep_idle_workers_config(startup_concurrency(2)) if keep else None)

@ray.remote(num_cpus=0)
class Barrier:
    def __init__(self):
        self.arrived = 0
    def arrive(self):
        self.arrived += 1
    def count(self):
        return self.arrived

@ray.remote(num_cpus=0)
class Holder:
    def pid(self):
        return os.getpid()

@ray.remote(num_cpus=0.5)
def task_pid(barrier, n):
    ray.get(barrier.arrive.remote())
    deadline = time.monotonic() + 120
    while ray.get(barrier.count.remote()) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return os.getpid()

barrier, holder = Barrier.remote(), Holder.remote()
ray.get([barrier.count.remote(), holder.pid.remote()])
workers = set(ray.get([task_pid.remote(barrier, 4) for _ in range(4)]))
gone = lambda: sum(not psutil.pid_exists(p) for p in workers)
# keep: 4 s idle, all must stay; default: until Ray kills one (it checks every second; slower on a loaded machine)
deadline = time.monotonic() + (4.0 if keep else 20.0)
while time.monotonic() < deadline and (keep or gone() == 0):
    time.sleep(0.25)
print(json.dumps({"workers": len(workers), "gone": gone()}))
"""


def _idle_workers_gone(mode: str) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("keep", [True, False])
def test_init_ray_passes_the_keep_idle_workers_settings_to_a_new_local_ray(monkeypatch, keep):
    """What init_ray hands ray.init for a new local Ray (no Ray is started): the settings the test below runs
    with when ``keep_idle_workers``, Ray's own otherwise."""
    import ray

    from semcolor import ray_env

    calls: list[dict] = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray_env, "quiet_logs", dict)  # this process's logging stays as it is
    assert ray_env.init_ray(None, 3, keep_idle_workers=keep) is True
    (kwargs,) = calls
    assert kwargs["address"] == "local" and kwargs["num_cpus"] == 3
    want = ray_env.keep_idle_workers_config(ray_env.startup_concurrency(3)) if keep else None
    assert kwargs["_system_config"] == want
    if keep:
        assert want["num_workers_soft_limit"] == 4 * min(3, os.cpu_count() or 1) - 1


@pytest.mark.ray
@pytest.mark.own_ray
def test_the_bulk_jobs_local_ray_keeps_idle_task_workers():
    """The same script with Ray's own settings ("default") is the control: there Ray kills idle task workers (2 of
    4 with Ray 2.60), so the test can tell the setting from a Ray that keeps them anyway."""
    kept = _idle_workers_gone("keep")
    assert kept["workers"] == 4, kept
    assert kept["gone"] == 0, f"idle task workers were killed with keep_idle_workers: {kept}"
    default = _idle_workers_gone("default")
    assert default["workers"] == 4 and default["gone"] > 0, (
        f"Ray's own settings kept every idle task worker too: {default}; the setting may be moot in this Ray")
