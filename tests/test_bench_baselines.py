"""The benchmarks' baselines: the model-only bound is the fastest of its rounds (one statistic for every benchmark),
and the naive loop of `bench colorize` does what the pipeline does per row, nothing more."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from semcolor.benchmarks._bound import Bound, Round, best_of, predict_bound, together


class FakeClock:
    """A wall clock that only the timed calls move: each call advances it by its next scripted duration."""

    def __init__(self, durations: list[float]) -> None:
        self.now, self.durations = 0.0, list(durations)

    def __call__(self) -> float:
        return self.now

    def call(self) -> dict[str, float]:
        seconds = self.durations.pop(0)
        self.now += seconds
        return {"work": seconds}


def test_the_bound_is_the_fastest_round_after_an_untimed_warm_up():
    """Warm-up 100 s, then rounds of >= 1 s at 8, 16 and 2 images/s (4 images per call): the bound is 16; the mean
    of the rounds (8.7), all images over all time (7), the first or the last round, or a warm-up counted would
    all differ."""
    clock = FakeClock([100.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 2.0])
    started: list[float] = []
    bound = best_of(clock.call, 4, rounds=3, seconds=1.0, before_round=lambda: started.append(clock.now),
                    clock=clock)
    assert not clock.durations  # every scripted call made, no more
    assert [r.images_per_s for r in bound.rounds] == [8.0, 16.0, 2.0]
    assert [r.calls for r in bound.rounds] == [2, 4, 1]
    assert bound.images_per_s == 16.0 and bound.best.images == 16 and bound.best.seconds == 1.0
    assert started == [100.0, 101.0, 102.0]  # before each round, after the warm-up
    figures = bound.as_dict()
    assert figures["images_per_s"] == 16.0 and figures["round_images_per_s"] == [8.0, 16.0, 2.0]
    assert figures["work_s"] == 0.25  # the fastest round's phase seconds per call


def test_a_round_makes_at_least_one_call():
    clock = FakeClock([1.0, 3.0, 5.0])
    bound = best_of(clock.call, 2, rounds=2, seconds=0.0, clock=clock)
    assert [r.calls for r in bound.rounds] == [1, 1] and bound.images_per_s == pytest.approx(2 / 3)


def test_cpu_seconds_are_the_process_time_of_the_fastest_round():
    """A busy call spends about its wall time on the CPU, a sleeping one next to none."""
    def busy() -> None:
        end = time.process_time() + 0.02
        while time.process_time() < end:
            pass

    busy_bound = best_of(busy, 1, rounds=2, seconds=0.1)
    sleep_bound = best_of(lambda: time.sleep(0.02), 1, rounds=2, seconds=0.1)
    assert busy_bound.as_dict()["cpu_s_per_image"] >= 0.019
    assert sleep_bound.as_dict()["cpu_s_per_image"] < 0.01


def _rounds(*rates: float) -> Bound:
    return Bound(tuple(Round(int(r), 1.0, 0.5 * r, 1, r) for r in rates))


def test_processes_that_ran_together_are_summed_round_by_round():
    """A's fastest round is the first, B's the second: together the first round (10 + 3) beats the second (4 + 8);
    the sum of each one's own fastest (18) was never reached at once."""
    both = together([_rounds(10.0, 4.0), _rounds(3.0, 8.0)])
    assert [r.images_per_s for r in both.rounds] == [13.0, 12.0]
    assert both.images_per_s == 13.0 and both.best.images == 13 and both.as_dict()["cpu_s_per_image"] == 0.5
    with pytest.raises(ValueError, match="rounds"):
        together([_rounds(1.0, 2.0), _rounds(1.0)])


def test_predict_bound_times_predict_on_a_batch_of_the_colorizers_size():
    shapes = []

    class Colorizer:
        size = 8

        def predict(self, x: np.ndarray) -> None:
            shapes.append((x.shape, x.dtype))

    bound = predict_bound(Colorizer(), batch=3, rounds=2, seconds=0.0)
    assert shapes == [((3, 8, 8), np.uint8)] * 3  # the warm-up and one call per round
    assert [r.images for r in bound.rounds] == [3, 3]


def test_naive_loop_writes_what_the_pipeline_writes_and_computes_no_mask(tmp_path, monkeypatch):
    """One source through the naive loop and through the pipeline's three stages (no Ray; the pipeline at its
    defaults: no mask): the same PNG bytes, and the naive loop never upsamples a mask."""
    from semcolor.benchmarks.colorize import naive_loop
    from semcolor.bulk import stages
    from semcolor.core.colorizer import Colorizer
    from semcolor.model import checkpoint, torch_predictor
    from semcolor.model.config import ModelConfig
    from semcolor.model.inference import load_colorizer
    from semcolor.model.network import build_model

    torch.manual_seed(0)
    config = ModelConfig(arch="unet", input_size=32)
    ckpt = checkpoint.save(build_model(config), config, str(tmp_path / "model"))
    rgb = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    source, output = str(tmp_path / "a.png"), str(tmp_path / "pipeline" / "a.png")

    row = {"key": ["a"], "source": [source], "output": [output], "mask": [""], "status": ["ok"], "kind": [""],
           "reason": [""]}
    batch = stages.decode_rows({k: np.array(v, dtype=object) for k, v in row.items()}, size=32,
                               max_pixels=10**8)
    monkeypatch.setattr(torch_predictor, "make_deterministic", lambda: None)  # no global torch flags in this process
    batch = stages.ColorizeActor(ckpt, size=32, device="cpu", backend="torch")(batch)
    records = stages.merge_encode_write(batch, "png", 90, config.n_classes, "run").to_pylist()
    assert records[0]["status"] == "ok" and records[0]["mask"] is None

    def no_mask(*args, **kwargs):
        raise AssertionError("the naive loop upsampled a mask the pipeline does not make")

    monkeypatch.setattr(Colorizer, "mask", no_mask)
    naive_loop(load_colorizer(ckpt, device="cpu", size=32, backend="torch"), [source], str(tmp_path / "naive"))
    assert [p.name for p in (tmp_path / "naive").iterdir()] == ["00000.png"]
    assert (tmp_path / "naive" / "00000.png").read_bytes() == (tmp_path / "pipeline" / "a.png").read_bytes()


def test_the_environment_names_the_cpu_and_its_bf16_units(tmp_path):
    """bf16 figures depend on the CPU's bf16 units (AMX tiles or AVX-512 BF16): every benchmark's JSON says which."""
    from semcolor.benchmarks._report import cpu_description, environment

    info = tmp_path / "cpuinfo"
    core = "model name\t: Some CPU 9000\nflags\t\t: fpu sse2 avx512f {extra}\n\n"
    info.write_text(core.format(extra="avx512_bf16 amx_tile amx_bf16") * 2)
    assert cpu_description(str(info)) == {"cpu": "Some CPU 9000", "bf16_flags": ["amx_bf16", "avx512_bf16"]}
    info.write_text(core.format(extra="avx2"))
    assert cpu_description(str(info)) == {"cpu": "Some CPU 9000", "bf16_flags": []}
    assert cpu_description(str(tmp_path / "missing")) == {}
    machine = environment()["machine"]
    assert {"cores", "torch", "onnxruntime"} <= set(machine)
