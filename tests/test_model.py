"""Both architectures and both color heads: shapes at even and odd sizes, gradients, bounded color, one-batch
overfit, losses."""

import functools

import pytest
import torch

from semcolor.model.config import (
    ARCHS,
    COLOR_HEADS,
    GAMUT_BINS,
    LossConfig,
    ModelConfig,
)
from semcolor.model.losses import multitask_loss
from semcolor.model.network import build_model, count_parameters, gflops


@functools.lru_cache(maxsize=None)
def _eval_model(arch: str, n_classes: int, color_head: str = "bins", seg_to_color: bool = False,
                seg_stride: int = 4, seg_decoder: str = "shared"):
    """One model per configuration for the shape tests: building ResNet34 dominates their time."""
    torch.manual_seed(0)
    return build_model(ModelConfig(arch=arch, n_classes=n_classes, color_head=color_head,
                                   seg_to_color=seg_to_color, seg_stride=seg_stride,
                                   seg_decoder=seg_decoder)).eval()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("n_classes", [2, 5])
@pytest.mark.parametrize("hw", [(256, 256), (250, 333), (97, 64)])
def test_output_shapes(arch, n_classes, hw):
    model = _eval_model(arch, n_classes)
    with torch.no_grad():
        seg, raw = model(torch.rand(1, 1, *hw))
        seg2, ab = model.infer(torch.rand(1, 1, *hw))
    padded = [(d + 31) // 32 * 32 // 4 for d in hw]
    assert seg.shape == seg2.shape == (1, n_classes, *hw)
    assert raw.shape == (1, GAMUT_BINS, *padded)  # bin logits stay at the decoder's resolution
    assert ab.shape == (1, 2, *hw)
    assert torch.isfinite(seg).all() and torch.isfinite(ab).all()
    assert ab.abs().max() <= 120.0  # LAB units: a mean of in-gamut bin centres


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("seg_stride", [2, 1])
@pytest.mark.parametrize("hw", [(97, 64), (45, 77)])
def test_finer_segmentation_heads_on_odd_sizes(arch, seg_stride, hw):
    """The mask branch at 1/2 or full resolution: logits at the input's size (cropped from the padded one), the
    color head's raw output still at the decoder's 1/4; with the link, the color head sees pooled probabilities."""
    model = _eval_model(arch, 3, "bins", True, seg_stride)
    with torch.no_grad():
        seg, raw = model(torch.rand(2, 1, *hw))
        x = torch.nn.functional.pad((torch.rand(2, 1, *hw) - 0.449) / 0.226, (0, (-hw[1]) % 32, 0, (-hw[0]) % 32))
        encoded = model.encoder(x)
        fine = model.mask_refiner(model.decoder(encoded), encoded[0], x)
    padded = [(d + 31) // 32 * 32 for d in hw]
    assert seg.shape == (2, 3, *hw) and torch.isfinite(seg).all()
    assert raw.shape == (2, GAMUT_BINS, *(p // 4 for p in padded))
    assert fine.shape[-2:] == tuple(p // seg_stride for p in padded)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("seg_stride", [4, 1])
@pytest.mark.parametrize("hw", [(97, 64), (45, 77)])
def test_own_segmentation_decoder_on_odd_sizes(arch, seg_stride, hw):
    """``seg_decoder="own"``: the mask's decoder has half the shared one's channels and ends at the same 1/4
    resolution; logits at the input's size, the colour output as with the shared decoder."""
    model = _eval_model(arch, 3, "bins", seg_stride == 1, seg_stride, "own")
    with torch.no_grad():
        seg, raw = model(torch.rand(2, 1, *hw))
        x = torch.nn.functional.pad(torch.rand(2, 1, *hw), (0, (-hw[1]) % 32, 0, (-hw[0]) % 32))
        encoded = model.encoder(x)
        shared, own = model.decoder(encoded), model.seg_decoder(encoded)
    padded = [(d + 31) // 32 * 32 for d in hw]
    assert seg.shape == (2, 3, *hw) and torch.isfinite(seg).all()
    assert raw.shape == (2, GAMUT_BINS, *(p // 4 for p in padded))
    assert own.shape[-2:] == shared.shape[-2:] == tuple(p // 4 for p in padded)
    assert own.shape[1] * 2 == shared.shape[1]


@pytest.mark.parametrize("arch", ARCHS)
def test_own_segmentation_decoder_shares_only_the_encoder(arch):
    """The mask's loss reaches the encoder and the mask's own decoder, never the colour's decoder or head; the
    colour's loss never reaches the mask's decoder. The shared layout sends both losses through the one decoder."""
    def reached(model, pick: int) -> set[str]:
        model.zero_grad(set_to_none=True)
        model(torch.rand(2, 1, 64, 48))[pick].square().mean().backward()
        return {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum()}

    own = build_model(ModelConfig(arch=arch, seg_decoder="own"))
    assert reached(own, 0) == {"encoder", "seg_decoder", "mask_refiner", "seg_head"}
    assert reached(own, 1) == {"encoder", "decoder", "color_head"}
    shared = build_model(ModelConfig(arch=arch))
    assert reached(shared, 0) == {"encoder", "decoder", "mask_refiner", "seg_head"}
    with pytest.raises(ValueError, match="seg_decoder.*supported"):
        ModelConfig(seg_decoder="separate")


def test_finer_segmentation_changes_the_mask_at_the_input_resolution():
    """At stride 1 the logits vary between neighbouring pixels of a 4 x 4 cell (a 1/4 head upsampled bilinearly
    cannot make a step inside one); the L image reaches them directly."""
    torch.manual_seed(0)
    model = _eval_model("unet", 2, "bins", False, 1)
    l_in = torch.full((1, 1, 64, 64), 0.3)
    l_in[..., 21:, :] = 0.9  # a step of L inside a 4-pixel cell (rows 20-23)
    with torch.no_grad():
        seg, _ = model(l_in)
        base, _ = model(torch.full((1, 1, 64, 64), 0.3))
    jump = (seg - base)[0, 1, 19:24, 32]
    assert float(jump[2] - jump[1]) != pytest.approx(0.0, abs=1e-4)  # the step shows between rows 20 and 21


@pytest.mark.parametrize("seg_to_color", [False, True])
def test_regression_head_is_bounded_and_link_changes_inputs(seg_to_color):
    model = _eval_model("unet", 2, "regression", seg_to_color)
    with torch.no_grad():
        _, raw = model(torch.rand(2, 1, 97, 64))
        _, ab = model.infer(torch.rand(2, 1, 97, 64), vividness=1.0)
    assert raw.shape == (2, 2, 32, 16) and raw.abs().max() <= 1.0
    assert ab.shape == (2, 2, 97, 64) and ab.abs().max() <= model.config.ab_scale
    assert model.color_head.body[0].in_channels == model.decoder.out_channels + (2 if seg_to_color else 0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("color_head", COLOR_HEADS)
def test_backward_reaches_every_parameter(arch, color_head):
    model = build_model(ModelConfig(arch=arch, color_head=color_head, seg_to_color=True))
    seg, raw = model(torch.rand(2, 1, 64, 48))
    (seg.mean() + raw.mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_bad_config_and_input_are_explained():
    with pytest.raises(ValueError, match="supported"):
        ModelConfig(arch="vgg")
    with pytest.raises(ValueError, match="n_classes"):
        ModelConfig(n_classes=1)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        build_model(ModelConfig())(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="no such file"):
        build_model(ModelConfig(pretrained="/nonexistent/weights.pth"))


def test_heads_at_quarter_resolution_cost_less_than_reference():
    """The reference ran heads at full resolution (~15 GFLOPs at 256); ours stay well under, and the finer mask
    branches add a few tens of thousands of parameters and at most 3 GFLOPs."""
    for arch in ARCHS:
        model = _eval_model(arch, 2)
        assert 20e6 < count_parameters(model) < 30e6
        assert gflops(model, 256) < 14.0
        for stride in (2, 1):
            finer = _eval_model(arch, 2, seg_stride=stride)
            assert 0 < count_parameters(finer) - count_parameters(model) < 100_000
            assert gflops(model, 256) < gflops(finer, 256) < gflops(model, 256) + 3.0
        # the mask's own decoder at half the channels: about 1.2 M parameters more, 1.3 GFLOPs for the unet's
        # (its skips), 0.26 for the transposed decoder
        own, fine = _eval_model(arch, 2, seg_stride=1, seg_decoder="own"), _eval_model(arch, 2, seg_stride=1)
        assert 1e6 < count_parameters(own) - count_parameters(fine) < 2e6
        assert gflops(fine, 256) + 0.2 < gflops(own, 256) < gflops(fine, 256) + 2.0


def _two_synthetic_images():
    g = torch.Generator().manual_seed(0)
    l_in = torch.rand(2, 1, 64, 64, generator=g) * 0.3 + 0.3
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    target[:, 16:48, 16:48] = 1
    l_in[:, :, 16:48, 16:48] += 0.3
    ab = torch.zeros(2, 2, 64, 64)  # LAB units
    ab[:, 0] = 33.0
    ab[:, 1, 16:48, 16:48] = -55.0
    return l_in, target, ab


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("color_head", COLOR_HEADS)
def test_one_batch_overfit(arch, color_head):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, color_head=color_head))
    l_in, target, ab = _two_synthetic_images()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    cfg = LossConfig()
    losses = []
    for _ in range(15):
        seg_logits, raw = model(l_in)
        loss, parts = multitask_loss(seg_logits, raw, target, ab, cfg, model.color_head)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_loss_masks_and_parts():
    from semcolor.model.heads import RegressionColorHead

    head = RegressionColorHead(8, ab_scale=110.0)
    seg = torch.zeros(1, 2, 4, 4, requires_grad=True)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0, 0] = 1
    target[0, 3, 3] = 255
    ab_pred = torch.zeros(1, 2, 4, 4)
    ab_true = torch.zeros(1, 2, 4, 4)
    ab_true[0, :, 1, 1] = 110.0  # an error of 1 model unit on a background pixel only
    total, parts = multitask_loss(seg, ab_pred, target, ab_true, LossConfig(color_mask="foreground"), head)
    assert parts["color"].item() == 0.0  # background error ignored by the foreground mask
    assert parts["seg"].item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    _, parts_all = multitask_loss(seg, ab_pred, target, ab_true, LossConfig(color_mask="all"), head)
    assert parts_all["color"].item() == pytest.approx(2.0 / 16)
    total, _ = multitask_loss(seg, ab_pred, target, ab_true, LossConfig(seg_weight=0.0, color_weight=2.0), head)
    assert total.item() == pytest.approx(4.0 / 16)
    all_ignored = torch.full((1, 4, 4), 255)
    total, parts = multitask_loss(seg, ab_pred, all_ignored, ab_true, LossConfig(), head)
    assert torch.isfinite(total) and parts["seg"].item() == 0.0
    with pytest.raises(ValueError, match="supported"):
        LossConfig(color_mask="background")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_from_local_file_adapts_first_conv(tmp_path, suffix):
    """A torchvision ResNet34 state dict (what the 'imagenet' download gives) loads into the 1-channel encoder."""
    from safetensors.torch import save_file
    from torchvision.models import resnet34

    state = resnet34(weights=None).state_dict()
    path = tmp_path / f"resnet34{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = build_model(ModelConfig(arch="unet", pretrained=str(path)))
    torch.testing.assert_close(model.encoder.stem[0].weight, state["conv1.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(model.encoder.layer4[2].conv2.weight, state["layer4.2.conv2.weight"])


def test_pretrained_file_of_another_network_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="do not fit the ResNet34 encoder"):
        build_model(ModelConfig(pretrained=str(path)))
