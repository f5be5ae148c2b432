"""The sandbox channel: Docker's multiplexed frames, and the result frame hidden in stdout."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

from services.runner.sandbox.channel import STDERR, STDOUT, Channel, ResultScanner
from services.runner.sandbox.docker_sandbox import BOOTSTRAP

NONCE = "5f0c2a9e4b7d41c3a8e6f1d2b9c07a34"
FRAME = b'{"ok":true,"result":{"answer":42}}'
LIMIT = 1 << 20
USER = b"line one\nprogress 50%\nlast line\n"


def scan(chunks: list[bytes]) -> tuple[bytes, bytes | None, bytes]:
    """Feed ``chunks``; return (user output shown, result frame, what was held back at the end)."""
    scanner = ResultScanner(NONCE, LIMIT)
    shown = b"".join(scanner.feed(chunk) for chunk in chunks)
    return shown, scanner.result, scanner.leftover()


def frame_of(result: bytes | None) -> bytes | None:
    return None if result is None else result.rstrip(b"\n")


# --- ResultScanner -------------------------------------------------------------------------------------

STREAM = USER + NONCE.encode() + FRAME + b"\n"


def test_user_output_and_the_result_frame_are_split_in_one_chunk() -> None:
    shown, result, held = scan([STREAM])

    assert (shown, frame_of(result), held) == (USER, FRAME, b"")


def test_the_split_is_the_same_fed_byte_by_byte() -> None:
    shown, result, held = scan([STREAM[i : i + 1] for i in range(len(STREAM))])

    assert (shown, frame_of(result), held) == (USER, FRAME, b"")


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_the_split_is_the_same_at_every_chunk_boundary(cut: int) -> None:
    shown, result, held = scan([STREAM[:cut], STREAM[cut:]])

    assert (shown, frame_of(result), held) == (USER, FRAME, b"")


def test_complete_user_lines_are_shown_as_soon_as_they_arrive() -> None:
    scanner = ResultScanner(NONCE, LIMIT)

    assert scanner.feed(b"first\nsec") == b"first\nsec"
    assert scanner.feed(b"ond\n") == b"ond\n"
    assert scanner.result is None


def test_a_partial_line_that_cannot_be_the_frame_is_not_held_back() -> None:
    scanner = ResultScanner(NONCE, LIMIT)

    assert scanner.feed(b"Downloading... 10%") == b"Downloading... 10%"
    assert scanner.leftover() == b""


def test_only_a_partial_line_that_could_still_be_the_frame_is_held_back() -> None:
    scanner = ResultScanner(NONCE, LIMIT)

    assert scanner.feed(b"done\n" + NONCE[:10].encode()) == b"done\n"
    assert scanner.feed(NONCE[10:20].encode()) == b""
    assert scanner.feed(b"-not the nonce after all\n") == NONCE[:20].encode() + b"-not the nonce after all\n"
    assert scanner.result is None


def test_a_held_back_partial_line_is_returned_when_the_stream_ends() -> None:
    scanner = ResultScanner(NONCE, LIMIT)
    scanner.feed(b"x\n" + NONCE[:7].encode())

    assert scanner.leftover() == NONCE[:7].encode()
    assert scanner.leftover() == b""


def test_a_frame_with_another_nonce_is_user_output() -> None:
    forged = b"00000000000000000000000000000000" + FRAME + b"\n"

    shown, result, _ = scan([forged, STREAM])

    assert shown == forged + USER
    assert frame_of(result) == FRAME


def test_a_frame_without_user_output_is_found() -> None:
    shown, result, _ = scan([NONCE.encode(), FRAME, b"\n"])

    assert (shown, frame_of(result)) == (b"", FRAME)


def test_multibyte_user_output_split_inside_a_character_passes_through_unchanged() -> None:
    text = "数据分析任务完成\n".encode()

    shown, _, _ = scan([text[:4], text[4:11], text[11:]])

    assert shown == text


def test_the_stderr_end_marker_is_a_frame_with_nothing_after_the_nonce() -> None:
    shown, result, _ = scan([b"warning: x\n", NONCE.encode() + b"\n"])

    assert shown == b"warning: x\n"
    assert result is not None and frame_of(result) == b""


def run_bootstrap(function_code: str) -> bytes:
    """Run the sandbox bootstrap as a local process (no container) and return its stdout."""
    header = {"nonce": NONCE, "mode": "code", "result_cap": 1 << 20, "frame_cap": 3 << 20}
    payload = {
        "mode": "code",
        "code": function_code,
        "function": "main",
        "args": [],
        "kwargs": {},
        "result_cap": 1 << 20,
    }
    done = subprocess.run(
        [sys.executable, "-I", "-u", "-c", BOOTSTRAP],
        input=json.dumps(header).encode() + b"\n" + json.dumps(payload).encode() + b"\n",
        capture_output=True,
        timeout=60,
        check=True,
    )
    return done.stdout


BOOTSTRAP_CODE = [
    pytest.param("def main():\n    print('working')\n    return 42\n", id="output-ending-in-a-newline"),
    pytest.param(
        "def main():\n    print('progress: 100%', end='')\n    return 42\n", id="print-without-a-final-newline"
    ),
    pytest.param(
        "import sys\ndef main():\n    sys.stdout.write('no newline')\n    return 42\n",
        id="raw-write-without-a-final-newline",
    ),
]


@pytest.mark.parametrize("chunk_size", [1 << 20, 1], ids=["one-chunk", "byte-by-byte"])
@pytest.mark.parametrize("function_code", BOOTSTRAP_CODE)
def test_the_bootstrap_result_is_found_whatever_the_user_printed_last(function_code: str, chunk_size: int) -> None:
    stdout = run_bootstrap(function_code)

    shown, result, held = scan([stdout[i : i + chunk_size] for i in range(0, len(stdout), chunk_size)])

    assert result is not None, f"no result frame found; shown as user output: {shown!r}"
    assert json.loads(result) == {"ok": True, "result": 42}
    assert NONCE.encode() not in shown + held


def test_a_frame_right_after_output_without_a_newline_is_found_at_every_chunk_boundary() -> None:
    # The bootstrap writes the frame right after the user's last byte, newline or not.
    stream = b"no newline" + NONCE.encode() + FRAME + b"\n"

    lost = [cut for cut in range(len(stream) + 1) if frame_of(scan([stream[:cut], stream[cut:]])[1]) != FRAME]

    assert lost == [], f"result frame not found when the stream is cut at {lost}"


# --- Channel ------------------------------------------------------------------------------------------


def docker_frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()


async def collect(frames: AsyncIterator[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    return [frame async for frame in frames]


async def test_frames_of_both_streams_come_out_in_order(sockets: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = sockets
    channel = Channel(ours)
    loop = asyncio.get_running_loop()
    sent = [(STDOUT, b"hello\n"), (STDERR, b"oops\n"), (STDOUT, b""), (STDOUT, b"x" * 300_000)]

    reader = asyncio.create_task(collect(channel.frames()))
    await loop.sock_sendall(theirs, b"".join(docker_frame(s, p) for s, p in sent))
    theirs.shutdown(socket.SHUT_WR)

    assert await asyncio.wait_for(reader, 10) == sent


async def test_frames_sent_byte_by_byte_are_reassembled(sockets: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = sockets
    channel = Channel(ours)
    loop = asyncio.get_running_loop()
    data = docker_frame(STDOUT, b"abc") + docker_frame(STDERR, "数据\n".encode())

    reader = asyncio.create_task(collect(channel.frames()))
    for i in range(len(data)):
        await loop.sock_sendall(theirs, data[i : i + 1])
    theirs.shutdown(socket.SHUT_WR)

    assert await asyncio.wait_for(reader, 10) == [(STDOUT, b"abc"), (STDERR, "数据\n".encode())]


async def test_an_incomplete_frame_is_not_yielded_until_its_last_byte(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = sockets
    frames = Channel(ours).frames()
    loop = asyncio.get_running_loop()
    data = docker_frame(STDOUT, b"complete me")

    await loop.sock_sendall(theirs, data[:-1])
    pending = asyncio.create_task(anext(frames))
    done, _ = await asyncio.wait({pending}, timeout=0.2)
    assert not done

    await loop.sock_sendall(theirs, data[-1:])
    assert await asyncio.wait_for(pending, 10) == (STDOUT, b"complete me")


async def test_a_frame_cut_off_by_the_container_closing_is_dropped(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = sockets
    channel = Channel(ours)
    loop = asyncio.get_running_loop()

    await loop.sock_sendall(theirs, docker_frame(STDOUT, b"whole") + docker_frame(STDOUT, b"cut off")[:-3])
    theirs.shutdown(socket.SHUT_WR)

    assert await asyncio.wait_for(collect(channel.frames()), 10) == [(STDOUT, b"whole")]


async def test_send_delivers_the_payload_line(sockets: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = sockets
    channel = Channel(ours)
    loop = asyncio.get_running_loop()
    payload = b'{"nonce": "n"}\n'

    await channel.send(payload)

    assert await asyncio.wait_for(loop.sock_recv(theirs, 1024), 10) == payload


def test_closing_a_channel_twice_is_harmless(sockets: tuple[socket.socket, socket.socket]) -> None:
    channel = Channel(sockets[0])

    channel.close()
    channel.close()

    assert sockets[0].fileno() == -1


# --- bounds ---------------------------------------------------------------------------------------------

HOSTILE_BYTES = 32 * 1024 * 1024
CHUNK = 64 * 1024


def test_32_mib_without_a_newline_after_the_nonce_holds_at_most_the_limit_and_ends_the_frame_as_too_large() -> None:
    scanner = ResultScanner(NONCE, LIMIT)
    most_held, shown = 0, scanner.feed(b"before\n" + NONCE.encode())
    for _ in range(HOSTILE_BYTES // CHUNK):
        shown += scanner.feed(b"A" * CHUNK)
        most_held = max(most_held, scanner.held_bytes)

    assert scanner.too_large and scanner.result is None
    assert most_held <= LIMIT
    assert shown == b"before\n"
    assert scanner.held_bytes == 0


def test_32_mib_of_output_without_a_newline_is_passed_on_holding_less_than_the_nonce() -> None:
    scanner = ResultScanner(NONCE, LIMIT)
    most_held, shown = 0, 0
    for _ in range(HOSTILE_BYTES // CHUNK):
        shown += len(scanner.feed(b"5f0c2a9e" * (CHUNK // 8)))  # a prefix of the nonce, over and over
        most_held = max(most_held, scanner.held_bytes)

    assert most_held < len(NONCE)
    assert shown + len(scanner.leftover()) == HOSTILE_BYTES


def test_a_frame_of_exactly_the_limit_is_accepted_and_one_byte_more_is_too_large() -> None:
    body = b"x" * (LIMIT - 1) + b"\n"
    fits, over = ResultScanner(NONCE, LIMIT), ResultScanner(NONCE, LIMIT)

    fits.feed(NONCE.encode() + body)
    over.feed(NONCE.encode() + b"x" + body)

    assert fits.result == body and not fits.too_large
    assert over.result is None and over.too_large
