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
                payload = bytes(self._buffer[_HEADER.size : _HEADER.size + size])
                del self._buffer[: _HEADER.size + size]
                yield stream, payload
            data = await loop.sock_recv(self.sock, 256 * 1024)
            if not data:
                return
            self._buffer += data

    def close(self) -> None:
        """End the connection even while the Docker client still holds a reference to the socket."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed already, or never connected
        try:
            self.sock.close()
        except OSError:
            pass


FRAME_MARGIN_BYTES = 2 * 1024 * 1024
"""Room in a result frame beside the return value: the bootstrap caps an exception's message and
traceback at 64 Ki characters each, at most 12 bytes each once JSON-escaped (about 1.5 MiB)."""


class ResultScanner:
    """Splits one output stream into user output and the bootstrap's frame: the random nonce, then
    (on stdout) the result JSON, up to a newline. The nonce may follow user output on the same line
    (a last ``print(..., end="")``); only a tail that could be the start of the nonce is held back.

    Work and memory are linear and bounded: each byte is searched once (plus ``len(nonce) - 1``
    bytes of overlap), at most ``len(nonce) - 1`` bytes are held before the nonce and at most
    ``limit`` after it; a longer frame sets ``too_large`` and everything after it is dropped."""

    def __init__(self, nonce: str, limit: int) -> None:
        self.nonce = nonce.encode()
        self.limit = limit
        self.partial = b""
        self.frame: bytearray | None = None  # bytes after the nonce, once it was seen
        self.result: bytes | None = None
        self.too_large = False

    @property
    def done(self) -> bool:
        """A frame was found, or one that is too large began: the rest of the stream is not output."""
        return self.result is not None or self.too_large

    @property
    def held_bytes(self) -> int:
        """Bytes kept between calls (bounded by the nonce length before the frame, ``limit`` in it)."""
        return len(self.partial) + (len(self.frame) if self.frame is not None else 0)

    def feed(self, data: bytes) -> bytes:
        """Take bytes of the stream; return those that are user output (safe to show now)."""
        if self.done:
            return b""
        if self.frame is not None:
            self._collect(data)
            return b""
        buffer = self.partial + data
        start = buffer.find(self.nonce)
        if start >= 0:
            self.partial, self.frame = b"", bytearray()
            self._collect(buffer[start + len(self.nonce) :])
            return buffer[:start]
        keep = _prefix_overlap(buffer, self.nonce)
        self.partial = buffer[len(buffer) - keep :] if keep else b""
        return buffer[: len(buffer) - keep]

    def _collect(self, data: bytes) -> None:
        assert self.frame is not None
        end = data.find(b"\n")
        size = len(data) if end < 0 else end + 1
        if len(self.frame) + size > self.limit:
            self.frame, self.too_large = None, True
            return
        self.frame += data[:size]
        if end >= 0:
            self.result, self.frame = bytes(self.frame), None

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
