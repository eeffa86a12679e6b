"""A TCP proxy on loopback that holds each HTTP request for a fixed delay: a local S3 server with a real object
store's latency (tens of milliseconds before each answer), for the benchmarks.

Per connection, the first bytes a client sends after the server's last answer (or on a new connection) start a
request: they are held ``delay`` seconds, the rest of that request's body is not; answers pass at once. So every
GET, PUT and LIST pays the delay once, whatever its size.

Run in its own process: ``python -m semcolor.benchmarks._latency_proxy --upstream PORT --port PORT --delay S``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

CHUNK = 1 << 16


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: dict, upstream: bool,
                delay: float) -> None:
    """Copy reader -> writer; on the client side (``upstream``) hold the first chunk of each request."""
    try:
        while data := await reader.read(CHUNK):
            if upstream and state["answered"]:
                state["answered"] = False
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


async def _serve(port: int, upstream_port: int, delay: float) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_writer.close()
            return
        state = {"answered": True}  # a new connection starts with a request
        await asyncio.gather(_pipe(client_reader, server_writer, state, True, delay),
                             _pipe(server_reader, client_writer, state, False, delay))

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def latency_proxy(upstream_port: int, delay: float) -> Iterator[tuple[str, int]]:
    """The proxy in its own process in front of 127.0.0.1:``upstream_port``; yields (endpoint URL, pid), stopped
    by its own pid."""
    import socket

    from semcolor.benchmarks._local import free_port, stop_process

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "semcolor.benchmarks._latency_proxy", "--upstream",
                             str(upstream_port), "--port", str(port), "--delay", str(delay)])
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
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.port, args.upstream, args.delay))


if __name__ == "__main__":
    main()
