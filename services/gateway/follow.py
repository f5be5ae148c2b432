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
GAP_POLL_SECONDS = 0.2
SETTLE_LIMIT_SECONDS = 5.0
ACTIVE = frozenset({"retrying", "running", "queued", "pending", "active", "paused"})
# Characters JSON may carry raw but line-splitting readers (Python's str.splitlines, httpx's
# iter_lines) end a line at: escaped, an SSE data line stays one line for every client.
LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


class _Follower:
    """Sends each chunk of the followed run exactly once, in seq order within an attempt.

    Chunks come from two sources that overlap and race: stored reads and the live subscription.
    A live chunk ahead of the next expected seq is held until the store fills the gap, so a chunk
    published just before the subscription (and not yet stored at the first read) is not skipped
    or sent after its successors.
    """

    def __init__(self, response: web.StreamResponse, store: StoreClient, task_id: str, run_id: str | None) -> None:
        self.response, self.store, self.task_id = response, store, task_id
        self.run_id = run_id
        self.attempt: int | None = None
        self.next_seq = 0
        self.held: dict[int, LogChunk] = {}
        self.sent = 0

    async def offer(self, chunk: LogChunk) -> None:
        """Send ``chunk`` if it is the next one; hold it if it is ahead; drop it if already sent."""
        if self.run_id is None:
            self.run_id = chunk.run_id
        if chunk.run_id != self.run_id:
            return
        if self.attempt is None:
            self.attempt = chunk.attempt
        elif chunk.attempt > self.attempt:
            await self.fill()  # the earlier attempt ended: whatever the store still has of it first
            await self.next_attempt(chunk.attempt)
        if chunk.attempt != self.attempt or chunk.seq < self.next_seq:
            return
        self.held[chunk.seq] = chunk
        while self.next_seq in self.held:
            await self._write(self.held.pop(self.next_seq))
            self.next_seq += 1

    async def next_attempt(self, attempt: int) -> None:
        """Move on to a later attempt; chunks still held of this one (a gap never filled) go first."""
        await self.flush_held()
        self.attempt, self.next_seq = attempt, 0

    async def flush_held(self) -> None:
        """Send held chunks in order even though a gap remains (the store will not fill it)."""
        for seq in sorted(self.held):
            await self._write(self.held[seq])
            self.next_seq = seq + 1
        self.held.clear()

    async def fill(self) -> api.LogsReply:
        """Offer every stored chunk of the current attempt after the last one sent; the last reply."""
        after = self.next_seq - 1 if self.attempt is not None else -1
        while True:
            asked = api.GetLogsRequest(id=self.task_id, run_id=self.run_id, attempt=self.attempt, after=after)
            reply: api.LogsReply = await self.store.call(subjects.GET_LOGS, asked, api.LogsReply)
            self.run_id = self.run_id or reply.run_id
            if self.attempt is None:
                self.attempt = reply.attempt
            for chunk in reply.chunks:
                await self.offer(chunk)
            if not reply.more or not reply.chunks:
                return reply
            after = reply.chunks[-1].seq

    async def _write(self, chunk: LogChunk) -> None:
        data = codec.encode(
            {
                "run_id": chunk.run_id,
                "attempt": chunk.attempt,
                "seq": chunk.seq,
                "stream": chunk.stream,
                "data": chunk.data,
            }
        ).decode()
        for raw, escaped in LINE_BREAKS.items():
            data = data.replace(raw, escaped)
        self.sent += 1
        await self.response.write(f"event: log\nid: {chunk.attempt}:{chunk.seq}\ndata: {data}\n\n".encode())

    async def send_end(self, status: str) -> None:
        await self.flush_held()
        data = codec.encode({"run_id": self.run_id, "status": status}).decode()
        await self.response.write(f"event: end\ndata: {data}\n\n".encode())

    async def caught_up(self) -> bool:
        """Send what the store has; True (and the end event) once the run has ended."""
        reply = await self.fill()
        if not reply.finished:
            return False
        if self.run_id is None:
            status = (await self.store.call(subjects.GET_TASK, api.TaskRef(id=self.task_id), TaskRecord)).status
        else:
            run: RunRecord = await self.store.call(
                subjects.GET_RUN, api.RunRef(id=self.task_id, run_id=self.run_id), RunRecord
            )
            if self.attempt is not None and run.attempt > self.attempt:  # a retry began: follow it
                await self.next_attempt(run.attempt)
                return await self.caught_up()
            status = run.status
        if status in ACTIVE:
            return False
        await self.send_end(status)
        return True


async def follow_logs(request: web.Request, query: api.GetLogsRequest) -> web.StreamResponse:
    """Stored chunks first, then live ones, each exactly once and in order, until the run ends.

    Live chunks and the end come from core subscriptions made before the stored ones are read (a
    short output comes with the end, in ``RunFinished.log``); while the stream is quiet (or a live
    chunk is ahead of the stored ones) the store is asked again, because chunks travel on their own
    stream and may reach the store after the run's end (or the end may precede the subscription).
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
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        follower = _Follower(response, store, query.id, first.run_id)
        follower.attempt = query.attempt or first.attempt
        if await follower.caught_up():
            return response
        await _follow_live(gateway.stopping, inbox, follower, response)
        return response
    finally:
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()


async def _follow_live(
    stopping: asyncio.Event, inbox: asyncio.Queue[tuple[str, bytes]], follower: _Follower, response: web.StreamResponse
) -> None:
    """Live chunks until the run's end; the store is asked again when quiet or when a gap shows."""
    loop = asyncio.get_running_loop()
    quiet, last_fill = 0.0, loop.time()
    while not stopping.is_set():
        wait = GAP_POLL_SECONDS if follower.held else POLL_SECONDS
        try:
            kind, data = await asyncio.wait_for(inbox.get(), wait)
        except TimeoutError:
            last_fill = loop.time()
            if await follower.caught_up():
                return
            quiet += wait
            if quiet >= KEEPALIVE_SECONDS:
                await response.write(b": keepalive\n\n")
                quiet = 0.0
            continue
        if kind == "chunk":
            with contextlib.suppress(msgspec.MsgspecError):
                await follower.offer(codec.log_chunk_decoder.decode(data))
            if follower.held and loop.time() - last_fill >= GAP_POLL_SECONDS:
                last_fill = loop.time()
                await follower.fill()  # a live chunk is ahead of what was sent: the store has the gap
            continue
        try:
            finished = codec.decode(RunFinished, data)
        except msgspec.MsgspecError:
            continue
        if follower.run_id in (None, finished.run_id):
            for chunk in finished.log:  # a short output travels in the outcome, not on LOGS
                await follower.offer(chunk)
        if follower.run_id not in (None, finished.run_id) or finished.will_retry:
            continue
        follower.run_id = finished.run_id
        deadline = loop.time() + SETTLE_LIMIT_SECONDS
        while not await follower.caught_up():  # the last chunks may still be on their way to the store
            if loop.time() > deadline:
                await follower.send_end(finished.status)
                return
            await asyncio.sleep(0.1)
        return
