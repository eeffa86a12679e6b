"""Checkpoint round trips (local and memory://), and clear errors for missing, corrupt or mismatched files."""

import json

import pytest
import torch

from semcolor.model import checkpoint
from semcolor.model.checkpoint import CheckpointError
from semcolor.model.config import ModelConfig
from semcolor.model.network import build_model


@pytest.mark.parametrize("arch", ["resnet34", "unet"])
def test_round_trip_gives_identical_outputs(tmp_path, arch):
    config = ModelConfig(arch=arch, n_classes=3, input_size=64)
    model = build_model(config).eval()
    url = str(tmp_path / "ckpt")
    checkpoint.save(model, config, url, extra={"epoch": 4})
    loaded, loaded_config = checkpoint.load(url)
    assert loaded_config == config
    assert checkpoint.load_config(url)[1] == {"epoch": 4}
    x = torch.rand(2, 1, 50, 70)
    with torch.no_grad():
        for a, b in zip(model(x), loaded(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bins_checkpoint_keeps_its_bins_and_prior(tmp_path):
    """A bins model's checkpoint carries the bin centres and the AB prior: a fresh build has the uniform prior,
    the loaded model the saved one."""
    config = ModelConfig(input_size=64, seg_to_color=True)
    model = build_model(config).eval()
    prior = torch.rand(config.n_bins).double()
    bins = model.color_head.bins + torch.rand(model.color_head.bins.shape)  # centres a fresh build does not have
    model.color_head.set_color_space(bins, (prior / prior.sum()).float())
    checkpoint.save(model, config, str(tmp_path / "ckpt"))
    loaded, loaded_config = checkpoint.load(str(tmp_path / "ckpt"))
    assert loaded_config.color_head == "bins" and loaded_config.seg_to_color
    assert torch.equal(loaded.color_head.prior, model.color_head.prior)
    assert torch.equal(loaded.color_head.bins, model.color_head.bins)
    fresh = build_model(config).color_head
    assert not torch.equal(fresh.prior, model.color_head.prior) and not torch.equal(fresh.bins, model.color_head.bins)


def test_version_1_regression_checkpoint_still_loads_and_runs(tmp_path):
    """Checkpoints written before the bins head (config version 1, no color_head key) load as regression models
    and colorize as before."""
    from semcolor.model.inference import load_colorizer

    config = ModelConfig(arch="unet", input_size=64, color_head="regression", seg_stride=4)  # as version 1 was
    model = build_model(config).eval()
    url = str(tmp_path / "old")
    checkpoint.save(model, config, url)
    doc = json.loads((tmp_path / "old" / "config.json").read_text())
    old = {k: v for k, v in doc["model"].items() if k not in ("color_head", "n_bins", "seg_to_color", "seg_stride")}
    (tmp_path / "old" / "config.json").write_text(json.dumps({**doc, "model": {**old, "version": 1}}))
    loaded, loaded_config = checkpoint.load(url)
    assert loaded_config.color_head == "regression"
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.infer(x)[1], model.infer(x)[1], rtol=0, atol=0)
    rgb, mask = load_colorizer(url, device="cpu").colorize((torch.rand(50, 70, 3) * 255).byte().numpy())
    assert rgb.shape == (50, 70, 3) and mask.shape == (50, 70)


def test_version_2_bins_checkpoint_loads_with_its_quarter_resolution_mask(tmp_path):
    """Checkpoints written before the finer mask (config version 2, no seg_stride key) load as stride-4 models and
    give what they gave; a new config at stride 1 loads its mask branch."""
    config = ModelConfig(arch="unet", input_size=64, seg_stride=4)
    model = build_model(config).eval()
    url = str(tmp_path / "v2")
    checkpoint.save(model, config, url)
    doc = json.loads((tmp_path / "v2" / "config.json").read_text())
    old = {k: v for k, v in doc["model"].items() if k != "seg_stride"}
    (tmp_path / "v2" / "config.json").write_text(json.dumps({**doc, "model": {**old, "version": 2}}))
    loaded, loaded_config = checkpoint.load(url)
    assert loaded_config.seg_stride == 4 and loaded.mask_refiner is None
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        for got, want in zip(loaded.infer(x, 0.45), model.infer(x, 0.45)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    fine = ModelConfig(arch="unet", input_size=64, seg_stride=1)
    checkpoint.save(build_model(fine), fine, str(tmp_path / "v3"))
    loaded_fine, fine_config = checkpoint.load(str(tmp_path / "v3"))
    assert fine_config.seg_stride == 1 and loaded_fine.mask_refiner is not None
    assert fine_config.seg_decoder == "shared" and loaded.seg_decoder is None and loaded_fine.seg_decoder is None
    own = ModelConfig(arch="unet", input_size=64, seg_decoder="own")
    own_model = build_model(own).eval()
    checkpoint.save(own_model, own, str(tmp_path / "own"))
    loaded_own, own_config = checkpoint.load(str(tmp_path / "own"))
    assert own_config.seg_decoder == "own" and loaded_own.seg_decoder is not None
    with torch.no_grad():
        for got, want in zip(loaded_own.infer(x, 0.45), own_model.infer(x, 0.45)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_round_trip_through_fsspec_url():
    config = ModelConfig(arch="resnet34", input_size=64)
    model = build_model(config)
    checkpoint.save(model, config, "memory://ckpts/one")
    loaded, _ = checkpoint.load("memory://ckpts/one")
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_ddp_prefixes_are_stripped(tmp_path):
    config = ModelConfig(arch="resnet34", input_size=64)
    model = build_model(config)
    wrapper = torch.nn.Module()
    wrapper.module = model  # what DistributedDataParallel looks like
    checkpoint.save(wrapper, config, str(tmp_path / "c"))
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "c" / "model.safetensors"))
    assert saved.keys() == model.state_dict().keys()  # no "module." prefix
    loaded, _ = checkpoint.load(str(tmp_path / "c"))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="config.json: not found"):
        checkpoint.load(str(tmp_path / "nothing"))


def test_truncated_weights_name_the_file(tmp_path):
    config = ModelConfig(arch="resnet34", input_size=64)
    url = str(tmp_path / "c")
    checkpoint.save(build_model(config), config, url)
    weights = tmp_path / "c" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors: corrupt or truncated"):
        checkpoint.load(url)


def test_config_weights_mismatch_is_explained(tmp_path):
    config = ModelConfig(arch="resnet34", n_classes=2, input_size=64)
    url = str(tmp_path / "c")
    checkpoint.save(build_model(config), config, url)
    doc = json.loads((tmp_path / "c" / "config.json").read_text())
    doc["model"]["n_classes"] = 5
    (tmp_path / "c" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"do not match config.json \(arch=resnet34, n_classes=5\)"):
        checkpoint.load(url)
    doc["model"]["arch"] = "vgg"
    (tmp_path / "c" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="not a semcolor model config"):
        checkpoint.load(url)


def test_no_pickle_in_checkpoint(tmp_path):
    config = ModelConfig(arch="resnet34", input_size=64)
    url = tmp_path / "c"
    checkpoint.save(build_model(config), config, str(url))
    assert sorted(p.name for p in url.iterdir()) == ["config.json", "model.safetensors"]


def test_a_run_starts_from_the_tensors_another_checkpoint_shares(tmp_path):
    """--init: a unet with a 1/4 mask (a colour-only pre-training, say) starts a full-resolution-mask unet: the
    encoder, decoder and colour head are copied, the new mask stages keep their init; a resnet34 checkpoint gives
    the encoder only; a checkpoint that shares nothing, or is missing, is refused naming the file."""
    source_config = ModelConfig(input_size=64, seg_stride=4)
    source = build_model(source_config)
    checkpoint.save(source, source_config, str(tmp_path / "first"))
    model = build_model(ModelConfig(input_size=64, seg_stride=1))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    copied, left = checkpoint.load_shared_weights(model, str(tmp_path / "first"))
    state, saved = model.state_dict(), source.state_dict()
    same_shape = [k for k in state if k in saved and saved[k].shape == state[k].shape]
    assert copied == len(same_shape) and left == len(state) - copied > 0
    for key in state:
        expected = saved[key] if key in same_shape else fresh[key]
        assert torch.equal(state[key], expected), key
    assert any(k.startswith("encoder.") for k in same_shape) and any(k.startswith("decoder.") for k in same_shape)
    assert any(k.startswith("color_head.") for k in same_shape)

    other_config = ModelConfig(arch="resnet34", input_size=64)
    checkpoint.save(build_model(other_config), other_config, str(tmp_path / "other"))
    model = build_model(ModelConfig(input_size=64))
    copied, _ = checkpoint.load_shared_weights(model, str(tmp_path / "other"))
    assert copied >= len([k for k in model.state_dict() if k.startswith("encoder.")])

    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "config.json").write_text((tmp_path / "first" / "config.json").read_text())
    from safetensors.torch import save_file

    save_file({"something.else": torch.zeros(3)}, str(tmp_path / "foreign" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"foreign/model.safetensors: shares no tensor"):
        checkpoint.load_shared_weights(model, str(tmp_path / "foreign"))
    with pytest.raises(CheckpointError, match=r"nothing/config.json: not found"):
        checkpoint.load_shared_weights(model, str(tmp_path / "nothing"))
