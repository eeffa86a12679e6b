"""What every benchmark's JSON carries besides its figures: the machine, its load, the command, the date."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from typing import TYPE_CHECKING, Any

from semcolor.core import storage

if TYPE_CHECKING:
    from semcolor.core.colorizer import Colorizer


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU features that give torch's bf16 autocast its kernels (Intel AMX tiles, AVX-512 BF16 dot products): the
speed of a bf16 figure depends on which the machine has."""


def cpu_description(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU's model name and which of :data:`BF16_CPU_FLAGS` it has (Linux; empty where /proc is not there)."""
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"cpu": fields.get("model name"), "bf16_flags": [f for f in BF16_CPU_FLAGS if f in flags]}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """The machine and moment a figure was measured on (absolute times mean little on a shared machine)."""
    import torch

    try:
        import ray

        ray_version = ray.__version__
    except ImportError:  # pragma: no cover - ray is a dependency
        ray_version = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "command": "semcolor " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("semcolor")
        else " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cores": cores, "platform": platform.platform(), "processor": platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__, "ray": ray_version,
                    "onnxruntime": _version("onnxruntime"),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    **cpu_description()},
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def portable(value: Any, base: str | None = None) -> Any:
    """Absolute local paths under ``base``'s parent folder (default: the working directory's) written relative to
    ``base``, recursively through dicts and lists: a results file names the data, not the machine's folders."""
    base = os.path.abspath(base or os.getcwd())
    if isinstance(value, str) and os.path.isabs(value) and value.startswith(os.path.dirname(base) + os.sep):
        return os.path.relpath(value, base)
    if isinstance(value, dict):
        return {k: portable(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, base) for v in value]
    return value


def write_result(out: str, name: str, result: dict[str, Any]) -> str:
    """Write ``OUT/NAME.json``: ``result`` (local paths made relative, see :func:`portable`) plus ``environment``
    (taken now, at the end of the run). Returns the URL written."""
    doc = {**portable(result), "environment": environment()}
    url = storage.join(out, f"{name}.json")
    storage.write_text(url, json.dumps(doc, indent=2, default=float))
    print(f"wrote {url}", flush=True)
    return url


def print_table(rows: list[dict[str, Any]]) -> None:
    """Rows of equal keys as an aligned text table (floats with 2 decimals)."""
    if not rows:
        return
    keys = list(rows[0])
    width = max(14, *(len(k) for k in keys))
    print(" | ".join(f"{k:>{width}}" for k in keys))
    for row in rows:
        print(" | ".join(f"{v:>{width}.2f}" if isinstance(v, float) else f"{v!s:>{width}}" for v in row.values()))


def stage_seconds(colorizer: "Colorizer", encoded: bytes, reps: int) -> dict[str, list[float]]:
    """Seconds of each CPU stage around the model for one encoded image, ``reps`` times: ``decode`` (bytes -> RGB),
    ``preprocess`` (full-resolution L and its model-size copy), ``merge`` (AB upsampled per the colorizer's refine
    and merged with the full-resolution L, with random chroma), ``encode`` (PNG); and, on their own, the
    upsampling of AB and the mask probability (3 maps) to full resolution: ``refine_guided``, ``refine_bilinear``."""
    import numpy as np

    from semcolor.core import refine
    from semcolor.core.decode import decode_image
    from semcolor.core.encode import encode_rgb

    ab8 = np.random.default_rng(0).integers(-40, 40, (2, colorizer.size, colorizer.size)).astype(np.int8)
    maps = np.concatenate([ab8, np.zeros_like(ab8[:1])]).astype(np.float32)
    times: dict[str, list[float]] = {"decode": [], "preprocess": [], "merge": [], "encode": [],
                                     "refine_guided": [], "refine_bilinear": []}
    for _ in range(reps):
        t0 = time.perf_counter()
        rgb = decode_image(encoded)
        t1 = time.perf_counter()
        l8, small = colorizer.prepare(rgb)
        t2 = time.perf_counter()
        out = colorizer.merge(l8, ab8, small)
        t3 = time.perf_counter()
        encode_rgb(out, "png")
        t4 = time.perf_counter()
        refine.upsample(maps, l8, small, "guided")
        t5 = time.perf_counter()
        refine.upsample(maps, l8, small, "bilinear")
        t6 = time.perf_counter()
        for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
            times[key].append(seconds)
    return times
