"""The local folder where semcolor keeps what it derives once per machine (ONNX exports, the LAB table)."""

from __future__ import annotations

import os

CACHE_ENV = "SEMCOLOR_CACHE"
"""Environment variable naming the folder (default ``$XDG_CACHE_HOME/semcolor`` or ``~/.cache/semcolor``)."""


def cache_folder(cache_dir: str | None = None) -> str:
    """``cache_dir``, else ``$SEMCOLOR_CACHE``, else the user's cache folder."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return cache_dir or os.environ.get(CACHE_ENV) or os.path.join(base, "semcolor")
