"""Synthetic image/mask pairs: colored shapes on textured backgrounds, with exact masks.

Layout written by :func:`write_synth` (and ``semcolor synth DST``): ``DST/images/<key>.png`` and
``DST/masks/<key>.png``, keys ``000000``, ``000001``, ... Pair ``i`` depends only on (seed, i, size,
n_classes), never on how many pairs are written.

A world where the gray image determines color and mask, so that a brief training reproduces both: each
background family has its own hue *and* its own texture (smooth sky, grainy grass, banded sand, striped
brick); each object kind has its own hue, shape *and* lightness texture (red ellipses shaded bright at the
centre, blue rectangles with a fine checkerboard, yellow polygons with vertical stripes), drawn brighter or
darker than the background around it. With ``n_classes > 2`` the class fixes the kind (class c is kind
(c - 1) mod 3, hues spread over the classes). Masks: 0 background, 255 foreground (binary) or the class id
1..n_classes-1 (multi-class).
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from semcolor.core import storage
from semcolor.core.encode import encode_mask, encode_rgb
from semcolor.options import option

SHAPES = ("ellipse", "rectangle", "polygon")
# object kind -> hue in [0, 1) (binary masks): red, blue, yellow
SHAPE_HUES = {"ellipse": 0.0, "rectangle": 0.62, "polygon": 0.14}
# background family -> (hue in [0, 1), saturation in [0, 1])
BACKGROUNDS = {"sky": (0.58, 0.55), "grass": (0.30, 0.65), "sand": (0.11, 0.50), "brick": (0.01, 0.60)}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1], float (size, size): a cells x cells random grid, bicubic-upsampled."""
    grid = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """HSV float (size, size, 3) in [0, 1] of one randomly chosen background family."""
    family = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    hue0, sat0 = BACKGROUNDS[family]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    if family == "sky":  # smooth, bright at the top
        value = 0.95 - 0.35 * yy + 0.05 * _smooth_noise(rng, size, 3)
    elif family == "grass":  # grainy
        value = 0.35 + 0.2 * ramp + 0.25 * rng.random((size, size), dtype=np.float32)
    elif family == "sand":  # soft diagonal bands
        value = 0.7 + 0.12 * np.sin(2 * np.pi * 6 * ramp) + 0.1 * _smooth_noise(rng, size, 6)
    else:  # brick: horizontal stripes with dark mortar lines
        rows = (yy * size / max(size / 8, 2)).astype(np.int32)
        value = np.where((yy * size) % max(size // 8, 2) < 1.5, 0.25, 0.5 + 0.08 * (rows % 2))
        value = value + 0.08 * _smooth_noise(rng, size, 8)
    hue = (hue0 + 0.04 * rng.standard_normal() + 0.03 * (_smooth_noise(rng, size, 4) - 0.5)) % 1.0
    sat = np.clip(sat0 + 0.2 * (ramp - 0.5) + 0.1 * rng.standard_normal(), 0.15, 1.0)
    return np.stack([np.broadcast_to(hue, (size, size)), np.broadcast_to(sat, (size, size)),
                     np.clip(value, 0.0, 1.0)], axis=-1)


def _draw_shape(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """Boolean (size, size) footprint of one shape of ``kind``, drawn without antialiasing."""
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    cx, cy = rng.uniform(0.15, 0.85, 2) * size
    rx, ry = rng.uniform(0.08, 0.28, 2) * size
    if kind == "ellipse":
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    elif kind == "rectangle":
        draw.rectangle([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    else:
        n = int(rng.integers(3, 8))
        angles = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * np.pi / n) + rng.uniform(0, 2 * np.pi)
        radii = rng.uniform(0.5, 1.0, n)
        draw.polygon([(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radii)], fill=255)
    return np.asarray(layer) > 0


def _shape_value(rng: np.random.Generator, size: int, kind: str, footprint: np.ndarray) -> np.ndarray:
    """HSV value float (size, size) of an object of ``kind``: its own lightness texture, the cue to its color."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.uniform(0.6, 0.9)
    if kind == "ellipse":  # shaded: bright at its centre, darker to the rim
        ys, xs = np.nonzero(footprint)
        cy, cx = (ys.mean(), xs.mean()) if len(ys) else (size / 2, size / 2)
        r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / max(1.0, float(np.sqrt(footprint.sum() / np.pi)))
        return np.clip(base + 0.1 - 0.35 * r, 0.2, 1.0)
    period = max(2, size // 16)
    if kind == "rectangle":  # a fine checkerboard
        checker = ((yy // period + xx // period) % 2).astype(np.float32)
        return np.clip(base - 0.15 * checker, 0.2, 1.0)
    stripes = ((xx // period) % 2).astype(np.float32)  # polygon: vertical stripes
    return np.clip(base - 0.25 * stripes, 0.2, 1.0)


def make_pair(index: int, size: int, seed: int = 0, n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Pair ``index`` of ``seed``: (rgb uint8 (size, size, 3), mask uint8 (size, size)).

    Deterministic in (index, size, seed, n_classes). Mask values: 0 / 255 with 2 classes, else class ids.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    if not 2 <= n_classes <= 255:
        raise ValueError(f"n_classes must be in 2..255 (255 is the ignore value), got {n_classes}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    rng = np.random.default_rng([seed, index, size, n_classes])
    hsv = _background(rng, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(2, 5))):
        if n_classes == 2:
            kind, value = SHAPES[int(rng.integers(len(SHAPES)))], 255
            hue = (SHAPE_HUES[kind] + 0.02 * rng.standard_normal()) % 1.0
        else:
            value = int(rng.integers(1, n_classes))
            kind = SHAPES[(value - 1) % len(SHAPES)]
            hue = ((value - 1) / (n_classes - 1) + 0.02 * rng.standard_normal()) % 1.0
        footprint = _draw_shape(rng, size, kind)
        shade = _shape_value(rng, size, kind, footprint)
        shape_hsv = np.stack([np.full((size, size), hue), np.full((size, size), rng.uniform(0.7, 1.0)), shade],
                             axis=-1)
        hsv = np.where(footprint[..., None], shape_hsv, hsv)
        mask[footprint] = value
    hsv8 = np.round(hsv * 255).astype(np.uint8)
    rgb = np.asarray(Image.fromarray(hsv8, "HSV").convert("RGB"))
    return rgb, mask


def key_of(index: int) -> str:
    """The key of pair ``index``: six digits, zero-padded."""
    return f"{index:06d}"


def write_synth(dst: str, n: int, size: int, seed: int = 0, n_classes: int = 2, threads: int = 8) -> list[str]:
    """Write ``n`` pairs to ``DST/images/<key>.png`` and ``DST/masks/<key>.png`` at any URL; return the keys."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    keys = [key_of(i) for i in range(n)]

    def write_one(index: int) -> None:
        rgb, mask = make_pair(index, size, seed, n_classes)
        storage.write_bytes(storage.join(dst, "images", keys[index] + ".png"), encode_rgb(rgb, "png"))
        storage.write_bytes(storage.join(dst, "masks", keys[index] + ".png"), encode_mask(mask))

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(write_one, range(n)))
    return keys


@dataclass(kw_only=True)
class SynthOptions:
    """The options of `semcolor synth`."""

    dst: str = option(help="destination URL: DST/images/<key>.png, DST/masks/<key>.png", positional=True)
    n: int = option(64, help="number of pairs")
    size: int = option(128, help="side of each square image, pixels")
    seed: int = option(0, help="pair i depends only on (seed, i, size, n_classes)")
    n_classes: int = option(2, help="2: binary masks (0/255); more: class-id masks")


def run_synth(args: argparse.Namespace) -> int:
    """`semcolor synth DST --n N --size S --seed K --n-classes C`."""
    keys = write_synth(args.dst, args.n, args.size, args.seed, args.n_classes)
    print(f"wrote {len(keys)} pairs ({args.size}x{args.size}, {args.n_classes} classes, seed {args.seed}) "
          f"to {storage.join(args.dst, 'images')} and {storage.join(args.dst, 'masks')}")
    return 0
