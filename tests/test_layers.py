"""The import layers hold where a static contract cannot see: modules that must load without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("modules", [
    ("semcolor.serve.replica", "semcolor.serve.builder"),  # an onnxruntime replica never uses torch
    ("semcolor.model.onnx_predictor", "semcolor.model.export_cache", "semcolor.model.inference"),
])
def test_modules_import_without_torch(modules):
    """Each module imports in a process where `import torch` fails (torch is imported only where it runs)."""
    code = "import sys; sys.modules['torch'] = None\n" + "".join(f"import {m}\n" for m in modules)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
