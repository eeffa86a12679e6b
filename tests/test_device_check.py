"""`scripts/device_check.sh` on a machine without a usable GPU: refused in one line, before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the device check would run for real")
def test_device_check_refuses_without_cuda_in_one_line(tmp_path):
    env = {**os.environ, "VENV": sys.prefix}  # this test's own venv
    done = subprocess.run(["bash", str(REPO / "scripts" / "device_check.sh"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("device_check: needs a CUDA GPU: ") and "torch" in lines[0]
    assert not (tmp_path / "out").exists()  # nothing written, nothing generated
