"""Where a training step's time goes: data wait, preprocessing, forward, backward, all-reduce, optimizer.

A :class:`StepClock` sums wall seconds per phase over an epoch on one worker. On CPU every op is synchronous, so a
phase's clock is its cost; on CUDA the clock synchronises the device at each phase boundary (a few microseconds
per step against steps of tens of milliseconds).

DDP overlaps the gradient all-reduce with the backward pass: it launches each gradient bucket's all-reduce as soon
as the bucket's gradients are ready, and ``loss.backward()`` returns once every bucket is reduced. A communication
hook (the default all-reduce, timed; :meth:`StepClock.attach`) records when each bucket is launched and when it is
done. The bucket launched last holds the first layers' gradients, the last ones computed, so the backward pass is
split at that launch: ``backward`` is the time until it (gradient computation, with whatever all-reduce ran beside
it), ``allreduce`` the time after it (the all-reduce the computation could not hide). ``allreduce_busy`` is the
time any bucket was in flight, hidden or not: for information, it is not part of the step's sum.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import torch

PHASES = ("data_wait", "preprocess", "forward", "backward", "allreduce", "optimizer")
"""The phases of a step, in order; their sum is the step's wall time."""


def _union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of (start, end) intervals, in the intervals' units."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


class StepClock:
    """Per-phase wall seconds of a worker's training steps (see the module docstring).

    Use: :meth:`start` before fetching a batch, then :meth:`lap` after each phase in :data:`PHASES` order, with
    :meth:`backward_done` in place of ``lap("backward")`` (it splits backward and all-reduce); :meth:`take` returns
    the sums so far and starts again from zero. ``sync`` runs before each reading (``torch.cuda.synchronize``);
    ``clock`` is the seconds clock read at every boundary and by the all-reduce hook.
    """

    def __init__(self, sync: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._sync = sync
        self._clock = clock
        self._lock = threading.Lock()  # bucket callbacks run on the communication thread
        self._launched: list[float] = []
        self._intervals: list[tuple[float, float]] = []
        self._seconds = dict.fromkeys((*PHASES, "allreduce_busy"), 0.0)
        self._steps = 0
        self._t = clock()

    def _now(self) -> float:
        if self._sync is not None:
            self._sync()
        return self._clock()

    def start(self) -> None:
        """A step begins (its data wait starts now)."""
        self._t = self._now()

    def lap(self, phase: str) -> None:
        """``phase`` ended now: the time since the last boundary is its."""
        t = self._now()
        self._seconds[phase] += t - self._t
        self._t = t
        if phase == PHASES[-1]:
            self._steps += 1

    def backward_done(self) -> None:
        """``loss.backward()`` returned: split its time at the last bucket's launch (no buckets: all backward)."""
        t = self._now()
        with self._lock:
            launched, self._launched = self._launched, []
            intervals, self._intervals = self._intervals, []
        split = min(max(max(launched, default=t), self._t), t)
        self._seconds["backward"] += split - self._t
        self._seconds["allreduce"] += t - split
        self._seconds["allreduce_busy"] += _union_seconds(intervals)
        self._t = t

    def attach(self, ddp_model: torch.nn.Module) -> None:
        """Time ``ddp_model``'s gradient all-reduce (a DDP-wrapped model; the default all-reduce, unchanged)."""
        import torch.distributed as dist
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import (
            allreduce_hook,
        )

        def timed_allreduce(state, bucket):  # annotated below: DDP checks the objects, not their names
            launched = self._clock()
            with self._lock:
                self._launched.append(launched)

            def done(fut: torch.futures.Future) -> torch.Tensor:
                with self._lock:
                    self._intervals.append((launched, self._clock()))
                return fut.value()

            return allreduce_hook(state, bucket).then(done)

        timed_allreduce.__annotations__ = {"bucket": dist.GradBucket, "return": torch.futures.Future[torch.Tensor]}
        ddp_model.register_comm_hook(None, timed_allreduce)

    def take(self) -> dict[str, float]:
        """Seconds per phase (and ``allreduce_busy``) and ``steps`` since the last take; resets the sums."""
        out = {**self._seconds, "steps": float(self._steps)}
        self._seconds = dict.fromkeys(self._seconds, 0.0)
        self._steps = 0
        return out
