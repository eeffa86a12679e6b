"""Shared by the `ray job submit` entrypoints: make `semcolor` importable, then run one CLI subcommand.

Inside a Ray job the job supervisor sets RAY_ADDRESS, and the CLI's `--address` default (None) makes
`ray.init()` join that cluster instead of starting a new local Ray.
"""

from __future__ import annotations

import sys
from pathlib import Path


def run(command: str) -> int:
    """`semcolor COMMAND ARGS...` with this process's arguments; the exit code."""
    try:  # installed in the image, or on PYTHONPATH because the job's working_dir holds semcolor/
        import semcolor  # noqa: F401
    except ModuleNotFoundError as exc:  # run from a checkout: put the repository root on sys.path
        if exc.name != "semcolor":
            raise
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from semcolor.cli import main

    return main([command, *sys.argv[1:]])
