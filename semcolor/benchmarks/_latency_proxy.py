"""A TCP proxy on loopback that holds each HTTP request for a fixed delay: a local S3 server with a real object
store's latency (tens of milliseconds before each answer), for the benchmarks.

Per connection, the first bytes a client sends after the server's last answer (or on a new connection) start a
request: they are held ``delay`` seconds, the rest of that request's body is not; answers pass at once. So every
GET, PUT and LIST pays the delay once, whatever its size (a body that a client sends only after the server's
``100 Continue`` pays it once more: a second round trip, as on a real store).

Run in its own process: ``python -m semcolor.benchmarks._latency_proxy --upstream PORT --port PORT --delay S
[--log FILE]``; ``--log`` appends one line per request, ``<unix time> <method> <path>`` (from its request line),
to count where a run's requests go.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import TextIO

CHUNK = 1 << 16
HTTP_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"})


def request_line(data: bytes) -> str | None:
    """``METHOD PATH`` of the HTTP request whose first bytes are ``data`` (its query string kept); None when they
    are not a request's start (a body sent after the server's ``100 Continue``: held too, as a store's round trip
    for it would be, but not a request of its own)."""
    words = data.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    return " ".join(words[:2]) if len(words) == 3 and words[0] in HTTP_METHODS else None


def read_request_log(path: str) -> list[tuple[float, str, str]]:
    """The requests a ``--log`` file holds: (unix time, method, path with its query string)."""
    with open(path) as f:
        return [(float(t), method, target) for t, method, target in (line.split() for line in f if line.strip())]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: dict, upstream: bool,
                delay: float, log: TextIO | None = None) -> None:
    """Copy reader -> writer; on the client side (``upstream``) hold the first chunk of each request (and log it)."""
    try:
        while data := await reader.read(CHUNK):
            if upstream and state["answered"]:
                state["answered"] = False
                line = request_line(data) if log is not None else None
                if line is not None:
                    log.write(f"{time.time():.4f} {line}\n")
                await asyncio.sleep(delay)
            elif not upstream:
                state["answered"] = True
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(port: int, upstream_port: int, delay: float, log: TextIO | None = None) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_writer.close()
            return
        state = {"answered": True}  # a new connection starts with a request
        await asyncio.gather(_pipe(client_reader, server_writer, state, True, delay, log),
                             _pipe(server_reader, client_writer, state, False, delay))

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def latency_proxy(upstream_port: int, delay: float, log: str | None = None) -> Iterator[tuple[str, int]]:
    """The proxy in its own process in front of 127.0.0.1:``upstream_port`` (``log``: its request log, see the
    module docstring); yields (endpoint URL, pid), stopped by its own pid."""
    import socket

    from semcolor.benchmarks._local import free_port, stop_process

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "semcolor.benchmarks._latency_proxy", "--upstream",
                             str(upstream_port), "--port", str(port), "--delay", str(delay)]
                            + (["--log", log] if log else []))
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"latency proxy on port {port} did not start (exit code {proc.poll()})")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        stop_process(proc, timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=int, required=True, help="port of the server on 127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="port to listen on, 127.0.0.1")
    parser.add_argument("--delay", type=float, default=0.03, help="seconds each request is held")
    parser.add_argument("--log", help="append '<unix time> <method> <path>' per request to this file")
    args = parser.parse_args(argv)
    if args.log is None:
        asyncio.run(_serve(args.port, args.upstream, args.delay))
        return
    with open(args.log, "a", buffering=1) as log:  # line-buffered: complete lines even when stopped
        asyncio.run(_serve(args.port, args.upstream, args.delay, log))


if __name__ == "__main__":
    main()
