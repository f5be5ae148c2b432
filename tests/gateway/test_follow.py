"""A log follow hands over from the stored read to the live subscription without duplicates or gaps.

The gateway runs in this process against a real nats-server; a stand-in for the store answers its
requests, so the test decides exactly which chunks are stored and which arrive live, and when.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import nats
import pytest
from aiohttp.test_utils import TestServer
from nats.aio.client import Client
from nats.aio.msg import Msg

from proto import api, codec, subjects
from proto.records import RunRecord
from proto.runs import LogChunk
from services.common.presence import ServiceRegistry
from services.gateway.app import create_app
from services.gateway.context import Gateway
from services.gateway.metrics import HttpMetrics
from services.gateway.settings import GatewaySettings
from services.gateway.store_client import StoreClient
from taskmesh.processes import NatsServer

TASK_ID = "0190f0aa-0000-7000-8000-000000000001"
RUN_ID = "run-1"


def chunk(seq: int, attempt: int = 1) -> LogChunk:
    return LogChunk(
        task_id=TASK_ID,
        run_id=RUN_ID,
        attempt=attempt,
        seq=seq,
        stream="stdout",
        data=f"line {attempt}.{seq}\n",
        at=datetime.now(UTC),
    )


@dataclass
class FakeStore:
    """Answers the gateway's store requests from ``stored``; ``on_logs`` runs before each logs reply."""

    nc: Client
    stored: list[LogChunk] = field(default_factory=list)
    finished: bool = False
    status: str = "running"
    attempt: int = 1
    logs_requests: list[api.GetLogsRequest] = field(default_factory=list)
    on_logs: list = field(default_factory=list)

    async def answer(self, msg: Msg) -> None:
        if msg.subject == subjects.GET_LOGS:
            asked = codec.decode(api.GetLogsRequest, msg.data)
            self.logs_requests.append(asked)
            if self.on_logs:
                await self.on_logs.pop(0)()
            attempt = asked.attempt or self.attempt
            chunks = [c for c in self.stored if c.attempt == attempt and c.seq > asked.after]
            reply: object = api.LogsReply(
                task_id=TASK_ID,
                run_id=RUN_ID,
                attempt=attempt,
                chunks=chunks,
                finished=self.finished or attempt < self.attempt,
            )
        elif msg.subject == subjects.GET_RUN:
            reply = RunRecord(task_id=TASK_ID, run_id=RUN_ID, slot="once", status=self.status, attempt=self.attempt)
        else:
            raise AssertionError(f"unexpected request on {msg.subject}")
        await msg.respond(codec.encode(reply))

    async def publish_live(self, *chunks: LogChunk) -> None:
        for live in chunks:
            await self.nc.publish(subjects.log_chunks(TASK_ID, RUN_ID), codec.encode(live))
        await self.nc.flush()


@pytest.fixture
async def store(nats_server: NatsServer, nc: Client) -> FakeStore:
    fake = FakeStore(nc)
    await nc.subscribe(subjects.API_ALL, cb=fake.answer)
    await nc.flush()
    return fake


@pytest.fixture
async def gateway_url(nats_server: NatsServer, store: FakeStore) -> AsyncIterator[str]:
    gateway_nc = await nats.connect(nats_server.url)
    gateway = Gateway(
        settings=GatewaySettings(),
        nc=gateway_nc,
        store=StoreClient(gateway_nc, 5.0),
        registry=ServiceRegistry(),
        metrics=HttpMetrics(),
    )
    server = TestServer(create_app(gateway))
    await server.start_server()
    try:
        yield str(server.make_url(""))
    finally:
        gateway.stopping.set()
        await server.close()
        await gateway_nc.close()


async def follow(url: str, timeout: float = 20.0) -> list[dict]:
    """Every event of a follow until its end (fails the test if it does not end in time)."""
    events = []

    async def read() -> None:
        async with httpx.AsyncClient(base_url=url) as client:  # noqa: SIM117 - the stream belongs to the client
            async with client.stream("GET", f"/api/tasks/{TASK_ID}/logs", params={"follow": "true"}) as response:
                assert response.status_code == 200, await response.aread()
                kind = None
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        kind = line[len("event: ") :]
                    elif line.startswith("data: "):
                        events.append({"event": kind, **json.loads(line[len("data: ") :])})

    await asyncio.wait_for(read(), timeout)
    return events


def seqs(events: list[dict]) -> list[tuple[int, int]]:
    return [(e["attempt"], e["seq"]) for e in events if e["event"] == "log"]


async def test_a_chunk_stored_late_is_sent_before_the_live_chunks_that_overtook_it(
    gateway_url: str, store: FakeStore
) -> None:
    # Given chunk 0 stored, chunk 1 published before the follow subscribed but not yet stored,
    # and chunks 0 and 2 arriving live while the gateway reads the stored part
    store.stored = [chunk(0)]

    async def live_during_first_read() -> None:
        await store.publish_live(chunk(0), chunk(2))

    async def chunk_one_stored_now() -> None:
        store.stored = [chunk(0), chunk(1), chunk(2)]
        store.finished, store.status = True, "succeeded"

    store.on_logs = [live_during_first_read, _nothing, chunk_one_stored_now]
    # When the log is followed to its end
    events = await follow(gateway_url)
    # Then each chunk comes exactly once, in seq order, and the end last
    assert seqs(events) == [(1, 0), (1, 1), (1, 2)], events
    assert events[-1] == {"event": "end", "run_id": RUN_ID, "status": "succeeded"}


async def test_chunks_arriving_live_and_stored_at_once_are_each_sent_once(gateway_url: str, store: FakeStore) -> None:
    # Given every chunk arrives live while the stored read is under way, and is stored too
    store.stored = [chunk(0), chunk(1)]

    async def live_during_reads() -> None:
        await store.publish_live(chunk(1), chunk(2), chunk(3), chunk(0))
        store.stored = [chunk(seq) for seq in range(4)]
        store.finished, store.status = True, "succeeded"

    store.on_logs = [live_during_reads]
    events = await follow(gateway_url)
    assert seqs(events) == [(1, 0), (1, 1), (1, 2), (1, 3)], events
    assert events[-1]["event"] == "end"


async def test_a_retry_is_followed_after_the_whole_of_the_earlier_attempt(gateway_url: str, store: FakeStore) -> None:
    # Given attempt 1 has two chunks, the second stored late, and attempt 2 begins live meanwhile
    store.stored = [chunk(0)]

    async def attempt_two_starts() -> None:
        await store.publish_live(chunk(0, attempt=2))
        store.stored = [chunk(0), chunk(1), chunk(0, attempt=2), chunk(1, attempt=2)]
        store.attempt, store.finished, store.status = 2, True, "succeeded"

    store.on_logs = [_nothing, attempt_two_starts]
    events = await follow(gateway_url)
    assert seqs(events) == [(1, 0), (1, 1), (2, 0), (2, 1)], events
    assert events[-1]["status"] == "succeeded"


async def test_output_with_unicode_line_separators_stays_one_event(gateway_url: str, store: FakeStore) -> None:
    odd = LogChunk(
        task_id=TASK_ID,
        run_id=RUN_ID,
        attempt=1,
        seq=0,
        stream="stdout",
        data="a\u2028b\u2029c\u0085d\n",
        at=datetime.now(UTC),
    )
    store.stored, store.finished, store.status = [odd], True, "succeeded"
    events = await follow(gateway_url)
    assert [e["data"] for e in events if e["event"] == "log"] == ["a\u2028b\u2029c\u0085d\n"]


async def _nothing() -> None:
    return None
