"""Commands as a user and a process manager run them: two at once on one host, each with its own local Ray, and
`semcolor serve` stopped by SIGTERM to its whole process group (systemd's default, a container runtime's stop)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
import torch
from conftest import free_port
from PIL import Image

from semcolor.model import checkpoint
from semcolor.model.config import ModelConfig
from semcolor.model.network import build_model

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.own_ray]

REPO_ROOT = Path(__file__).resolve().parents[1]


def _command(cwd: Path, *args: str) -> subprocess.Popen:
    """``semcolor ARGS`` (the installed command) in a session of its own (its own process group) from ``cwd``, as a
    new user's shell would start it: no RAY_ADDRESS (it starts its own local Ray), no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = ""
    return subprocess.Popen([str(Path(sys.executable).parent / "semcolor"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _answering(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_commands_at_once_and_serve_stopped_by_sigterm_to_its_process_group(tmp_path):
    """While `semcolor serve` runs on its own local Ray, `semcolor colorize` starts another and finishes without a
    traceback (no "multiple active Ray instances"), the service answering throughout; SIGTERM to serve's process
    group then stops it, with every process it started (Ray's included) gone. Both run from a folder that holds a
    checkout named `semcolor` (Ray puts the working directory first on its workers' path): the installed package
    is still the one imported."""
    torch.manual_seed(0)
    config = ModelConfig(arch="unet", input_size=32)
    ckpt = checkpoint.save(build_model(config), config, str(tmp_path / "model"))
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "semcolor").symlink_to(REPO_ROOT, target_is_directory=True)
    (tmp_path / "src").mkdir()
    for i in range(3):
        Image.new("RGB", (40 + i, 30), (90, 120 + 20 * i, 60)).save(tmp_path / "src" / f"a{i}.png")
    port = free_port()
    serve = _command(parent, "serve", "--checkpoint", ckpt, "--port", str(port), "--num-cpus", "1",
                     "--cpus-per-replica", "0.5", "--backend", "torch")  # torch: no export in this test's time
    colorize = None
    try:
        deadline = time.monotonic() + 180
        while not _answering(f"http://127.0.0.1:{port}/healthz"):
            assert serve.poll() is None, serve.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "serve did not answer within 180 s"
            time.sleep(0.5)

        colorize = _command(parent, "colorize", str(tmp_path / "src"), str(tmp_path / "dst"), "--checkpoint", ckpt,
                            "--num-cpus", "1", "--backend", "torch")
        answers: list[bool] = []
        colorizing = threading.Event()
        colorizing.set()

        def poll() -> None:  # the service, every 0.5 s while the other command starts its Ray and runs
            while colorizing.is_set():
                answers.append(_answering(f"http://127.0.0.1:{port}/healthz"))
                time.sleep(0.5)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            out, err = colorize.communicate(timeout=300)
        finally:
            colorizing.clear()
            poller.join(timeout=10)
        assert len(answers) >= 3 and all(answers), answers
        assert colorize.returncode == 0, err[-3000:]
        assert "done 3, skipped 0, failed 0" in out, out[-2000:]
        assert "Traceback" not in err and "multiple active Ray" not in err, err[-3000:]
        assert _answering(f"http://127.0.0.1:{port}/healthz")  # the other command's Ray left serve's alone

        started = psutil.Process(serve.pid).children(recursive=True)  # Ray's processes among them
        assert any("raylet" in " ".join(p.cmdline()) for p in started), [p.name() for p in started]
        sigterm = time.monotonic()
        os.killpg(serve.pid, signal.SIGTERM)
        _, err = serve.communicate(timeout=60)
        stopped = time.monotonic() - sigterm
        assert serve.returncode == 0, err[-3000:]
        _, alive = psutil.wait_procs(started, timeout=15)
        print(f"serve stopped {stopped:.1f} s after SIGTERM to its process group; "
              f"{len(started)} processes it started, {len(alive)} left")
        assert not alive, [(p.pid, p.name()) for p in alive]
        assert "Traceback" not in err, err[-3000:]
    finally:
        for proc in (serve, colorize):
            if proc is not None and proc.poll() is None:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
                proc.kill()
