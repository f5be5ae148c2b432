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
    """Splits one output stream into user output and the bootstrap's frame: the random nonce, then
    (on stdout) the result JSON, up to a newline. The nonce may follow user output on the same line
    (a last ``print(..., end="")``); only a tail that could be the start of the nonce is held back."""

    def __init__(self, nonce: str) -> None:
        self.nonce = nonce.encode()
        self.partial = b""
        self.result: bytes | None = None

    def feed(self, data: bytes) -> bytes:
        """Take bytes of the stream; return those that are user output (safe to show now)."""
        if self.result is not None:
            return b""
        buffer = self.partial + data
        start = buffer.find(self.nonce)
        if start >= 0:
            end = buffer.find(b"\n", start)
            if end >= 0:
                self.result, self.partial = buffer[start + len(self.nonce):end + 1], b""
                return buffer[:start]
            self.partial = buffer[start:]  # the frame has begun; wait for its end
            return buffer[:start]
        keep = _prefix_overlap(buffer, self.nonce)
        self.partial = buffer[len(buffer) - keep:] if keep else b""
        return buffer[:len(buffer) - keep]

    def leftover(self) -> bytes:
        """Bytes held back when the stream ended (they were not a frame after all)."""
        rest, self.partial = self.partial, b""
        return rest


def _prefix_overlap(buffer: bytes, nonce: bytes) -> int:
    """Length of the longest end of ``buffer`` that is a beginning of ``nonce``."""
    for size in range(min(len(buffer), len(nonce) - 1), 0, -1):
        if buffer.endswith(nonce[:size]):
            return size
    return 0
