"""Test-time flip averaging (semcolor.core.flip_average): the mirrored view mirrored back, averaged by hand."""

from __future__ import annotations

import numpy as np
import pytest

from semcolor.core.colorizer import Colorizer
from semcolor.core.flip_average import FlipAveraged, check_tta, with_tta


class Ramp:
    """A predictor whose answers depend on where a pixel is (not flip-symmetric): AB = (column - 3, 2 x vividness x
    column), foreground = 30 x column + the input's first pixel; records the batches and vividness it is given."""

    size, n_classes = 6, 2

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, object]] = []

    def predict(self, l8_small, vividness=0.5):
        self.calls.append((l8_small.copy(), vividness))
        batch = len(l8_small)
        cols = np.broadcast_to(np.arange(self.size), (batch, self.size, self.size)).astype(np.int16)
        v = np.broadcast_to(np.asarray(vividness, np.float32), (batch,))[:, None, None]
        ab = np.stack([cols - 3, np.round(2 * v * cols)], axis=1).astype(np.int8)
        fg = (30 * cols + l8_small[:, :1, :1]).astype(np.uint8)
        return ab, fg

    def describe(self):
        return {"arch": "ramp"}


def test_flip_average_mirrors_back_and_averages_each_pixel():
    l8 = np.stack([np.full((6, 6), 7, np.uint8), np.arange(36, dtype=np.uint8).reshape(6, 6)])
    inner = Ramp()
    ab, fg = FlipAveraged(inner).predict(l8, np.array([0.25, 1.0]))
    seen, vividness = inner.calls[0]
    assert len(inner.calls) == 1 and seen.shape == (4, 6, 6)  # one forward pass of twice the batch
    np.testing.assert_array_equal(seen[2:], l8[:, :, ::-1])
    np.testing.assert_array_equal(vividness, [0.25, 1.0, 0.25, 1.0])
    cols = np.arange(6)
    # a: (c - 3) and its mirror's (5 - c - 3) average to -0.5 everywhere: rounded half to even, 0
    assert ab.dtype == np.int8 and (ab[:, 0] == 0).all()
    # b at vividness 1: (2c + 2(5 - c)) / 2 = 5 for every column; at 0.25: round(c/2) and round((5 - c)/2)
    assert (ab[1, 1] == 5).all()
    half = np.round(0.5 * cols)
    expected = (half + half[::-1]) / 2
    np.testing.assert_array_equal(ab[0, 1], np.broadcast_to(np.round(expected), (6, 6)))
    # foreground: (30c + p + 30(5 - c) + p') / 2, p the first pixel of the view (image 1's mirror starts with 5):
    # 155 / 2 = 77.5, rounded half to even, 78
    assert fg.dtype == np.uint8
    assert (fg[0] == 75 + 7).all() and (fg[1] == 78).all()


def test_flip_average_keeps_the_plain_view_for_class_ids_and_the_default_vividness():
    class Classes(Ramp):
        n_classes = 3

    inner = Classes()
    l8 = np.zeros((1, 6, 6), np.uint8)
    ab, fg = FlipAveraged(inner).predict(l8)
    assert inner.calls[0][1] == 0.5  # no vividness given: the inner predictor's default
    np.testing.assert_array_equal(fg, inner.predict(l8)[1])  # class ids are not averaged: the plain view's


def test_a_flip_symmetric_model_gives_the_same_answer_with_and_without_flip():
    class Constant(Ramp):
        def predict(self, l8_small, vividness=0.5):
            batch = len(l8_small)
            return np.full((batch, 2, 6, 6), -40, np.int8), np.full((batch, 6, 6), 201, np.uint8)

    l8 = np.random.default_rng(0).integers(0, 256, (3, 6, 6), dtype=np.uint8)
    for got, want in zip(Colorizer(with_tta(Constant(), "flip")).predict(l8, 0.7), Constant().predict(l8)):
        np.testing.assert_array_equal(got, want)
    assert with_tta(Constant(), "flip").describe()["tta"] == "flip"
    assert isinstance(with_tta(inner := Constant(), "none"), Constant) and with_tta(inner, "none") is inner


def test_unknown_tta_is_refused_by_name():
    with pytest.raises(ValueError, match="'mirror'.*none.*flip"):
        check_tta("mirror")


def test_load_colorizer_with_flip_averages_the_checkpoints_two_views(tmp_path):
    """The wiring every command uses: ``load_colorizer(..., tta="flip")`` answers the mean of the plain model's
    answers for the image and for its mirror (mirrored back), to a rounding step."""
    from semcolor.model import checkpoint
    from semcolor.model.config import ModelConfig
    from semcolor.model.inference import load_colorizer
    from semcolor.model.network import build_model

    config = ModelConfig(arch="unet", input_size=32, color_head="bins")
    checkpoint.save(build_model(config), config, str(tmp_path / "c"))
    l8 = np.random.default_rng(1).integers(0, 256, (2, 32, 32), dtype=np.uint8)
    plain = load_colorizer(str(tmp_path / "c"), device="cpu")
    flipped = load_colorizer(str(tmp_path / "c"), device="cpu", tta="flip")
    assert flipped.predictor.describe()["tta"] == "flip"
    ab, fg = flipped.predict(l8, 0.7)
    ab_a, fg_a = plain.predict(l8, 0.7)
    ab_b, fg_b = plain.predict(np.ascontiguousarray(l8[:, :, ::-1]), 0.7)
    assert np.abs(ab.astype(float) - (ab_a.astype(float) + ab_b[..., ::-1]) / 2).max() <= 1
    assert np.abs(fg.astype(float) - (fg_a.astype(float) + fg_b[..., ::-1]) / 2).max() <= 1
    assert (ab != ab_a).any()  # an untrained model is not mirror-symmetric: the average is not the plain answer
