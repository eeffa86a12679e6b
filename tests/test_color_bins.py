"""AB bins: the gamut, quantization, soft encoding, rebalancing, the annealed mean, and a vivid one-batch overfit."""

import numpy as np
import pytest
import torch

from semcolor.core import ab_grid, color
from semcolor.model import color_bins as cb
from semcolor.model.config import GAMUT_BINS, LossConfig, ModelConfig
from semcolor.model.losses import multitask_loss
from semcolor.model.metrics import colorfulness
from semcolor.model.network import build_model


def test_gamut_bins_cover_srgb_and_nothing_else():
    bins = ab_grid.gamut_bins()
    assert bins.shape == (GAMUT_BINS, 2)
    assert torch.equal(bins % ab_grid.GRID, torch.zeros_like(bins))  # centres on the grid
    # every sRGB primary and secondary falls in a bin's own cell
    rgb = torch.tensor([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255]]]],
                       dtype=torch.uint8)
    ab = color.rgb_to_lab(color.uint8_to_float(rgb))[0, 1:].reshape(2, -1).T
    assert (ab_grid.cell_to_bin(bins)[ab_grid.cell_index(ab)] >= 0).all()
    assert not ((bins[:, 0] == 120) | (bins[:, 1] == -120)).any()  # far corners of the grid are out of gamut


def test_pure_colors_decode_back_within_one_bin():
    """Encode a pure color (soft, 5 nearest bins), decode the target distribution: back within one bin."""
    bins = ab_grid.gamut_bins()
    rgb = torch.tensor([[[[200, 30, 30], [30, 160, 40], [40, 60, 200], [230, 200, 40], [128, 128, 128]]]],
                       dtype=torch.uint8)
    ab = color.rgb_to_lab(color.uint8_to_float(rgb))[0, 1:].reshape(2, -1).T
    idx, weights = cb.soft_encode(ab, bins)
    assert idx.shape == weights.shape == (5, cb.SOFT_NEIGHBOURS)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(5))
    dist = torch.zeros(5, len(bins)).scatter_(1, idx, weights)
    logits = dist.clamp_min(1e-12).log()[..., None, None]  # (N, Q, 1, 1)
    decoded = cb.annealed_mean(logits, bins, 1.0)[:, :, 0, 0]
    assert (decoded - ab).norm(dim=1).max() < ab_grid.GRID
    hard = bins[ab_grid.quantize(ab, bins)]
    assert (hard - ab).abs().max() <= ab_grid.GRID / 2 + 1e-4  # the bin whose cell holds the color


def test_rebalancing_weights_have_mean_one_under_the_prior():
    bins = ab_grid.gamut_bins()
    counts = torch.zeros(len(bins))
    counts[ab_grid.quantize(torch.zeros(1, 2), bins)] = 1000  # mostly gray
    counts[:20] += 3
    prior = cb.smooth_prior(counts, bins)
    assert prior.sum().item() == pytest.approx(1.0) and (prior > 0).all()
    for mix in (0.05, 0.5, 0.9):
        w = cb.rebalance_weights(prior, mix)
        assert (prior * w.double()).sum().item() == pytest.approx(1.0, rel=1e-5)
        assert w[ab_grid.quantize(torch.zeros(1, 2), bins)].item() < w.max().item()  # common gray weighs least
    torch.testing.assert_close(cb.rebalance_weights(prior, 1.0), torch.ones(len(bins)))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            cb.rebalance_weights(prior, bad)


def test_annealed_mean_between_mean_and_mode():
    bins = ab_grid.gamut_bins()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, len(bins), 3, 3, generator=g)
    logits.scatter_(1, torch.randint(0, len(bins), (2, 1, 3, 3), generator=g), 6.0)  # a clear mode per pixel
    probs = logits.softmax(dim=1)
    mean = torch.einsum("bqhw,qc->bchw", probs, bins)
    torch.testing.assert_close(cb.annealed_mean(logits, bins, 1.0), mean)
    mode = bins[logits.argmax(dim=1)].permute(0, 3, 1, 2)
    near_zero = cb.annealed_mean(logits, bins, 0.02)
    assert (near_zero - mode).abs().max() < 0.5
    assert (cb.annealed_mean(logits, bins, 0.3) - mode).abs().mean() < (mean - mode).abs().mean()
    # per-image temperatures: image 0 at T = 1, image 1 near its mode
    both = cb.annealed_mean(logits, bins, torch.tensor([1.0, 0.02]))
    torch.testing.assert_close(both[0], mean[0])
    torch.testing.assert_close(both[1], near_zero[1])
    assert cb.temperature(0.0) == 1.0 and cb.temperature(0.5) == cb.temperature(1.0) == pytest.approx(0.46)
    torch.testing.assert_close(cb.temperature(torch.tensor([0.0, 0.25, 1.0])), torch.tensor([1.0, 0.73, 0.46]))


def test_vividness_zero_undoes_the_rebalancing_and_one_redoes_it():
    """A head trained with weights w predicts q ~ w p: at vividness 0 the decoding is the mean under p itself
    (the calibrated posterior), at 0.5 it keeps q, at 1 it favours rare colors further; per image in a batch."""
    bins = ab_grid.gamut_bins()
    g = torch.Generator().manual_seed(1)
    prior = torch.exp(-bins.square().sum(dim=1) / (2 * 15.0**2))  # as in photos: mostly near gray
    prior = prior / prior.sum()
    mix = 0.5
    w = cb.rebalance_weights(prior, mix)
    log_p = torch.randn(1, len(bins), 2, 2, generator=g)
    q_logits = log_p + torch.log(w).view(1, -1, 1, 1)  # what a head trained with w predicts
    mean_p = cb.annealed_mean(log_p, bins, 1.0)
    torch.testing.assert_close(cb.decode_vivid(q_logits, bins, prior, mix, 0.0), mean_p, rtol=0, atol=1e-3)
    as_trained = cb.annealed_mean(q_logits, bins, cb.temperature(0.5))
    torch.testing.assert_close(cb.decode_vivid(q_logits, bins, prior, mix, 0.5), as_trained, rtol=0, atol=1e-3)
    chroma = [cb.decode_vivid(q_logits, bins, prior, mix, v).norm(dim=1).mean().item() for v in (0.0, 0.5, 1.0)]
    assert chroma[0] < chroma[1] < chroma[2], chroma  # rare colors are the saturated ones: vivider, more chroma
    both = cb.decode_vivid(q_logits.expand(2, -1, -1, -1), bins, prior, mix, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(both[0], mean_p[0], rtol=0, atol=1e-3)
    torch.testing.assert_close(both[1], cb.decode_vivid(q_logits, bins, prior, mix, 1.0)[0], rtol=0, atol=1e-3)


def test_one_batch_overfit_reproduces_a_vivid_target():
    """Bins head, 2 images with saturated colors (red object, blue-green background): after a short overfit the
    annealed mean's colorfulness is within 10 % of the target's (a regression to the mean would be far below)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="unet", color_head="bins", rebalance=1.0, seg_stride=4))  # tuned before the finer mask
    rgb = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    rgb[:] = (20, 110, 160)
    rgb[:, 16:48, 16:48] = (200, 40, 30)
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    target[:, 16:48, 16:48] = 1
    lab = color.rgb_to_lab(color.uint8_to_float(torch.from_numpy(rgb)))
    l_in, ab = lab[:, :1] / 100.0, lab[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(80):
        seg, raw = model(l_in)
        loss, _ = multitask_loss(seg, raw, target, ab, LossConfig(), model.color_head)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        _, ab_pred = model.infer(l_in, vividness=0.6)
    pred = color.float_to_uint8(color.merge_l_ab(lab[:, :1], ab_pred)).numpy()
    want, got = colorfulness(rgb[0]), colorfulness(pred[0])
    assert want > 40
    assert abs(got - want) / want < 0.1, (got, want)
