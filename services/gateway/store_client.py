"""Requests to the store over NATS; transport failures become 503s, store errors keep their code."""

from __future__ import annotations

import logging
from typing import Any, TypeVar, overload

import msgspec
from nats.aio.client import Client
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from proto import api, codec, subjects
from proto.errors import ErrorBody
from proto.runs import LogChunk
from services.gateway.errors import ApiError

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreReplyError(Exception):
    """The store answered with an error body."""

    def __init__(self, body: ErrorBody) -> None:
        super().__init__(body.error.message)
        self.body = body


class StoreClient:
    """Sends a request to one of the store's subjects and returns its reply."""

    def __init__(self, nc: Client, timeout_seconds: float) -> None:
        self.nc = nc
        self.timeout = timeout_seconds

    async def raw(
        self, subject: str, payload: bytes = b"{}", headers: dict[str, str] | None = None, timeout: float | None = None
    ) -> bytes:
        """The reply bytes; StoreReplyError for an error reply; ApiError(503) when unreachable."""
        if not self.nc.is_connected:
            raise ApiError("unavailable", "NATS is not reachable from the gateway; try again shortly")
        try:
            reply = await self.nc.request(subject, payload, timeout=timeout or self.timeout, headers=headers)
        except NoRespondersError:
            raise ApiError("unavailable", "the store is not running (no responders); try again shortly") from None
        except NatsTimeout:
            raise ApiError("timeout", "the store did not answer in time; try again shortly") from None
        except (ConnectionClosedError, OSError) as exc:
            raise ApiError("unavailable", f"NATS connection problem: {type(exc).__name__}") from None
        if reply.headers and subjects.HEADER_ERROR in reply.headers:
            raise StoreReplyError(codec.error_reply(reply.data))
        return reply.data

    @overload
    async def call(self, subject: str, request: Any, reply_type: type[T], timeout: float | None = None) -> T: ...
    @overload
    async def call(
        self, subject: str, request: Any = None, reply_type: None = None, timeout: float | None = None
    ) -> bytes: ...
    async def call(
        self, subject: str, request: Any = None, reply_type: type[T] | None = None, timeout: float | None = None
    ) -> T | bytes:
        """Encode ``request``, send it, decode the reply as ``reply_type`` (raw bytes if None)."""
        payload = codec.encode(request) if request is not None else b"{}"
        data = await self.raw(subject, payload, timeout=timeout)
        if reply_type is None:
            return data
        try:
            return codec.decode(reply_type, data)
        except msgspec.MsgspecError as exc:
            log.error("unexpected reply on %s: %s", subject, exc)
            raise ApiError("unavailable", "the store sent a reply this gateway cannot read") from None

    async def all_log_chunks(self, query: api.GetLogsRequest) -> list[LogChunk]:
        """Every stored chunk of a run attempt from ``query.after`` on, page by page."""
        chunks: list[LogChunk] = []
        while True:
            reply = await self.call(subjects.GET_LOGS, query, api.LogsReply)
            chunks.extend(reply.chunks)
            if not reply.more or not reply.chunks:
                return chunks
            query = msgspec.structs.replace(
                query, run_id=reply.run_id, attempt=reply.attempt, after=reply.chunks[-1].seq
            )
