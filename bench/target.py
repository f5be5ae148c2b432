"""``python -m bench.target --port P``: the HTTP server API tasks call, a raw asyncio protocol on uvloop.

Every request gets ``200 {"ok":true}`` over a keep-alive connection; ``GET /__hits`` returns the
number of requests served so far. Fast enough that it is never what a workload measures.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

BODY = b'{"ok":true}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


class Counter:
    """Requests served."""

    hits = 0


class HttpProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1: parses request heads and Content-Length bodies, answers in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at)
                length = int(head[at + 15 : line_end if line_end >= 0 else len(head)])
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            self._answer(head)

    def _answer(self, head: bytes) -> None:
        assert self.transport is not None
        if head.startswith(b"get /__hits "):
            body = str(Counter.hits).encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        else:
            Counter.hits += 1
            self.transport.write(RESPONSE)
        if b"connection: close" in head:
            self.transport.close()


async def serve(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(HttpProtocol, "127.0.0.1", port, backlog=4096)
    async with server:
        await stop.wait()


class TargetProcess:
    """The target server as a child process of the harness."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hello"

    def start(self) -> TargetProcess:
        from bench import procs

        self.port = procs.free_port()
        self.process = procs.start_child(
            [sys.executable, "-m", "bench.target", "--port", str(self.port)],
            self.log_dir / "target.log",
            cwd=str(Path(__file__).parent.parent),
        )
        procs.wait_port(self.port, self.process)
        return self

    def hits(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/__hits", timeout=5) as response:
            return int(response.read())

    def stop(self) -> None:
        from bench import procs

        procs.stop_tree(self.process, 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(port))
    else:
        uvloop.run(serve(port))


if __name__ == "__main__":
    main()
