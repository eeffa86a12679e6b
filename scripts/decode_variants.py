"""Decoding variants of one trained checkpoint on the quality protocol's held-out ECSSD photos, at full resolution.

Compares, on the same forward passes: the annealed mean along the vividness knob (what `semcolor` decodes), a
chroma gain on the calibrated mean (AB x g at v 0: another way to reach a given colorfulness), and horizontal-flip
test-time augmentation (the probabilities of the image and of its mirror averaged, for the color bins and the
mask). Prints PSNR - gray and colorfulness / truth per variant, mIoU and boundary IoU with and without the flip,
and writes them as JSON.

    python scripts/decode_variants.py CHECKPOINT [--data ECSSD_DIR] [--limit N] [--out decode_variants.json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from semcolor.benchmarks.quality import DEFAULT_DATA, VAL_FRACTION
from semcolor.core import storage
from semcolor.core.decode import DEFAULT_MAX_PIXELS, decode_pair
from semcolor.evaluation.job import _select_pairs, target_classes
from semcolor.model.inference import load_colorizer
from semcolor.model.metrics import BoundaryAccumulator, ColorAccumulator, SegmentationAccumulator
from semcolor.model.torch_predictor import l8_to_input, quantize_outputs

VARIANTS: dict[str, tuple[float, float]] = {
    **{f"annealed v={v:g}": (v, 1.0) for v in (0.0, 0.25, 0.35, 0.45, 0.5, 0.65)},
    **{f"mean x{g:g}": (0.0, g) for g in (1.3, 1.5, 1.7, 2.0)},
    **{f"v=0.25 x{g:g}": (0.25, g) for g in (1.2, 1.4)},
}
"""name -> (vividness, chroma gain applied to the decoded AB)."""


def flip_averaged(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L input (B, 1, S, S) -> (seg log-probabilities, color log-probabilities) averaged over x and its mirror."""
    seg, raw = model(x)
    seg_f, raw_f = (torch.flip(t, dims=[-1]) for t in model(torch.flip(x, dims=[-1])))
    return ((seg.softmax(1) + seg_f.softmax(1)) / 2).log(), ((raw.softmax(1) + raw_f.softmax(1)) / 2).log()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="ECSSD folder with images/ and masks/")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default="decode_variants.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    colorizer = load_colorizer(args.checkpoint, device="cpu", backend="torch")
    model = colorizer.predictor.model
    pairs = _select_pairs(f"{args.data}/images", f"{args.data}/masks", None, args.limit, VAL_FRACTION).to_pylist()
    color = {(name, flip): ColorAccumulator() for name in VARIANTS for flip in (False, True)}
    gray = ColorAccumulator()
    seg = {flip: (SegmentationAccumulator(2), BoundaryAccumulator(2)) for flip in (False, True)}
    for pair in pairs:
        sample = decode_pair(storage.read_bytes(pair["image"]), storage.read_bytes(pair["mask"]), None,
                             DEFAULT_MAX_PIXELS, pair["key"])
        truth = target_classes(sample.mask, 2)
        l8, small = colorizer.prepare(sample.rgb)
        x = l8_to_input(torch.from_numpy(small[None].copy()))
        with torch.no_grad():
            outputs = {False: model(x), True: flip_averaged(model, x)}
        gray.update(colorizer.merge(l8, np.zeros((2, *small.shape), np.int8), small), sample.rgb)
        for flip, (seg_logits, raw) in outputs.items():
            for name, (vividness, gain) in VARIANTS.items():
                ab = model.decode_ab(raw.float(), *x.shape[-2:], vividness) * gain
                ab8, fg8 = quantize_outputs(seg_logits.float(), ab, 2)
                color[(name, flip)].update(colorizer.merge(l8, ab8[0].numpy(), small), sample.rgb)
            mask = target_classes(colorizer.mask(l8, fg8[0].numpy(), small), 2)
            seg[flip][0].update(mask[None], truth[None])
            seg[flip][1].update(mask, truth)
    gray_psnr = gray.result()["psnr"]
    result = {"checkpoint": args.checkpoint, "images": len(pairs), "gray_psnr": gray_psnr, "color": {}, "mask": {}}
    print(f"{'variant':24s} {'PSNR - gray':>12s} {'colorfulness':>12s}")
    for (name, flip), acc in color.items():
        m = acc.result()
        label = name + (" flip" if flip else "")
        result["color"][label] = {"psnr_minus_gray": m["psnr"] - gray_psnr, "colorfulness_ratio": m["colorfulness_ratio"]}
        print(f"{label:24s} {m['psnr'] - gray_psnr:+12.2f} {m['colorfulness_ratio']:12.2f}")
    for flip, (s, b) in seg.items():
        label = "flip" if flip else "plain"
        result["mask"][label] = {"miou": s.result()["miou"], "boundary_iou": b.result()["boundary_iou"]}
        print(f"mask {label:6s} mIoU {s.result()['miou']:.4f} boundary IoU {b.result()['boundary_iou']:.4f}")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
