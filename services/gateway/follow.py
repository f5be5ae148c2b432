"""``GET /api/tasks/{id}/logs?follow=true``: stored output, then live chunks, as Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
from aiohttp import web
from nats.aio.msg import Msg

from proto import api, codec, subjects
from proto.records import RunRecord, TaskRecord
from proto.runs import LogChunk, RunFinished
from services.gateway.context import GATEWAY
from services.gateway.store_client import StoreClient

KEEPALIVE_SECONDS = 15.0
POLL_SECONDS = 1.0
SETTLE_LIMIT_SECONDS = 5.0
ACTIVE = frozenset({"retrying", "running", "queued", "pending", "active", "paused"})


class _Follower:
    """Sends each chunk of the followed run once, in order of arrival, until the run ends."""

    def __init__(self, response: web.StreamResponse, run_id: str | None) -> None:
        self.response = response
        self.run_id = run_id
        self.sent: set[tuple[int, int]] = set()

    async def send_chunk(self, chunk: LogChunk) -> None:
        if self.run_id is None:
            self.run_id = chunk.run_id
        if chunk.run_id != self.run_id or (chunk.attempt, chunk.seq) in self.sent:
            return
        self.sent.add((chunk.attempt, chunk.seq))
        data = codec.encode({"run_id": chunk.run_id, "attempt": chunk.attempt, "seq": chunk.seq,
                             "stream": chunk.stream, "data": chunk.data}).decode()
        await self.response.write(f"event: log\nid: {chunk.attempt}:{chunk.seq}\ndata: {data}\n\n".encode())

    async def send_end(self, status: str, run_id: str | None) -> None:
        data = codec.encode({"run_id": run_id, "status": status}).decode()
        await self.response.write(f"event: end\ndata: {data}\n\n".encode())


async def follow_logs(request: web.Request, query: api.GetLogsRequest) -> web.StreamResponse:
    """Stored chunks first, then live ones (deduplicated by attempt and seq), until the run ends.

    Live chunks and the end come from core subscriptions made before the stored ones are read;
    while the stream is quiet the store is asked again, because chunks travel on their own stream
    and may reach the store after the run's end (or the end may precede the subscription).
    """
    gateway = request.app[GATEWAY]
    nc, store = gateway.nc, gateway.store
    inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=100_000)

    async def on_chunk(msg: Msg) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            inbox.put_nowait(("chunk", msg.data))

    async def on_finished(msg: Msg) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            inbox.put_nowait(("finished", msg.data))

    run_filter = query.run_id or "*"
    subscriptions = [
        await nc.subscribe(subjects.log_chunks(query.id, run_filter), cb=on_chunk),
        await nc.subscribe(subjects.run_event(query.id, run_filter, "finished"), cb=on_finished),
    ]
    try:
        first = await store.call(subjects.GET_LOGS, query, api.LogsReply)  # a 404 is still a JSON error
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        follower = _Follower(response, first.run_id)  # type: ignore[union-attr]

        async def caught_up() -> bool:
            """Send what the store has; True (and the end event) once the run has ended."""
            asked = api.GetLogsRequest(id=query.id, run_id=follower.run_id)
            reply = await store.call(subjects.GET_LOGS, asked, api.LogsReply)
            follower.run_id = follower.run_id or reply.run_id  # type: ignore[union-attr]
            for chunk in reply.chunks if not reply.more else await store.all_log_chunks(asked):  # type: ignore[union-attr]
                await follower.send_chunk(chunk)
            if not reply.finished:  # type: ignore[union-attr]
                return False
            status = await _run_status(store, query.id, follower.run_id)
            if status in ACTIVE:
                return False
            await follower.send_end(status, follower.run_id)
            return True

        if await caught_up():
            return response
        quiet = 0.0
        while not gateway.stopping.is_set():
            try:
                kind, data = await asyncio.wait_for(inbox.get(), POLL_SECONDS)
            except TimeoutError:
                if await caught_up():
                    return response
                quiet += POLL_SECONDS
                if quiet >= KEEPALIVE_SECONDS:
                    await response.write(b": keepalive\n\n")
                    quiet = 0.0
                continue
            if kind == "chunk":
                with contextlib.suppress(msgspec.MsgspecError):
                    await follower.send_chunk(codec.log_chunk_decoder.decode(data))
                continue
            try:
                finished = codec.decode(RunFinished, data)
            except msgspec.MsgspecError:
                continue
            if follower.run_id not in (None, finished.run_id) or finished.will_retry:
                continue
            follower.run_id = finished.run_id
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SETTLE_LIMIT_SECONDS
            while not await caught_up():  # the last chunks may still be on their way to the store
                if loop.time() > deadline:
                    await follower.send_end(finished.status, finished.run_id)
                    return response
                await asyncio.sleep(0.1)
            return response
        return response
    finally:
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()


async def _run_status(store: StoreClient, task_id: str, run_id: str | None) -> str:
    """The status of the run (or, before any run, of the task)."""
    if run_id is None:
        return (await store.call(subjects.GET_TASK, api.TaskRef(id=task_id), TaskRecord)).status  # type: ignore[union-attr]
    return (await store.call(subjects.GET_RUN, api.RunRef(id=task_id, run_id=run_id), RunRecord)).status  # type: ignore[union-attr]
