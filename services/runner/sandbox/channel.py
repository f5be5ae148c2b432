"""The attach channel of one container: send the payload line, read the multiplexed output."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

STDOUT, STDERR = 1, 2
_HEADER = struct.Struct(">BxxxL")


class Channel:
    """Docker's attach stream without a TTY: frames of ``[stream, 0, 0, 0, size]`` + payload."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def frames(self) -> AsyncIterator[tuple[int, bytes]]:
        """(stream, bytes) pairs until the container closes its output."""
        loop = asyncio.get_running_loop()
        while True:
            while len(self._buffer) >= _HEADER.size:
                stream, size = _HEADER.unpack_from(self._buffer)
                if len(self._buffer) < _HEADER.size + size:
                    break
                payload = bytes(self._buffer[_HEADER.size:_HEADER.size + size])
                del self._buffer[:_HEADER.size + size]
                yield stream, payload
            data = await loop.sock_recv(self.sock, 256 * 1024)
            if not data:
                return
            self._buffer += data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class ResultScanner:
    """Splits stdout into user output and the bootstrap's result frame (a line starting with nonce)."""

    def __init__(self, nonce: str) -> None:
        self.nonce = nonce.encode()
        self.partial = b""
        self.result: bytes | None = None

    def feed(self, data: bytes) -> bytes:
        """Take stdout bytes; return those that are user output (safe to show now)."""
        buffer = self.partial + data
        shown = bytearray()
        start = 0
        while self.result is None:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = buffer[start:end + 1]
            if line.startswith(self.nonce):
                self.result = line[len(self.nonce):]
            else:
                shown += line
            start = end + 1
        rest = buffer[start:] if self.result is None else b""
        # hold back a partial line only while it could still become the result frame
        if rest and not self.nonce.startswith(rest[:len(self.nonce)]):
            shown += rest
            rest = b""
        self.partial = rest
        return bytes(shown)

    def leftover(self) -> bytes:
        """A partial line held back when the stream ended."""
        rest, self.partial = self.partial, b""
        return rest
