"""A nats-server started on ports it picked itself survives another process taking one first."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmesh.processes import NatsServer, ProcessError, free_port


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other process listens on (as one that bound it after free_port() saw it free)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_monitor_port_taken_after_it_was_picked_is_picked_again(tmp_path: Path, taken_port: int) -> None:
    picks = iter([taken_port])
    # the race forced: the first pick is a port another process already holds
    server = NatsServer(tmp_path / "nats", port=free_port(), pick_port=lambda: next(picks, None) or free_port())
    try:
        server.start()
        assert server.monitor_port != taken_port and server.process is not None and server.process.poll() is None
        assert b"address already in use" in (tmp_path / "nats" / "nats-server.log").read_bytes()
    finally:
        server.stop()


def test_a_port_given_by_the_caller_is_not_changed_and_its_conflict_is_reported(
    tmp_path: Path, taken_port: int
) -> None:
    server = NatsServer(tmp_path / "nats", port=taken_port)
    try:
        with pytest.raises(ProcessError, match="exited"):
            server.start()
        assert server.port == taken_port
    finally:
        server.stop()
