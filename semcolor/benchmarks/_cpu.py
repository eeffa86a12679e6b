"""CPU seconds of process trees (psutil), and of the connected Ray cluster's processes on this host.

Figures of CPU time are robust on a shared machine where wall-clock rates move with other load, but only when
they count every process doing the work: for Ray that is the GCS, the raylet, its workers and actors, the
other session processes (monitor, dashboard, agents) and the driver, not just the tasks' own CPU time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

import psutil
import ray


class TreeCpu:
    """CPU seconds (user + system) used between :meth:`start` and :meth:`stop` by the processes ``trees`` and
    all their descendants, plus the processes ``alone`` (without their descendants).

    Processes come and go (actors exit at the end of a dataset), so a thread samples every ``interval``
    seconds and keeps each process's first and last reading; only a process's last ``interval`` before it
    exits goes uncounted. A process born after :meth:`start` counts from zero.
    """

    def __init__(self, trees: Iterable[int], alone: Iterable[int] = (), interval: float = 0.25) -> None:
        self.trees, self.alone, self.interval = list(trees), list(alone), interval
        self.first: dict[tuple[int, float], float] = {}
        self.last: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _processes(self) -> list[psutil.Process]:
        """The processes to count now (one scan of the process table)."""
        by_pid: dict[int, psutil.Process] = {}
        children: dict[int, list[int]] = {}
        for proc in psutil.process_iter(["ppid"]):
            by_pid[proc.pid] = proc
            children.setdefault(proc.info["ppid"], []).append(proc.pid)
        chosen = {pid for pid in self.alone if pid in by_pid}
        todo, seen = [pid for pid in self.trees if pid in by_pid], set()
        while todo:
            pid = todo.pop()
            if pid not in seen:
                seen.add(pid)
                todo.extend(children.get(pid, []))
        return [by_pid[pid] for pid in chosen | seen]

    def _sample(self, initial: bool = False) -> None:
        for proc in self._processes():
            try:
                times = proc.cpu_times()
                key = (proc.pid, proc.create_time())
            except psutil.NoSuchProcess:
                continue
            used = times.user + times.system
            self.first.setdefault(key, used if initial else 0.0)
            self.last[key] = used

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> "TreeCpu":
        """Take the first reading and start sampling."""
        self._sample(initial=True)
        self._thread.start()
        return self

    def stop(self) -> float:
        """Stop sampling; CPU seconds used since :meth:`start`."""
        self._stop.set()
        self._thread.join()
        self._sample()
        return sum(self.last[k] - self.first[k] for k in self.last)


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


class CpuUnavailable(RuntimeError):
    """Ray's CPU time cannot be counted from this process (the reason is the message)."""


def _parent(pid: int) -> int | None:
    """The parent pid of ``pid``; None once it has exited."""
    try:
        return psutil.Process(pid).ppid()
    except psutil.NoSuchProcess:
        return None


def ray_session_pids() -> tuple[list[int], str]:
    """The pids of the connected Ray cluster's session processes on this host, and a line saying what a
    :class:`TreeCpu` over them (with their descendants, plus the driver) counts.

    Session processes are found by their command line, which names the session directory (GCS, raylet,
    monitor, dashboard, log monitor); workers, actors and agents are the raylet's descendants. Raises
    :class:`CpuUnavailable` when there is no alive node, or some alive node's raylet is not a process on this
    host (its CPU cannot be counted here).
    """
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if not nodes:
        raise CpuUnavailable("no alive Ray node (is this process connected to Ray?)")
    sockets = {n["RayletSocketName"] for n in nodes}
    sessions = {os.path.dirname(os.path.dirname(s)) for s in sockets}
    pids, found = [], set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        args = proc.info["cmdline"] or []
        if any(a.endswith(s) or f"{s}/" in a for a in args for s in sessions) and proc.pid != os.getpid():
            pids.append(proc.pid)
            found.update(s for s in sockets if f"--raylet_socket_name={s}" in args)
    missing = sorted(sockets - found)
    if missing:
        where = ", ".join(n["NodeManagerAddress"] for n in nodes if n["RayletSocketName"] in missing)
        raise CpuUnavailable(f"the Ray cluster has {len(nodes)} node(s); the raylet of {len(missing)} "
                             f"({where or 'unknown'}) is not a process on this host, so Ray's CPU time cannot be "
                             "counted from here")
    started_here = all(_parent(p) in (os.getpid(), None) for p in pids)
    scope = ("the local Ray this command started (GCS, raylet, workers, actors, agents) plus the driver"
             if started_here else
             f"every process of the joined Ray cluster's session(s) {', '.join(sorted(sessions))} on this host "
             "(GCS, raylet, workers, actors, agents; other jobs' work on that cluster too, if any) plus the driver")
    return pids, scope


def ray_cpu_sampler() -> tuple[TreeCpu | None, str]:
    """A (not started) :class:`TreeCpu` over the connected Ray's processes on this host plus the driver, and
    what it counts; or ``(None, why not)``."""
    try:
        pids, scope = ray_session_pids()
    except CpuUnavailable as exc:
        return None, f"unavailable: {exc}"
    return TreeCpu(trees=pids, alone=[os.getpid()]), scope
