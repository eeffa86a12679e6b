"""Temporary folders that a killed process does not leak.

A process killed inside ``tempfile.TemporaryDirectory`` (a Ray Train worker lost mid-checkpoint, an OOM kill)
leaves its folder behind: for a training checkpoint that is the model and the optimizer state, ~280 MB per
loss on every node. :func:`scratch_folder` names each folder after its process and first removes the folders
of processes that no longer exist.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this machine (any owner)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def sweep_stale(prefix: str, parent: str | None = None) -> list[str]:
    """Remove ``PARENT/<prefix><pid>-*`` folders whose process ``pid`` is gone; returns the removed paths."""
    removed = []
    for path in glob.glob(os.path.join(parent or tempfile.gettempdir(), f"{glob.escape(prefix)}*-*")):
        owner = os.path.basename(path)[len(prefix):].split("-", 1)[0]
        if owner.isdigit() and int(owner) != os.getpid() and not pid_alive(int(owner)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def scratch_folder(prefix: str, parent: str | None = None) -> Iterator[str]:
    """A temporary folder ``PARENT/<prefix><pid>-<random>`` (``parent`` default: the system temp folder), removed
    on exit like ``tempfile.TemporaryDirectory``; folders of the same prefix left by dead processes are removed
    before it is made."""
    sweep_stale(prefix, parent)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-", dir=parent) as folder:
        yield folder
