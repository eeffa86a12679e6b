"""Temporary folders that a killed process does not leak.

A process killed inside ``tempfile.TemporaryDirectory`` (a Ray Train worker lost mid-checkpoint, an OOM kill)
leaves its folder behind: for a training checkpoint that is the model and the optimizer state, ~280 MB per loss
on the node of rank 0. :func:`scratch_folder` names each folder after its host and process and first removes the
folders that processes of this host, now gone, left behind.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator

import psutil

OWNER_SEP = "@"
"""Separates the owner's pid and host in a folder name: ``<prefix><pid>@<host>@<random>``."""


def _host() -> str:
    """This host's name, safe inside a folder name."""
    return socket.gethostname().replace(OWNER_SEP, "_").replace("/", "_") or "localhost"


def sweep_stale(prefix: str, parent: str | None = None) -> list[str]:
    """Remove ``PARENT/<prefix><pid>@<this host>@*`` folders whose process ``pid`` is gone; returns their paths.

    Folders of other hosts (a temp folder on a shared filesystem) are never touched: their pids mean nothing here.
    A pid reused by a new process keeps its old folder until that process ends too (a leak, never a loss)."""
    removed = []
    for path in glob.glob(os.path.join(parent or tempfile.gettempdir(), f"{glob.escape(prefix)}*{OWNER_SEP}*")):
        parts = os.path.basename(path)[len(prefix):].split(OWNER_SEP)
        if len(parts) != 3 or not parts[0].isdigit() or parts[1] != _host():
            continue
        owner = int(parts[0])
        if owner != os.getpid() and not psutil.pid_exists(owner):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def scratch_folder(prefix: str, parent: str | None = None) -> Iterator[str]:
    """A temporary folder ``PARENT/<prefix><pid>@<host>@<random>`` (``parent`` default: the system temp folder),
    removed on exit like ``tempfile.TemporaryDirectory``; this host's folders of the same prefix left by processes
    that are gone are removed before it is made."""
    sweep_stale(prefix, parent)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}{OWNER_SEP}{_host()}{OWNER_SEP}",
                                     dir=parent) as folder:
        yield folder
