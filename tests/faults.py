"""Test-only fault injection: wrappers around the production stages that fail once, on purpose.

Ray workers import this module by name (the session Ray puts tests/ on their PYTHONPATH, see conftest.py).
Each fault fires once per marker file, created atomically (O_EXCL) before failing, so only one process fails.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from semcolor.bulk.stages import ColorizeActor

PLAN_NAME = "fault_plan.json"
"""Where :class:`FailingColorizeActor` finds its plan: beside the checkpoint directory it loads."""


def claim(marker: str | os.PathLike) -> bool:
    """True for the one caller that creates ``marker``; False for every later one."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def write_plan(checkpoint: str, mode: str, after_batches: int, marker: str | os.PathLike,
               driver_pid: int | None = None) -> None:
    """Arm :class:`FailingColorizeActor` for the model directory ``checkpoint``.

    ``mode``: ``actor`` (the actor process exits; Ray restarts it and retries the batch) or ``driver`` (the actor
    SIGKILLs ``driver_pid``: the job dies midway and a rerun must finish it).
    """
    if mode not in ("actor", "driver"):
        raise ValueError(f"fault mode must be 'actor' or 'driver', got {mode!r}")
    plan = {"mode": mode, "after_batches": after_batches, "marker": str(marker), "driver_pid": driver_pid}
    (Path(checkpoint).parent / PLAN_NAME).write_text(json.dumps(plan))


class FailingColorizeActor(ColorizeActor):
    """The production model stage, failing once after ``after_batches`` batches as its plan says."""

    def __init__(self, checkpoint: str, **kwargs: Any) -> None:
        super().__init__(checkpoint, **kwargs)
        self.plan = json.loads((Path(checkpoint).parent / PLAN_NAME).read_text())
        self.batches = 0

    def __call__(self, batch):
        out = super().__call__(batch)
        self.batches += 1
        if self.batches >= self.plan["after_batches"] and claim(self.plan["marker"]):
            if self.plan["mode"] == "actor":
                os._exit(1)
            os.kill(self.plan["driver_pid"], signal.SIGKILL)
            time.sleep(5.0)  # let the kill land before this batch could be returned
        return out


def train_loop_failing_after(loop_config: dict[str, Any], epoch: int) -> None:
    """The production training loop, but rank 0's process exits once right after reporting the checkpoint of
    ``epoch`` (marker ``RUN_DIR/.fault_injected``), to prove recovery through FailureConfig(max_failures).

    Use as ``functools.partial(train_loop_failing_after, epoch=0)``.
    """
    import ray.train

    from semcolor.core import storage
    from semcolor.train.loop import train_loop_per_worker

    original = ray.train.report
    marker = storage.join(loop_config["run_dir"], ".fault_injected")

    def report(metrics: dict[str, Any], checkpoint=None, **kwargs: Any) -> None:
        original(metrics, checkpoint=checkpoint, **kwargs)
        if checkpoint is None or metrics.get("epoch") != epoch or storage.exists(marker):
            return
        ray.train.get_all_reported_checkpoints(timeout_s=120)  # the checkpoint is registered before we die
        storage.write_text(marker, f"fault injected after epoch {epoch}\n")
        os._exit(17)

    ray.train.report = report
    try:
        train_loop_per_worker(loop_config)
    finally:
        ray.train.report = original
