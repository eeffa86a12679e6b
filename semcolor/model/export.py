"""ONNX export of a checkpoint (``semcolor export``): :meth:`TorchPredictor.predict` as one graph, decoding
included, checked against torch before anything is written.

The graph (opset 20, torch's dynamo exporter; contract version :data:`ONNX_FORMAT`)::

    inputs   l8         uint8   (N, H, W)     L * 255/100 (what Colorizer.prepare gives), H, W >= 32
             vividness  float32 (N,)          in [0, 1] per image (bins head; a regression graph ignores it)
    outputs  ab8        int8    (N, 2, H, W)  a/b in LAB units, rounded
             fg8        uint8   (N, H, W)     foreground probability * 255 (2 classes) or class id

N, H and W are dynamic (the model is fully convolutional; odd sizes are padded by reflection inside and cropped
back). metadata_props carry the :class:`ModelConfig` as JSON (size, n_classes, color head, ...), the semcolor
version and the verification's result.

Verification: torch (CPU, float32) and onnxruntime run the same inputs (noise and synthetic scenes; batch 1 to 3;
square, odd and non-square sizes; vividness 0 to 1 per image). Outputs are integers, so the exporter's float
differences only show where a value sits on a rounding boundary: ab8 and fg8 may differ by at most 1 (LAB unit /
probability level) on at most 1% of the values; anything more refuses the export with :class:`ExportError`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from semcolor import __version__
from semcolor.core import storage
from semcolor.model.config import ModelConfig
from semcolor.model.onnx_format import (
    INPUTS,
    META_CONFIG,
    META_FORMAT,
    META_VERIFIED,
    META_VERSION,
    MIN_SIDE,
    ONNX_FORMAT,
    OUTPUTS,
    is_onnx,
    make_session,
)
from semcolor.model.torch_predictor import (
    l8_to_input,
    load_torch_predictor,
    quantize_outputs,
)
from semcolor.options import option

AB_TOLERANCE = 1
"""Largest |ab8 difference| torch vs onnxruntime, LAB units."""
FG_TOLERANCE = 1
"""Largest |fg8 difference|: probability levels (of 255), or class ids."""
MAX_DIFFERING_SHARE = 0.01
"""Largest share of ab8 / fg8 values that may differ at all."""


class ExportError(ValueError):
    """The exported graph disagrees with torch; the message says which output, on which inputs, by how much."""


class PredictGraph(nn.Module):
    """:meth:`semcolor.model.torch_predictor.TorchPredictor.predict` on CPU as a module: l8 uint8 (N, H, W) and
    vividness float32 (N,) -> (ab8 int8 (N, 2, H, W) LAB units, fg8 uint8 (N, H, W))."""

    def __init__(self, model: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.model = model
        self.n_classes = n_classes

    def forward(self, l8: Tensor, vividness: Tensor) -> tuple[Tensor, Tensor]:
        x = l8_to_input(l8)
        seg, raw = self.model(x)
        return quantize_outputs(seg, self.model.decode_ab(raw.float(), x.shape[-2], x.shape[-1], vividness),
                                self.n_classes)


def to_onnx(model: nn.Module, config: ModelConfig):
    """The model (eval mode, CPU) as an ``onnx.ModelProto``: :class:`PredictGraph` with dynamic N, H, W and the
    config in its metadata. Not verified: see :func:`export_predictor`."""
    import onnx

    graph = PredictGraph(model, config.n_classes).eval()
    batch = torch.export.Dim("batch", min=1)
    height, width = torch.export.Dim("height", min=MIN_SIDE), torch.export.Dim("width", min=MIN_SIDE)
    # Traced at a batch of 2 (1 would be specialized) and at sizes off the multiple of 32, so that the padding
    # the model does for odd sizes is in the graph (a zero-width reflection pad leaves multiples of 32 as they are).
    example = (torch.zeros(2, 97, 131, dtype=torch.uint8), torch.full((2,), 0.5))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # "axis name batch will not be used" and other exporter chatter
        program = torch.onnx.export(graph, example, None, input_names=list(INPUTS), output_names=list(OUTPUTS),
                                    dynamo=True, verbose=False,
                                    dynamic_shapes={"l8": {0: batch, 1: height, 2: width}, "vividness": {0: batch}})
    proto = program.model_proto
    proto.doc_string = ("semcolor: l8 uint8 (N, H, W) = L * 255/100, vividness float32 (N,) in [0, 1] -> ab8 int8 "
                        "(N, 2, H, W) LAB units, fg8 uint8 (N, H, W) foreground probability * 255 or class id")
    onnx.helper.set_model_props(proto, {META_CONFIG: json.dumps(config.to_dict(), sort_keys=True),
                                        META_FORMAT: ONNX_FORMAT, META_VERSION: __version__})
    return proto


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class VerifyCase:
    """One input set of the verification: l8 uint8 (N, H, W), vividness float32 (N,)."""

    name: str
    l8: np.ndarray
    vividness: np.ndarray


def _scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photo-like gray image uint8 (H, W): smooth shading, a few bright and dark shapes, film grain."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    fx, fy, phase = rng.uniform(0.5, 2.0), rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
    shade = 128 + 70 * np.sin(2 * np.pi * fx * xx + phase) * np.cos(2 * np.pi * fy * yy)
    image = Image.fromarray(shade.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        box = [x0, y0, x0 + rng.uniform(8, width / 2), y0 + rng.uniform(8, height / 2)]
        fill = int(rng.integers(0, 256))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    grain = rng.normal(0, 6, (height, width))
    return np.clip(np.asarray(image, dtype=np.float64) + grain, 0, 255).astype(np.uint8)


def verification_cases(size: int, seed: int = 0) -> list[VerifyCase]:
    """The inputs :func:`verify` compares on: noise and scenes at the model size, odd, small and non-square sizes,
    batches of 1 to 3, vividness from 0 to 1 (one per image)."""
    rng = np.random.default_rng(seed)
    plan: list[tuple[str, int, int, int, list[float]]] = [
        ("noise", 1, size, size, [0.5]), ("scene", 2, size, size, [0.0, 1.0]),
        ("scene", 3, 97, 131, [0.25, 0.5, 0.75]), ("noise", 2, 33, 75, [1.0, 0.0]), ("scene", 1, 96, 160, [0.5])]
    cases = []
    for kind, n, h, w, vivid in plan:
        if kind == "noise":
            l8 = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
        else:
            l8 = np.stack([_scene(rng, h, w) for _ in range(n)])
        cases.append(VerifyCase(f"{kind} {n}x{h}x{w} vividness {vivid}", l8, np.asarray(vivid, np.float32)))
    return cases


@dataclass
class Verification:
    """What :func:`verify` found: per output, the largest absolute difference and the share of values differing."""

    cases: list[str]
    max_diff: dict[str, int] = field(default_factory=dict)
    differing_share: dict[str, float] = field(default_factory=dict)
    tolerance: dict[str, float] = field(default_factory=lambda: {
        "ab8_max_diff": AB_TOLERANCE, "fg8_max_diff": FG_TOLERANCE, "differing_share": MAX_DIFFERING_SHARE})
    seconds: float = 0.0

    def line(self) -> str:
        return ", ".join(f"{name} max |diff| {self.max_diff[name]} on {self.differing_share[name]:.4%} of values"
                         for name in OUTPUTS) + f" ({len(self.cases)} input sets)"


def verify(onnx_bytes: bytes, reference, threads: int | None = None) -> Verification:
    """Run ``reference`` (a :class:`semcolor.model.torch_predictor.TorchPredictor`) and the graph on
    :func:`verification_cases`; raise :class:`ExportError` naming every output, input set and difference beyond
    :data:`AB_TOLERANCE` / :data:`FG_TOLERANCE` / :data:`MAX_DIFFERING_SHARE` (or a wrong shape or dtype)."""
    started = time.perf_counter()
    session = make_session(onnx_bytes, threads)
    cases = verification_cases(reference.size)
    limits = {"ab8": AB_TOLERANCE, "fg8": FG_TOLERANCE}
    result = Verification(cases=[c.name for c in cases], max_diff={k: 0 for k in OUTPUTS},
                          differing_share={k: 0.0 for k in OUTPUTS})
    problems: list[str] = []
    for case in cases:
        expected = reference.predict(case.l8, case.vividness)
        got = session.run(list(OUTPUTS), {"l8": case.l8, "vividness": case.vividness})
        for name, want, have in zip(OUTPUTS, expected, got):
            if want.shape != have.shape or want.dtype != have.dtype:
                problems.append(f"{name} is {have.dtype} {have.shape}, torch gives {want.dtype} {want.shape} "
                                f"({case.name})")
                continue
            diff = np.abs(want.astype(np.int16) - have.astype(np.int16))
            worst, share = int(diff.max()), float(np.count_nonzero(diff)) / diff.size
            result.max_diff[name] = max(result.max_diff[name], worst)
            result.differing_share[name] = max(result.differing_share[name], share)
            if worst > limits[name] or share > MAX_DIFFERING_SHARE:
                problems.append(f"{name} differs by up to {worst} (tolerance {limits[name]}) on {share:.2%} of "
                                f"values (at most {MAX_DIFFERING_SHARE:.0%}) for {case.name}")
    result.seconds = time.perf_counter() - started
    if problems:
        raise ExportError("the ONNX graph disagrees with torch: " + "; ".join(problems))
    return result


def export_predictor(reference, threads: int | None = None) -> tuple[bytes, Verification]:
    """A :class:`semcolor.model.torch_predictor.TorchPredictor` on CPU -> (the verified ONNX model as bytes, the
    verification). Raises :class:`ExportError` when the graph disagrees with ``reference``."""
    proto = to_onnx(reference.model, reference.config)
    found = verify(proto.SerializeToString(), reference, threads)
    entry = proto.metadata_props.add()  # metadata only: the verified graph is unchanged
    entry.key, entry.value = META_VERIFIED, json.dumps(
        {"cases": found.cases, "max_diff": found.max_diff, "differing_share": found.differing_share,
         "tolerance": found.tolerance, "torch": torch.__version__})
    return proto.SerializeToString(), found


@dataclass
class ExportReport:
    """What :func:`export_checkpoint` wrote."""

    checkpoint: str
    out: str
    bytes: int
    seconds: float
    config: ModelConfig
    verification: Verification

    def line(self) -> str:
        c = self.config
        return (f"exported {self.checkpoint} -> {self.out} ({self.bytes / 1e6:.1f} MB; {c.arch}, {c.color_head} "
                f"head, {c.n_classes} classes, size {c.input_size}) in {self.seconds:.1f} s; matches torch: "
                f"{self.verification.line()}")


def export_checkpoint(checkpoint: str, out: str, threads: int | None = None) -> ExportReport:
    """Export the checkpoint at ``checkpoint`` to the ONNX file ``out`` (any storage URL, ``.onnx``), verified
    against torch first: :class:`ExportError` (and nothing written) when they disagree."""
    if not is_onnx(out):
        raise ValueError(f"--out must end with .onnx (how a model URL names a graph, not a checkpoint folder); "
                         f"got {out}")
    started = time.perf_counter()
    reference = load_torch_predictor(checkpoint, device="cpu")
    data, found = export_predictor(reference, threads)
    storage.write_bytes(out, data)
    return ExportReport(checkpoint=checkpoint, out=out, bytes=len(data), seconds=time.perf_counter() - started,
                        config=reference.config, verification=found)


# ---------------------------------------------------------------- CLI


@dataclass(kw_only=True)
class ExportOptions:
    """The options of ``semcolor export``."""

    checkpoint: str = option(help="model directory URL (config.json + model.safetensors, or a Ray Train checkpoint)")
    out: str = option(help="ONNX file URL to write, ending in .onnx (written only when it matches torch)")
    threads: int | None = option(None, help="onnxruntime threads of the verification; default this machine's cores")


def run_export(args: argparse.Namespace) -> int:
    """``semcolor export --checkpoint C --out model.onnx``: export, verify against torch, write; one line."""
    from semcolor.options import config_from_args

    options: ExportOptions = config_from_args(ExportOptions, args)
    print(export_checkpoint(options.checkpoint, options.out, options.threads).line())
    return 0
