"""Both architectures: shapes at even and odd sizes, gradients, bounded color, one-batch overfit, losses."""

import functools

import pytest
import torch

from semcolor.model.config import ARCHS, LossConfig, ModelConfig
from semcolor.model.losses import multitask_loss
from semcolor.model.network import build_model, count_parameters, gflops


@functools.lru_cache(maxsize=None)
def _eval_model(arch: str, n_classes: int):
    """One model per (arch, n_classes) for the shape tests: building ResNet34 dominates their time."""
    torch.manual_seed(0)
    return build_model(ModelConfig(arch=arch, n_classes=n_classes)).eval()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("n_classes", [2, 5])
@pytest.mark.parametrize("hw", [(256, 256), (250, 333), (97, 64)])
def test_output_shapes(arch, n_classes, hw):
    model = _eval_model(arch, n_classes)
    with torch.no_grad():
        seg, ab = model(torch.rand(1, 1, *hw))
    assert seg.shape == (1, n_classes, *hw)
    assert ab.shape == (1, 2, *hw)
    assert torch.isfinite(seg).all() and torch.isfinite(ab).all()
    assert ab.abs().max() <= 1.0


@pytest.mark.parametrize("arch", ARCHS)
def test_backward_reaches_every_parameter(arch):
    model = build_model(ModelConfig(arch=arch))
    seg, ab = model(torch.rand(2, 1, 64, 48))
    (seg.mean() + ab.mean()).backward()
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
    """The reference ran heads at full resolution (~15 GFLOPs at 256); ours stay well under."""
    for arch in ARCHS:
        model = _eval_model(arch, 2)
        assert 20e6 < count_parameters(model) < 30e6
        assert gflops(model, 256) < 14.0


def _two_synthetic_images():
    g = torch.Generator().manual_seed(0)
    l_in = torch.rand(2, 1, 64, 64, generator=g) * 0.3 + 0.3
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    target[:, 16:48, 16:48] = 1
    l_in[:, :, 16:48, 16:48] += 0.3
    ab = torch.zeros(2, 2, 64, 64)
    ab[:, 0] = 0.3
    ab[:, 1, 16:48, 16:48] = -0.5
    return l_in, target, ab


@pytest.mark.parametrize("arch", ARCHS)
def test_one_batch_overfit(arch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch))
    l_in, target, ab = _two_synthetic_images()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    cfg = LossConfig()
    losses = []
    for _ in range(15):
        seg_logits, ab_pred = model(l_in)
        loss, parts = multitask_loss(seg_logits, ab_pred, target, ab, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_loss_masks_and_parts():
    seg = torch.zeros(1, 2, 4, 4, requires_grad=True)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0, 0] = 1
    target[0, 3, 3] = 255
    ab_pred = torch.zeros(1, 2, 4, 4)
    ab_true = torch.zeros(1, 2, 4, 4)
    ab_true[0, :, 1, 1] = 1.0  # an error on a background pixel only
    total, parts = multitask_loss(seg, ab_pred, target, ab_true, LossConfig(color_mask="foreground"))
    assert parts["color"].item() == 0.0  # background error ignored by the foreground mask
    assert parts["seg"].item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    _, parts_all = multitask_loss(seg, ab_pred, target, ab_true, LossConfig(color_mask="all"))
    assert parts_all["color"].item() == pytest.approx(2.0 / 16)
    total, _ = multitask_loss(seg, ab_pred, target, ab_true, LossConfig(seg_weight=0.0, color_weight=2.0))
    assert total.item() == pytest.approx(4.0 / 16)
    all_ignored = torch.full((1, 4, 4), 255)
    total, parts = multitask_loss(seg, ab_pred, all_ignored, ab_true, LossConfig())
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
