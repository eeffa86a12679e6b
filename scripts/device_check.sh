#!/usr/bin/env bash
# The one device check, for a machine with one CUDA GPU and the project's venv ($VENV, default .venv):
#   1. the tests marked `gpu` (the CUDA branches of inference and training: bf16 autocast, channels_last);
#   2. `semcolor bench colorize --device cuda` on generated 1-megapixel JPEGs (the bound and the pipeline per GPU).
# Writes OUT_DIR/gpu-tests.txt and OUT_DIR/colorize.json (default OUT_DIR: device_out). About 5-8 minutes on one GPU.
# Without a usable GPU it refuses in one line, before any work (exit 2).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-device_out}"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
IMAGES="${DEVICE_CHECK_IMAGES:-400}"  # JPEGs of ~1 MP each

if [[ ! -x "$PY" ]]; then
    echo "device_check: no venv at $VENV (run \`make setup\` or set VENV)" >&2
    exit 2
fi
why="$("$PY" -c 'from semcolor.ray_env import why_no_cuda; print(why_no_cuda() or "")')"
if [[ -n "$why" ]]; then
    echo "device_check: needs a CUDA GPU: $why" >&2
    exit 2
fi
mkdir -p "$OUT"
data="$(mktemp -d)"
trap 'rm -rf "$data"' EXIT
"$PY" - "$data/images" "$IMAGES" <<'EOF'
"""N generated photo-like JPEGs of 1000 x 1000 (smooth colour fields, edges and noise), quality 90."""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

out, n = Path(sys.argv[1]), int(sys.argv[2])
out.mkdir(parents=True)
yy, xx = np.mgrid[0:1000, 0:1000]
for i in range(n):
    rng = np.random.default_rng(i)
    f = rng.uniform(20, 200, 3)
    rgb = np.stack([128 + 100 * np.sin(xx / f[0] + i), 128 + 100 * np.cos(yy / f[1]), (xx + yy) / 8 + f[2] / 4], -1)
    rgb[rng.integers(100, 500):rng.integers(600, 900), rng.integers(100, 500):rng.integers(600, 900)] *= 0.5
    rgb = np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(out / f"scan{i:04d}.jpg", quality=90)
EOF
echo "device_check: gpu tests" >&2
"$PY" -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu-tests.txt" | tail -3
echo "device_check: bench colorize --device cuda on $IMAGES generated 1-MP JPEGs" >&2
"$VENV/bin/semcolor" bench colorize --device cuda --batch-size 64 --data "$data" --out "$OUT"
echo "device_check: wrote $OUT/gpu-tests.txt and $OUT/colorize.json" >&2
