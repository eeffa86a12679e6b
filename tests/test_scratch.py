"""Scratch folders: removed on exit, and folders left by killed processes swept by the next one."""

import os
import subprocess
import sys

import psutil

from semcolor.core.scratch import _host, scratch_folder, sweep_stale


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_folder_left_by_a_killed_process_is_swept_and_live_ones_kept(tmp_path):
    dead = _dead_pid()
    assert not psutil.pid_exists(dead)
    stale = tmp_path / f"semcolor-ckpt-{dead}@{_host()}@abc"
    live = tmp_path / f"semcolor-ckpt-{os.getppid()}@{_host()}@def"
    elsewhere = tmp_path / f"semcolor-ckpt-{dead}@another-host@jkl"  # a shared temp folder: not ours to judge
    other = tmp_path / f"other-{dead}@{_host()}@ghi"
    for folder in (stale, live, elsewhere, other):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x" * 10)
    with scratch_folder("semcolor-ckpt-", parent=str(tmp_path)) as folder:
        assert os.path.basename(folder).startswith(f"semcolor-ckpt-{os.getpid()}@{_host()}@")
        assert not stale.exists() and live.exists() and elsewhere.exists() and other.exists()
        open(os.path.join(folder, "a"), "w").close()
    assert not os.path.exists(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, elsewhere.name, other.name])


def test_a_process_killed_inside_a_scratch_folder_leaves_it_for_the_next_sweep(tmp_path):
    code = ("import os, sys; from semcolor.core.scratch import scratch_folder\n"
            "with scratch_folder('semcolor-ckpt-', parent=sys.argv[1]) as f:\n"
            "    print(f, flush=True); os._exit(9)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    left = out.stdout.strip()
    assert out.returncode == 9 and os.path.isdir(left)
    assert sweep_stale("semcolor-ckpt-", str(tmp_path)) == [left]
    assert not os.path.exists(left)
