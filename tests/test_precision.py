"""The GPU branches of inference and training (bf16 autocast, channels_last) run on every machine: on CPU here, on
CUDA in the tests marked ``gpu`` (skipped, with the reason, where torch sees no GPU). No Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semcolor.data.preprocess import preprocess_batch
from semcolor.model import checkpoint
from semcolor.model.config import LossConfig, ModelConfig
from semcolor.model.export import AB_TOLERANCE, FG_TOLERANCE, MAX_DIFFERING_SHARE
from semcolor.model.network import build_model
from semcolor.model.torch_predictor import TorchPredictor, autocast_dtype, load_torch_predictor, uses_channels_last
from semcolor.train.forward import forward_loss

BF16_FG_SHARE = 0.05
"""bf16 logits move the foreground probability x 255 by one level on a few percent of pixels (~2 % seen on CPU),
more than the export's 1 % for onnxruntime: within the tolerance per value, not per share. Binary masks (> 127)
agree on 99 % or more."""

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU on this machine")


@pytest.fixture(scope="module")
def model() -> tuple[torch.nn.Module, ModelConfig]:
    """A random-init UNet at 64 px with the full-resolution mask and a photo-like AB prior (so decoding matters)."""
    torch.manual_seed(0)
    config = ModelConfig(arch="unet", input_size=64, seg_stride=1)
    net = build_model(config).eval()
    centres = net.color_head.bins
    prior = torch.exp(-centres.square().sum(dim=1) / (2 * 15.0**2))
    net.color_head.set_color_space(centres, prior / prior.sum())
    return net, config


def _l8(n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    l8 = rng.integers(0, 256, (n, 64, 64), dtype=np.uint8)
    yy, xx = np.mgrid[0:64, 0:64]
    l8[0] = (128 + 90 * np.sin(xx / 7.0) * np.cos(yy / 11.0)).astype(np.uint8)  # smooth structure, not only noise
    return l8


def _predictor(model, device: str, autocast: torch.dtype | None, channels_last: bool) -> TorchPredictor:
    net, config = model
    net = net.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return TorchPredictor(net, config, torch.device(device), 64, autocast=autocast, channels_last=channels_last)


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(d.max()), float(np.count_nonzero(d)) / d.size


def _check_gpu_branch(model, device: str) -> None:
    """bf16 within tolerance of fp32; channels_last equal to contiguous; a batch equal to its images one by one."""
    l8, v = _l8(), np.array([0.0, 0.45, 1.0], np.float32)
    fp32 = _predictor(model, device, None, False).predict(l8, v)
    bf16 = _predictor(model, device, torch.bfloat16, True).predict(l8, v)
    (ab_max, ab_share), (fg_max, fg_share) = _diff(fp32[0], bf16[0]), _diff(fp32[1], bf16[1])
    assert ab_max <= AB_TOLERANCE and ab_share <= MAX_DIFFERING_SHARE, (ab_max, ab_share)
    assert fg_max <= FG_TOLERANCE and fg_share <= BF16_FG_SHARE, (fg_max, fg_share)
    assert np.mean((fp32[1] > 127) == (bf16[1] > 127)) >= 0.99
    assert ab_share + fg_share > 0  # bf16 did run: its rounding shows somewhere
    fp32_cl = _predictor(model, device, None, True).predict(l8, v)
    for contiguous, last in zip(fp32, fp32_cl):
        assert _diff(contiguous, last)[0] <= 1  # the same math in another layout (equal on CPU, seen)
    gpu_branch = _predictor(model, device, torch.bfloat16, True)
    batched = gpu_branch.predict(l8, v)
    for i in range(len(l8)):
        alone = gpu_branch.predict(l8[i:i + 1], v[i:i + 1])
        for out_batch, out_alone in zip(batched, alone):
            assert _diff(out_batch[i:i + 1], out_alone)[0] <= 1, i


def test_the_gpu_branch_of_inference_runs_on_cpu(model):
    _check_gpu_branch(model, "cpu")


def test_channels_last_equals_contiguous_exactly_on_cpu(model):
    l8 = _l8()
    contiguous = _predictor(model, "cpu", None, False).predict(l8, 0.45)
    channels_last = _predictor(model, "cpu", None, True).predict(l8, 0.45)
    for a, b in zip(contiguous, channels_last):
        np.testing.assert_array_equal(a, b)


def test_precision_and_memory_format_resolve_per_device_and_load(model, tmp_path):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("auto", cuda) is torch.bfloat16
    assert autocast_dtype("bf16", cpu) is torch.bfloat16 and autocast_dtype("fp32", cuda) is None
    assert not uses_channels_last("auto", cpu) and uses_channels_last("auto", cuda)
    assert uses_channels_last("channels_last", cpu) and not uses_channels_last("contiguous", cuda)
    with pytest.raises(ValueError, match="fp32"):
        autocast_dtype("fp16", cpu)
    with pytest.raises(ValueError, match="channels_last"):
        uses_channels_last("nhwc", cpu)
    net, config = model
    url = checkpoint.save(net, config, str(tmp_path / "ckpt"))
    loaded = load_torch_predictor(url, "cpu", precision="bf16", memory_format="channels_last")
    assert loaded.autocast is torch.bfloat16 and loaded.channels_last
    assert loaded.describe()["precision"] == "bfloat16"
    conv = loaded.model.encoder.layer1[0].conv1.weight  # 64 -> 64 channels: the two layouts differ
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_precision_bf16_reaches_the_colorizer_through_every_front_end(model, tmp_path):
    """``--precision bf16`` (colorize, serve): torch in bf16 autocast and channels_last on CPU, also under ``--backend
    auto`` (which is onnxruntime on CPU in fp32); refused with onnxruntime or a .onnx graph, naming both; the bulk
    actor loads it; its outputs stay within the export's tolerance of fp32."""
    from pydantic import ValidationError

    from semcolor.bulk.job import ColorizeConfig
    from semcolor.bulk.stages import ColorizeActor
    from semcolor.model.inference import load_colorizer, resolve_backend
    from semcolor.serve.args import ServeArgs

    net, config = model
    url = checkpoint.save(net, config, str(tmp_path / "ckpt"))
    assert resolve_backend("auto", "cpu", "bf16") == "torch" and resolve_backend("torch", "cpu", "bf16") == "torch"
    assert resolve_backend("auto", "cpu", "fp32") == resolve_backend("auto", "cpu") == "onnxruntime"
    bf16 = load_colorizer(url, device="cpu", backend="auto", precision="bf16").predictor
    assert isinstance(bf16, TorchPredictor) and bf16.autocast is torch.bfloat16 and bf16.channels_last
    fp32 = load_colorizer(url, device="cpu", backend="torch", precision="fp32").predictor
    assert fp32.autocast is None and not fp32.channels_last
    l8, v = _l8(), np.array([0.0, 0.45, 1.0], np.float32)
    (ab_max, ab_share), (fg_max, _) = (_diff(a, b) for a, b in zip(fp32.predict(l8, v), bf16.predict(l8, v)))
    assert ab_max <= AB_TOLERANCE and ab_share <= MAX_DIFFERING_SHARE and fg_max <= FG_TOLERANCE

    actor = ColorizeActor(url, size=64, device="cpu", threads=1, backend="auto", precision="bf16")
    assert actor.colorizer.predictor.describe()["precision"] == "bfloat16"
    with pytest.raises(ValueError, match="precision bf16 runs on the torch backend; --backend onnxruntime"):
        ColorizeConfig(src="in", dst="out", checkpoint=url, backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match=r"model\.onnx is an ONNX graph"):
        ColorizeConfig(src="in", dst="out", checkpoint="s3://b/model.onnx", precision="bf16")
    with pytest.raises(ValueError, match="Wrong precision 'fp16'"):
        load_colorizer(url, device="cpu", precision="fp16")
    with pytest.raises(ValidationError, match="precision bf16 runs on the torch backend"):
        ServeArgs(checkpoint=url, backend="onnxruntime", precision="bf16")
    assert ServeArgs(checkpoint=url, precision="bf16").settings().precision == "bf16"


def _training_inputs(device: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8, generator=gen)
    mask = torch.zeros(4, 64, 64, dtype=torch.uint8)
    mask[:, 16:48, 20:40] = 255
    return {k: v.to(device) for k, v in preprocess_batch(rgb, mask, 2, train=False).items()}


def _check_training_forward(model, device: str) -> None:
    """The training forward in bf16 + channels_last: the loss within 2 % of fp32's, every gradient finite."""
    net, _ = model
    net = net.to(device).train()
    inputs, config = _training_inputs(device), LossConfig(color_weight=0.3, mask_loss="lovasz")
    torch.manual_seed(1)
    fp32, _ = forward_loss(net, net.color_head, inputs, config, None, False)
    net = net.to(memory_format=torch.channels_last)
    torch.manual_seed(1)
    bf16, parts = forward_loss(net, net.color_head, inputs, config, torch.bfloat16, True)
    assert bf16.dtype == torch.float32 and bf16.item() == pytest.approx(fp32.item(), rel=0.02)
    net.zero_grad()
    bf16.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert parts["seg"] > 0 and parts["color"] > 0
    net.to(memory_format=torch.contiguous_format).eval().cpu()


def test_the_gpu_branch_of_training_runs_on_cpu(model):
    _check_training_forward(model, "cpu")


@pytest.mark.gpu
@needs_cuda
def test_the_gpu_branch_of_inference_on_cuda(model):
    _check_gpu_branch(model, "cuda")


@pytest.mark.gpu
@needs_cuda
def test_the_gpu_branch_of_training_on_cuda(model):
    _check_training_forward(model, "cuda")
