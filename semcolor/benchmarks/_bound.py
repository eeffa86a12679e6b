"""The model-only bound every benchmark compares against, measured one way: the best of N rounds.

A bound is measured as :func:`best_of` does: one untimed warm-up call, then ``rounds`` timed rounds, each calling
the model back to back for at least ``seconds`` wall seconds and at least one call; a round's rate is its images
over its wall seconds, and the bound is the fastest round's rate. The best, not the mean: other load on a shared
machine only ever slows a round down, so the fastest round is the nearest to what the model alone can do. Every
round's rate is kept (``round_images_per_s``) to show the spread. :func:`statistic` says this in words for the
JSON each benchmark writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from semcolor.core.colorizer import Colorizer


@dataclass(frozen=True)
class Round:
    """One timed round: ``images`` in ``seconds`` wall time (``cpu_seconds`` of CPU), over ``calls`` calls.

    ``images_per_s``: images / seconds for one process; the sum of the processes' rates for a round they ran
    together (:func:`together`). ``phases``: seconds by phase summed over the round's calls, where the call
    reports them."""

    images: int
    seconds: float
    cpu_seconds: float
    calls: int
    images_per_s: float
    phases: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Bound:
    """The rounds of one bound measurement; the bound is :attr:`best`, the fastest round."""

    rounds: tuple[Round, ...]

    @property
    def best(self) -> Round:
        return max(self.rounds, key=lambda r: r.images_per_s)

    @property
    def images_per_s(self) -> float:
        """The bound: the fastest round's images per second."""
        return self.best.images_per_s

    def as_dict(self) -> dict[str, Any]:
        """The JSON figures: the fastest round's images/s, CPU seconds per image, images and wall seconds; its
        seconds per call by phase (``PHASE_s``, where the call reports phases); every round's images/s."""
        best = self.best
        return {"images_per_s": best.images_per_s, "cpu_s_per_image": best.cpu_seconds / best.images,
                "images": best.images, "seconds": best.seconds,
                **{f"{k}_s": v / best.calls for k, v in best.phases.items()},
                "round_images_per_s": [r.images_per_s for r in self.rounds]}


def statistic(rounds: int, seconds: float) -> str:
    """What a bound measured by :func:`best_of` with these settings is, in words (for each benchmark's JSON)."""
    return (f"best of {rounds} timed rounds after one untimed warm-up call: each round calls the model back to back "
            f"for at least {seconds:g} s and at least one call; its rate is its images over its wall seconds, and "
            "the bound is the fastest round's rate (other load only slows a round down)")


def best_of(call: Callable[[], dict[str, float] | None], images_per_call: int, rounds: int, seconds: float,
            before_round: Callable[[], Any] | None = None,
            clock: Callable[[], float] = time.perf_counter) -> Bound:
    """Time ``call`` (``images_per_call`` images each) as the module docstring says. ``call`` may return seconds by
    phase of its own work (summed per round). ``before_round``: run before each round, untimed (e.g. a barrier that
    starts concurrent processes together); ``clock``: wall seconds."""
    call()  # warm-up
    timed = []
    for _ in range(rounds):
        if before_round is not None:
            before_round()
        calls, phases = 0, {}
        start, cpu = clock(), time.process_time()
        while calls < 1 or clock() - start < seconds:
            for key, value in (call() or {}).items():
                phases[key] = phases.get(key, 0.0) + value
            calls += 1
        wall = clock() - start
        timed.append(Round(calls * images_per_call, wall, time.process_time() - cpu, calls,
                           calls * images_per_call / wall, phases))
    return Bound(tuple(timed))


def together(processes: Sequence[Bound]) -> Bound:
    """The bound of processes that ran their rounds at the same time (round k of each started together): round k's
    rate is the sum of the processes' rates in round k, its images, CPU seconds and calls their sums, its wall
    seconds the longest; the bound is the fastest such round (not the sum of each process's own fastest)."""
    counts = {len(p.rounds) for p in processes}
    if len(counts) != 1:
        raise ValueError(f"processes timed different numbers of rounds: {sorted(counts)}")
    return Bound(tuple(Round(sum(r.images for r in same), max(r.seconds for r in same),
                             sum(r.cpu_seconds for r in same), sum(r.calls for r in same),
                             sum(r.images_per_s for r in same))
                       for same in zip(*(p.rounds for p in processes))))


def predict_bound(colorizer: "Colorizer", batch: int, rounds: int, seconds: float,
                  before_round: Callable[[], Any] | None = None) -> Bound:
    """:meth:`Colorizer.predict` (uint8 L in, int8 AB + uint8 mask out: the call of the bulk actors and the Serve
    replica) on ``batch`` random images of the colorizer's size, timed by :func:`best_of`; threads as the caller
    set them."""
    x = np.random.default_rng(0).integers(0, 256, (batch, colorizer.size, colorizer.size), dtype=np.uint8)

    def call() -> None:
        colorizer.predict(x)

    return best_of(call, batch, rounds, seconds, before_round)
