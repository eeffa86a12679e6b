"""The bulk job's local Ray keeps its idle task workers instead of killing them and starting new ones."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ray

# A local Ray of 2 CPUs started by init_ray: 2 zero-CPU actors (as the model actors and Ray Data's own actors) and
# 4 task workers (half-CPU tasks, as decode and merge on a small machine): more workers than CPUs. Then 4 s idle,
# past Ray's 1-s threshold for killing idle workers beyond its soft limit.
SCRIPT = """
import json, os, sys, time
import psutil, ray
from semcolor.ray_env import init_ray

init_ray(None, 2, keep_idle_workers=sys.argv[1] == "keep")

@ray.remote(num_cpus=0)
class Holder:
    def pid(self):
        return os.getpid()

@ray.remote(num_cpus=0.5)
def task_pid(seconds):
    time.sleep(seconds)
    return os.getpid()

holders = [Holder.remote() for _ in range(2)]
ray.get([h.pid.remote() for h in holders])
workers = set(ray.get([task_pid.remote(1.0) for _ in range(4)]))
time.sleep(4.0)
print(json.dumps({"workers": len(workers), "gone": sum(not psutil.pid_exists(p) for p in workers)}))
"""


def _idle_workers_gone(mode: str) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_bulk_jobs_local_ray_keeps_idle_task_workers_where_rays_default_kills_them():
    default, kept = _idle_workers_gone("default"), _idle_workers_gone("keep")
    assert default["workers"] == kept["workers"] == 4, (default, kept)
    assert default["gone"] >= 1, f"Ray's default no longer kills idle workers: {default}; the setting may go"
    assert kept["gone"] == 0, f"idle task workers were killed with keep_idle_workers: {kept}"
