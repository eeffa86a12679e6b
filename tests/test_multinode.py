"""Several Ray nodes on this host, and a node lost mid-job.

``ray.cluster_utils.Cluster`` starts a head and worker nodes as separate raylets on this machine. Each job runs
as its own driver process joined to that cluster (this test process keeps the session's local Ray, which it uses
for the single-node reference runs); the test removes a worker node while the job runs and shows that the node
is gone from ``ray.nodes()`` before the job ends. One host means one disk, so the jobs pass ``--shared-path``
for their local paths (the flag a cluster with NFS would use).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import free_port
from helpers import ok_counts
from PIL import Image

from semcolor.bulk.records import read_records
from semcolor.core import storage
from semcolor.model import checkpoint
from semcolor.model.config import ModelConfig
from semcolor.model.network import build_model
from semcolor.train.loop import lr_factor

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.own_ray]

REPO_ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _cluster(*worker_nodes: dict):
    """A head (1 CPU) and one worker node per dict of ``add_node`` arguments; -> (cluster, [worker nodes]),
    shut down (its processes, by pid) afterwards."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 1, "include_dashboard": False,
        # a lost node is declared dead after ~3 s of failed health checks (default ~15 s)
        "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}})
    try:
        workers = [c.add_node(**args) for args in worker_nodes]
        c.wait_for_nodes()
        yield c, workers
    finally:
        c.shutdown()


@pytest.fixture(scope="module")
def _module_cluster(s3_server):
    """The module's head and worker nodes of 1 CPU each. AWS_* are set first (the s3_server fixture), so every
    node's processes find the S3 endpoint. On one host Serve's HTTP proxy runs on the head only, and it would send
    every request to a replica on its own node while that one has room: its nodes start with that preference off,
    so two replicas share the load as behind a proxy on every node."""
    key = "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"
    before = os.environ.get(key)
    os.environ[key] = "0"
    try:
        with _cluster({"num_cpus": 1}, {"num_cpus": 1}) as made:
            yield made
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


@pytest.fixture
def cluster(_module_cluster):
    """The module's cluster with two live worker nodes of 1 CPU each (nodes a test lost are replaced, a node a test
    added is one of them): one cluster start for every test that needs it."""
    c, workers = _module_cluster
    workers[:] = [w for w in workers if w in c.worker_nodes] + [w for w in c.worker_nodes if w not in workers]
    while len(workers) < 2:
        workers.append(c.add_node(num_cpus=1))
    c.wait_for_nodes()
    return c, workers


def _alive_nodes(address: str) -> int:
    """Alive nodes of the cluster at ``address``, as its GCS lists them (this process is on another Ray)."""
    from ray._raylet import GcsClient

    nodes = GcsClient(address=address).get_all_node_info().values()
    return sum(1 for n in nodes if n.state == n.GcsNodeState.Value("ALIVE"))


def _semcolor(*args: str, **env_vars: str) -> subprocess.Popen:
    """``semcolor ARGS`` as its own driver process (stdout and stderr captured), with ``env_vars`` set."""
    code = "import sys; from semcolor.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env_vars}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_until(condition, timeout_s: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the job ended before {what}: rc {proc.returncode}\n{out[-2000:]}\n{err[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} after {timeout_s} s")
        time.sleep(0.3)


def _node_hosting(nodes: list, title: str):
    """The first of ``nodes`` whose raylet runs a worker process whose command line (Ray's process title, e.g.
    ``ray::RayTrainWorker``) contains ``title``; None if none does. Ray workers are children of their node's
    raylet."""
    import psutil
    from ray._private import ray_constants

    for node in nodes:
        raylet = psutil.Process(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
        for child in raylet.children():
            try:
                if title in " ".join(child.cmdline()):
                    return node
            except psutil.NoSuchProcess:
                continue
    return None


def _lose_node(c, node, proc: subprocess.Popen) -> None:
    """Take ``node`` away as a lost machine goes: its raylet and every worker process it started die at once
    (by their pids; a raylet stopped alone can leave its workers running on, unseen by Ray, until they call it);
    returns once the cluster lists it dead, while ``proc`` (a job on the cluster) still runs."""
    import psutil
    from ray._private import ray_constants

    alive = _alive_nodes(c.address)
    raylet = psutil.Process(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
    children = raylet.children(recursive=True)
    c.remove_node(node, allow_graceful=False)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    assert proc.poll() is None, "the job ended before the node was lost"
    _wait_until(lambda: _alive_nodes(c.address) == alive - 1, 120, "the lost node gone from ray.nodes()", proc)


def _lose_node_midway(c, node, proc: subprocess.Popen) -> tuple[str, str]:
    """Lose ``node`` while ``proc`` (a job on the cluster) runs, see it gone from ``ray.nodes()`` while the job still
    runs, and wait for the job to succeed; -> its (stdout, stderr)."""
    _lose_node(c, node, proc)
    still_running = proc.poll() is None
    out, err = proc.communicate(timeout=500)
    assert proc.returncode == 0, out[-2000:] + err[-4000:]
    assert still_running, "the job ended before the node was seen gone"
    return out, err


def _scans(src: str, n: int) -> list[str]:
    """``n`` JPEG scans of assorted sizes under ``src``; -> their keys."""
    keys = []
    for i in range(n):
        rng = np.random.default_rng(i)
        h, w = 90 + i % 7 * 11, 120 + i % 5 * 13
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (h + w)], -1) + rng.integers(-9, 9, (h, w, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, format="JPEG")
        storage.write_bytes(storage.join(src, f"scan{i:03d}.jpg"), buf.getvalue())
        keys.append(f"scan{i:03d}")
    return keys


def _outputs(dst: str) -> dict[str, bytes]:
    """Every output under ``dst`` except the records: relative key -> bytes."""
    return {storage.relative_key(u, dst): storage.read_bytes(u) for u in storage.list_files(dst)
            if "/_manifest/" not in u}


def test_bulk_s3_to_s3_survives_a_lost_worker_node(cluster, ray_local, s3_prefix, tmp_path):
    """Head + 2 workers; a worker node removed once outputs appear: the job finishes, every key is recorded
    exactly once, and the outputs are byte-identical to a single-node run of the same keys."""
    from semcolor.bulk.job import colorize

    c, workers = cluster
    torch.manual_seed(0)
    config = ModelConfig(arch="unet", input_size=64)
    ckpt = checkpoint.save(build_model(config), config, str(tmp_path / "model"))
    src, dst = storage.join(s3_prefix, "scans"), storage.join(s3_prefix, "color")
    keys = _scans(src, 32)

    proc = _semcolor("colorize", src, dst, "--checkpoint", ckpt, "--address", c.address, "--actors", "1:2",
                     "--batch-size", "2", "--masks", "--shared-path", "--backend", "torch")
    _wait_until(lambda: storage.exists(dst) and read_records(dst).num_rows >= 2, 240, "records", proc)
    lost = _node_hosting(workers, "MapWorker") or workers[0]  # a node with a model actor, if one has it
    out, err = _lose_node_midway(c, lost, proc)
    assert f"done {len(keys)}, skipped 0, failed 0" in out, out[-2000:]
    assert ok_counts(read_records(dst)) == {k: 1 for k in keys}  # every key recorded exactly once

    single = storage.join(s3_prefix, "single")
    summary = colorize(src, single, ckpt, batch_size=2, masks=True, backend="torch")
    assert (summary.done, summary.failed) == (len(keys), 0)
    assert _outputs(dst) == _outputs(single)  # byte-identical to one node's run


def _registered(run_dir: Path) -> dict | None:
    """The metrics of the run's latest checkpoint that Ray Train's controller has registered (what a restart
    resumes from; a checkpoint folder on disk may not be registered yet), or None before the first."""
    import logging
    import warnings

    from ray.train import Result

    quiet = logging.getLogger("ray.train")  # not a line per call saying that a snapshot was found
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(action="ignore"):  # nor Ray's call of a deprecated pydantic method
            return Result.from_path(str(run_dir)).metrics
    except (OSError, RuntimeError, ValueError):  # no run or no snapshot yet, or the snapshot being written
        return None
    finally:
        quiet.setLevel(level)


def _refreshing(address: str, missing_ok: bool = False) -> subprocess.Popen:
    """Start having the cluster's AutoscalingCoordinator list the nodes now (wait with :func:`_refreshed`).

    Ray Train's elastic policy sizes the group by that detached actor's view of the nodes, which it refreshes
    only every 20 s: without this a lost node still counts for up to 20 s (each start of a group that size fails)
    and a new one counts up to 20 s late. Done from a short driver process (this test process is on another Ray).
    ``missing_ok``: no coordinator yet is fine (the first one lists the nodes as it starts)."""
    code = ("import ray, sys\n"
            "ray.init(address=sys.argv[1], log_to_driver=False)\n"
            "try:\n"
            "    c = ray.get_actor('AutoscalingCoordinator', namespace='AutoscalingCoordinator')\n"
            "except ValueError:\n"
            "    sys.exit(0 if sys.argv[2] == 'missing_ok' else 3)\n"
            "ray.get(c.get_reserved_resources.remote('semcolor-test', recompute=True), timeout=60)\n")
    return subprocess.Popen([sys.executable, "-c", code, address, "missing_ok" if missing_ok else "required"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _refreshed(refresh: subprocess.Popen) -> None:
    _, err = refresh.communicate(timeout=120)
    assert refresh.returncode == 0, f"rc {refresh.returncode}: {err[-3000:]}"


def test_elastic_training_shrinks_on_a_lost_node_and_grows_on_a_new_one(cluster, tmp_path):
    """--workers 1:3 on 3 one-CPU nodes starts 3 workers; a lost worker node shrinks the group to 2, a node added
    grows it back to 3, each time from the last checkpoint, and the run reaches its last epoch."""
    c, workers = cluster
    runs, name = tmp_path / "runs", "elastic"
    epochs = 5
    # The controller polls its workers every 0.5 s (default 2 s) and looks for room to grow every second; a start
    # of a group whose placement group is not ready in 5 s (default 60 s: here only a group that counts the lost
    # node) gives up, and the controller decides the size again. No preemption watcher: one actor less per start.
    # (The regression head skips the AB prior pass: elastic training does not depend on the head.) Nodes that a
    # test before replaced count from the start: the refresh ends long before the driver asks for workers.
    refresh = _refreshing(c.address, missing_ok=True)
    proc = _semcolor("train", "--address", c.address, "--storage", str(runs), "--name", name, "--synth-n", "36",
                     "--size", "32", "--color-head", "regression", "--batch-size", "4", "--epochs", str(epochs),
                     "--workers", "1:3", "--resize-interval", "1", "--cpus-per-worker", "1", "--max-failures", "3",
                     "--keep", "1", "--no-augment", "--shared-path", RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="5",
                     RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.5", RAY_TRAIN_ENABLE_PREEMPTION_WATCHER="0")
    run_dir = runs / name
    _refreshed(refresh)
    _wait_until(lambda: _registered(run_dir) is not None, 300, "a registered checkpoint", proc)
    assert _registered(run_dir)["workers"] == 3  # as many as the cluster holds, up to MAX
    lost = _node_hosting(workers, "RayTrainWorker")
    assert lost is not None, "no training worker on a worker node"
    _lose_node(c, lost, proc)
    _refreshed(_refreshing(c.address))
    _wait_until(lambda: (_registered(run_dir) or {}).get("workers") == 2, 300, "an epoch with 2 workers", proc)
    c.add_node(num_cpus=1)
    _refreshed(_refreshing(c.address))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-2000:] + err[-4000:]
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(epochs))
    sizes = [h["workers"] for h in history]
    shrunk, grown = sizes.index(2), len(sizes) - 1 - sizes[::-1].index(2) + 1
    assert set(sizes[:shrunk]) == {3} and grown < epochs and set(sizes[grown:]) == {3}, sizes
    assert history[shrunk]["resumed_from_epoch"] >= 0 and history[grown]["resumed_from_epoch"] >= 0
    # The batch per worker stays (steps per epoch = rows // W // batch); the schedule runs in epochs and its peak
    # follows the global batch (--lr x W / MAX): every epoch ends at the LR of a W-worker run at that epoch.
    rows = json.loads((run_dir / "data_report.json").read_text())["counts"]["train"]
    for h, w in zip(history, sizes):
        spe = rows // w // 4
        assert h["step"] - (history[h["epoch"] - 1]["step"] if h["epoch"] else 0) == spe, (h["epoch"], sizes)
        expected = 1e-3 * w / 3 * lr_factor((h["epoch"] + 1) * spe, spe, epochs * spe, 0.02)
        assert h["lr"] == pytest.approx(expected, rel=1e-9), (h["epoch"], sizes)


def _answering(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_keeps_answering_when_a_replica_node_is_lost(cluster, tmp_path):
    """Two replicas on two nodes (1 CPU each) under load from 4 clients; the node of one replica is lost. Only
    requests sent before the cluster declared the node dead may fail (those in flight on it, or routed to it in
    the seconds before); every later one is answered. SIGTERM then takes the app off the cluster."""
    import signal
    import threading

    import httpx

    c, workers = cluster
    torch.manual_seed(0)
    config = ModelConfig(arch="unet", input_size=32)
    ckpt = checkpoint.save(build_model(config), config, str(tmp_path / "model"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _semcolor("serve", "--checkpoint", ckpt, "--address", c.address, "--replicas", "2", "--port", str(port),
                     "--proxy-location", "HeadOnly", "--shared-path", "--backend", "torch")
    try:
        answered: set[str] = set()  # nodes whose replica answered /stats (each call reaches one replica)

        def both_replicas_answer() -> bool:
            if _answering(f"{base}/healthz"):
                answered.add(httpx.get(f"{base}/stats", timeout=30).json()["node_id"])
            return len(answered) == 2

        _wait_until(both_replicas_answer, 240, "two replicas answering", proc)
        lost = next((w for w in workers if w.node_id in answered), None)  # a replica's node, never the head
        assert lost is not None, f"no replica on a worker node: {answered}"

        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48), dtype=np.uint8)).save(buf, "PNG")
        results: list[tuple[float, float, int | str]] = []  # (sent, answered, HTTP status or error)
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=base, timeout=60) as http:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        status: int | str = http.post("/colorize", content=buf.getvalue(),
                                                      headers={"content-type": "image/png"}).status_code
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    results.append((sent, time.monotonic(), status))

        clients = [threading.Thread(target=client) for _ in range(4)]
        for t in clients:
            t.start()
        try:
            time.sleep(3)
            images_by_node: dict[str, int] = {}  # what each replica has answered so far (/stats: one replica's view)
            for _ in range(100):
                stats = httpx.get(f"{base}/stats", timeout=30).json()
                images_by_node[stats["node_id"]] = stats["images"]
                if images_by_node.get(lost.node_id, 0) > 0:
                    break
            assert images_by_node.get(lost.node_id, 0) > 0, images_by_node  # the replica we lose was serving
            lost_at = time.monotonic()
            _lose_node(c, lost, proc)
            dead_at = time.monotonic()
            time.sleep(6)
        finally:
            stop.set()
            for t in clients:
                t.join(timeout=90)
        before = [r for r in results if r[1] < lost_at]
        failed = [r for r in results if r[2] != 200]
        after = [r for r in results if r[0] > dead_at]
        print(f"serve node loss: {len(results)} requests, {len(before)} before the loss, {len(failed)} failed "
              f"(statuses {sorted({str(r[2]) for r in failed})}), {len(after)} sent after the node was declared "
              f"dead ({dead_at - lost_at:.1f} s after the loss)")
        assert before and all(r[2] == 200 for r in before)
        assert all(r[0] < dead_at for r in failed), failed  # only requests sent before the node was declared dead
        assert after and all(r[2] == 200 for r in after), after  # the other replica answers everything later

        sigterm = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # a process manager's stop: the app leaves the cluster
        out, err = proc.communicate(timeout=60)
        print(f"serve on a cluster stopped {time.monotonic() - sigterm:.1f} s after SIGTERM")
        assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 404  # Serve stays; the app is gone
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
def fake_gpu_cluster(_module_cluster):
    """The module's cluster (no GPUs) plus a node that declares one GPU (this machine has none), removed
    afterwards; -> (cluster, GPU node)."""
    c, _ = _module_cluster
    gpu_node = c.add_node(num_cpus=1, num_gpus=1)
    c.wait_for_nodes()
    try:
        yield c, gpu_node
    finally:
        c.remove_node(gpu_node)


def test_gpu_options_place_work_on_the_gpu_node_and_say_when_cuda_is_not_there(fake_gpu_cluster, tmp_path):
    """--gpus-per-actor, --gpus-per-worker and --gpus-per-replica put their work on the node that declares a GPU;
    with no CUDA there each command ends in one line naming the option and that node."""
    c, gpu_node = fake_gpu_cluster
    torch.manual_seed(0)
    config = ModelConfig(arch="unet", input_size=64)
    ckpt = checkpoint.save(build_model(config), config, str(tmp_path / "model"))
    (tmp_path / "src").mkdir()
    Image.new("RGB", (40, 30), (90, 120, 60)).save(tmp_path / "src" / "a.png")
    commands = {
        "--gpus-per-actor": ["colorize", str(tmp_path / "src"), str(tmp_path / "dst"), "--checkpoint", ckpt,
                             "--gpus-per-actor", "1"],
        "--gpus-per-worker": ["train", "--storage", str(tmp_path / "runs"), "--synth-n", "16", "--size", "32",
                              "--epochs", "1", "--workers", "1", "--cpus-per-worker", "1", "--gpus-per-worker", "1"],
        "--gpus-per-replica": ["serve", "--checkpoint", ckpt, "--gpus-per-replica", "1", "--no-blocking",
                               "--port", "0"],
    }
    procs = {option: _semcolor(*args, "--address", c.address, "--shared-path") for option, args in commands.items()}
    for option, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, (option, out[-2000:], err[-3000:])
        lines = [line for line in err.splitlines() if "CUDA is not usable" in line]
        assert len(lines) == 1, (option, err[-3000:])
        assert option in lines[0] and gpu_node.node_id[:12] in lines[0], lines[0]
        assert "Traceback" not in err, err[-3000:]
