"""What the benchmarks share: a free loopback port, a moto S3 server in its own process, parallel uploads."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from semcolor.core import storage


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM to a process this benchmark started; SIGKILL after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def moto_s3(bucket: str) -> Iterator[tuple[str, int]]:
    """A moto S3 server in its own process on 127.0.0.1 (so it does not share the driver's GIL) with ``bucket``;
    AWS_* point at it while the block runs. Yields (endpoint, pid); stopped by its own pid. The benchmarks and
    the test suite's S3 fixture use it."""
    import pyarrow.fs as pafs

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.time() + 60
        while True:
            try:
                pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                                  allow_bucket_creation=True).create_dir(bucket)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"moto server on {endpoint} did not start (exit code {proc.poll()})")
                time.sleep(0.5)
        yield endpoint, proc.pid
    finally:
        stop_process(proc)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def upload(urls: list[str], root: str, prefix: str, threads: int = 16) -> list[str]:
    """Copy each of ``urls`` (under ``root``) to ``prefix`` keeping relative paths; the new URLs, in order."""
    def copy(url: str) -> str:
        target = storage.join(prefix, os.path.relpath(url, root))
        storage.write_bytes(target, storage.read_bytes(url))
        return target

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(copy, urls))
