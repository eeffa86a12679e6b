"""`ray job submit` end to end: a real Ray head in a subprocess, the job entrypoints in jobs/, outputs on disk.

The head is `ray start --head --block` with its own --temp-dir and free ports, the dashboard / Jobs API on
127.0.0.1 (Ray itself binds GCS and raylet to the node's IP even for --node-ip-address=127.0.0.1, see
ray._private.services.resolve_ip_for_localhost), token authentication on
(RAY_AUTH_MODE=token and a RAY_AUTH_TOKEN generated here, given to the head and to every `ray job ...`
command), and it is stopped by its own pid: SIGTERM to `ray start --block` (which stops gcs_server, raylet,
dashboard and the workers it started), then, after 20 s, SIGKILL to whatever of its session (the processes it
started: they share its session id, start_new_session=True) is still alive, and a check that none is. Only
processes this test started are ever signalled; every other Ray on the host is left alone.

Jobs are submitted exactly as docs/cluster.md says: `--working-dir <repo> --runtime-env jobs/runtime_env.yaml
-- python jobs/<command>.py ...`. `python` is the venv's (its bin/ is first on the head's PATH), and the job
finds semcolor in the uploaded working_dir, which Ray puts first on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.own_ray]

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


@dataclass
class Head:
    url: str            # the dashboard / Jobs API: http://127.0.0.1:PORT
    token: str
    env: dict[str, str]  # the environment every `ray ...` command against this head runs with
    temp_dir: Path
    proc: subprocess.Popen

    def get(self, path: str, token: str | None = "own") -> tuple[int, bytes]:
        headers = {} if token is None else {"Authorization": f"Bearer {self.token if token == 'own' else token}"}
        req = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get_json(self, path: str) -> dict:
        status, body = self.get(path)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)

    def log_tail(self, n: int = 4000) -> str:
        path = self.temp_dir / "head.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""


def _session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of the session `ray start` leads: it and everything it started."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getsid(pid) != sid:
                continue
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
        if state != "Z":
            pids.append(pid)
    return pids


def _stop_head(proc: subprocess.Popen) -> list[int]:
    """Stop the head by its pid; return the pids that needed SIGKILL (empty when SIGTERM sufficed)."""
    sid = proc.pid  # start_new_session=True: the head's pid is its session id
    deadline = time.monotonic() + 5  # a graceful stop takes ~30 s on a busy 2-core box; no need to wait it out
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` stops gcs_server, raylet, ... on SIGTERM
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    while _session_pids(sid) and time.monotonic() < deadline:  # children finishing their own shutdown
        time.sleep(0.5)
    killed: list[int] = []
    deadline = time.monotonic() + 30
    while (alive := _session_pids(sid)) and time.monotonic() < deadline:  # repeat: a dying raylet may fork
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed += alive
        time.sleep(0.5)
    if proc.poll() is None:
        proc.wait(timeout=10)
    assert _session_pids(sid) == [], "processes of the test's Ray head survived SIGKILL for 30 s"
    return killed


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    # Short, private temp dir: Ray's unix socket paths live under it and must stay under 108 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="scjob-", dir="/tmp"))
    token = secrets.token_hex(32)
    ports = {name: free_port() for name in (
        "port", "dashboard-port", "dashboard-agent-grpc-port", "dashboard-agent-listen-port",
        "metrics-export-port", "ray-client-server-port", "runtime-env-agent-port",
        "node-manager-port", "object-manager-port")}
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update({
        "RAY_AUTH_MODE": "token",   # Ray 2.60 default for new local clusters; set explicitly, with our token
        "RAY_AUTH_TOKEN": token,
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",  # the job's `python` is the venv's
        "RAY_TMPDIR": str(temp_dir),
        "RAY_USAGE_STATS_ENABLED": "0",
    })
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
           "--num-cpus=2", "--num-gpus=0", "--include-dashboard=true", f"--temp-dir={temp_dir}",
           "--disable-usage-stats", *(f"--{k}={v}" for k, v in ports.items())]
    log = open(temp_dir / "head.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=temp_dir)
    head = Head(url=f"http://127.0.0.1:{ports['dashboard-port']}", token=token, env=env, temp_dir=temp_dir,
                proc=proc)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"`ray start --head` exited with {proc.returncode}:\n{head.log_tail()}")
            try:
                if head.get("/api/jobs/")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Ray head not ready after 180 s:\n{head.log_tail()}")
            time.sleep(0.5)
        yield head
    finally:
        try:
            _stop_head(proc)
        finally:
            log.close()
            shutil.rmtree(temp_dir, ignore_errors=True)


def _start(head: Head, args: list[str]) -> str:
    """Submit `python jobs/...` like docs/cluster.md does, without waiting; returns the submission id."""
    submission_id = f"semcolor-test-{secrets.token_hex(4)}"
    cmd = [RAY, "job", "submit", "--address", head.url, "--submission-id", submission_id,
           "--working-dir", str(REPO), "--runtime-env", str(REPO / "jobs" / "runtime_env.yaml"),
           "--no-wait", "--", "python", *args]
    out = subprocess.run(cmd, env=head.env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"ray job submit failed:\n{out.stdout}\n{out.stderr}"
    return submission_id


def _wait(head: Head, submission_id: str, timeout: float) -> tuple[dict, str]:
    """Wait for a terminal state (stopping the job past ``timeout`` s); returns (job info, logs)."""
    deadline = time.monotonic() + timeout
    while True:
        info = head.get_json(f"/api/jobs/{submission_id}")
        if info["status"] in TERMINAL:
            break
        if time.monotonic() > deadline:
            subprocess.run([RAY, "job", "stop", "--address", head.url, submission_id], env=head.env,
                           capture_output=True, timeout=60)
            break
        time.sleep(2)
    logs = subprocess.run([RAY, "job", "logs", "--address", head.url, submission_id], env=head.env,
                          capture_output=True, text=True, timeout=60)
    assert logs.returncode == 0, logs.stderr
    if info["status"] != "SUCCEEDED":
        pytest.fail(f"job {submission_id} ended {info['status']} ({info.get('message')}) after "
                    f"{timeout:.0f} s limit or less; job logs:\n{logs.stdout[-6000:]}")
    return info, logs.stdout


def _job_actor_classes(head: Head, info: dict) -> set[str]:
    """Class names of the actors the job's driver created on this cluster."""
    job_id = info["driver_info"]["id"]
    data = head.get_json("/api/v0/actors?limit=10000&detail=false")["data"]["result"]["result"]
    return {a["class_name"] for a in data if a.get("job_id") == job_id}


def _uploaded_package(head: Head) -> list[Path]:
    return [p for p in head.temp_dir.glob("session_*/runtime_resources/working_dir_files/_ray_pkg_*")
            if p.is_dir()]


# ----------------------------------------------------------------------------------------------- tests


def test_head_requires_the_token(ray_head: Head):
    """Token auth is really on: the Jobs API refuses a request without the token, or with a wrong one."""
    assert ray_head.get("/api/jobs/", token=None)[0] == 401
    assert ray_head.get("/api/jobs/", token=secrets.token_hex(32))[0] in (401, 403)
    assert ray_head.get("/api/jobs/")[0] == 200


def _checkpoint(url: Path) -> Path:
    from semcolor.model.checkpoint import save
    from semcolor.model.config import ModelConfig
    from semcolor.model.network import build_model

    config = ModelConfig(arch="unet", n_classes=2, input_size=64)
    save(build_model(config), config, str(url))
    return url


def test_colorize_job_joins_the_cluster(ray_head: Head, tmp_path: Path):
    """`ray job submit` exactly as docs/cluster.md says: the working_dir is uploaded without local state, the
    entrypoint joins the cluster it was submitted to (RAY_ADDRESS from the job supervisor, token auth on), and the
    job leaves full-resolution outputs, masks and one ok record per key. The other entrypoints are the same entry
    code around their own CLI command (tests/test_cluster_configs.py runs each one's --help)."""
    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    from semcolor.data.synth import write_synth

    scans = write_synth(str(tmp_path / "scans"), n=6, size=96, seed=3)
    ckpt = _checkpoint(tmp_path / "ckpt")
    src, dst = tmp_path / "scans" / "images", tmp_path / "out"
    t0 = time.monotonic()
    info, logs = _wait(ray_head, _start(ray_head, [
        "jobs/colorize.py", str(src), str(dst), "--checkpoint", str(ckpt), "--batch-size", "4",
        "--actors", "1", "--masks", "--backend", "torch"]), timeout=480)
    print(f"colorize job: {time.monotonic() - t0:.1f} s")
    assert _job_actor_classes(ray_head, info), "the job ran no actors on the cluster it was submitted to"
    # the uploaded working_dir held the package but not the checkout's local state
    (pkg, *_) = _uploaded_package(ray_head)
    assert (pkg / "semcolor" / "cli.py").is_file() and (pkg / "jobs" / "colorize.py").is_file()
    for excluded in (".venv", ".git", "runs"):
        assert not (pkg / excluded).exists(), f"{excluded} was uploaded with the working_dir"
    for key in scans:
        out = dst / f"{key}.png"
        assert out.is_file(), f"missing {out}; job logs:\n{logs[-3000:]}"
        with Image.open(out) as im, Image.open(src / f"{key}.png") as source:
            assert im.size == source.size == (96, 96) and im.mode == "RGB"
        with Image.open(dst / "masks" / f"{key}.png") as mask:
            assert mask.size == (96, 96) and set(np.unique(np.asarray(mask))) <= {0, 255}
    records = pq.read_table(dst / "_manifest").to_pylist()
    assert {r["key"] for r in records if r["status"] == "ok"} == set(scans), records
