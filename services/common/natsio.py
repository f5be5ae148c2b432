"""NATS: connect (and keep reconnecting), and create or wait for streams, consumers and buckets."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, replace
from typing import TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KV_DEL, KV_MARKER_REASON, KV_OP, KV_PURGE, KeyValue

from proto import streams, subjects
from services.common.lifecycle import sleep_or_stop
from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

CLUSTER_FORMING_ERRORS = frozenset({10005, 10008, 10009})
"""JetStream API errors that mean "not yet", not "no": no peers for placement (a peer is still
joining), JetStream temporarily unavailable, and no leader to handle the request."""
STREAM_NAME_IN_USE = 10058
FORMING_WARN_EVERY_SECONDS = 30.0
CONSUMER_RESET_TIMEOUT_SECONDS = 1.0
"""A reset is an optimisation: in a degraded cluster a new leader must not wait on it (the ack
wait still brings the messages back), so every reset of one leadership together costs at most this."""


async def connect(
    settings: ServiceSettings, name: str, stop: asyncio.Event | None = None, *, user: str | None = None
) -> Client:
    """Connect to NATS, retrying until it answers (or ``stop`` is set); reconnect forever after.

    ``user`` (the service's NATS user) picks the inbox prefix: replies and pull deliveries arrive
    under ``_INBOX.<user>.``, which deploy/nats grants to that user alone.
    """

    async def on_error(exc: Exception) -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("nats error: %s", exc)

    async def on_disconnect() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("nats disconnected; reconnecting")

    async def on_reconnect() -> None:
        log.info("nats reconnected", extra={"url": nc.connected_url.netloc if nc.connected_url else "?"})

    delay = 0.2
    while True:
        nc = Client()
        try:
            await nc.connect(
                servers=[u.strip() for u in settings.nats_url.split(",")],
                name=name,
                inbox_prefix=subjects.inbox_prefix(user) if user else subjects.INBOX_ROOT,
                user=settings.nats_user,
                password=settings.nats_password,
                token=settings.nats_token,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,  # type: ignore[arg-type]  # nats-py takes float seconds; annotated int
                connect_timeout=2,
                ping_interval=10,
                max_outstanding_pings=3,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                pending_size=64 * 1024 * 1024,
                drain_timeout=int(settings.shutdown_grace.total_seconds()) + 5,
            )
            log.info("connected to nats", extra={"url": nc.connected_url.netloc if nc.connected_url else "?"})
            return nc
        except Exception as exc:  # nats-py raises several types for "not there yet"
            log.warning("nats not reachable at %s (%s); retrying", settings.nats_url, exc or type(exc).__name__)
            if stop is None:
                await asyncio.sleep(delay)
            elif stop.is_set() or await sleep_or_stop(stop, delay):
                raise ConnectionAbortedError("stopped before NATS was reachable") from None
            delay = min(delay * 2, 5.0)


def _same_stream(have: js_api.StreamConfig, want: js_api.StreamConfig) -> bool:
    keys = (
        "subjects",
        "retention",
        "max_age",
        "duplicate_window",
        "max_msg_size",
        "num_replicas",
        "storage",
        "max_bytes",
        "discard",
    )
    # a value left unset (None/0) in our definition means "the server's default": not a difference
    return all(getattr(have, k) == getattr(want, k) for k in keys if getattr(want, k))


async def ensure_stream(js: JetStreamContext, spec: streams.StreamSpec) -> None:
    """Create the stream, or bring its settings in line with ``spec``."""
    want = spec.config
    assert want.name is not None, "every stream in proto has a name"
    try:
        info = await js.stream_info(want.name)
    except NotFoundError:
        try:
            await js.add_stream(want)
            log.info("created stream %s", want.name)
            return
        except BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            info = await js.stream_info(want.name)  # created by a concurrent starter
    if not _same_stream(info.config, want):
        await js.update_stream(want)
        log.info("updated stream %s", want.name)


async def ensure_consumer(js: JetStreamContext, name: str) -> None:
    """Create the durable consumer ``name`` (from ``proto.streams.CONSUMERS``) if it is missing."""
    spec = streams.CONSUMERS[name]
    try:
        info = await js.consumer_info(spec.stream, name)
    except NotFoundError:
        await js.add_consumer(spec.stream, spec.config)
        log.info("created consumer %s on %s", name, spec.stream)
        return
    if info.config.ack_policy != spec.config.ack_policy:
        await _recreate_from_ack_floor(js, spec, info)


async def _recreate_from_ack_floor(js: JetStreamContext, spec: streams.ConsumerSpec, info: js_api.ConsumerInfo) -> None:
    """Give a durable consumer a new ack policy (the server cannot change one in place).

    The new consumer starts just above the old one's ack floor: what was acknowledged stays
    done, and what was delivered but not acknowledged is delivered again (consumers here apply
    idempotently).
    """
    start = (info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0) + 1
    config = replace(spec.config, deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
    await js.delete_consumer(spec.stream, info.name)
    await js.add_consumer(spec.stream, config)
    log.warning(
        "consumer recreated with a new ack policy",
        extra={
            "consumer": info.name,
            "stream": spec.stream,
            "ack_policy": str(spec.config.ack_policy),
            "from_sequence": start,
        },
    )


async def redeliver_unacknowledged(nc: Client, *names: str) -> None:
    """``reset_to_ack_floor`` for each of ``names``, all at once."""
    await asyncio.gather(*(reset_to_ack_floor(nc, name) for name in names))


async def reset_to_ack_floor(nc: Client, name: str) -> None:
    """Make what durable consumer ``name`` delivered but nobody acknowledged deliverable now.

    A new leader calls this before it consumes: its predecessor, killed or cut off, held messages
    that would otherwise come back only when the ack wait runs out, and until then the new leader
    would answer from older state. The consumer is reset to its ack floor (nats-server 2.14+,
    ADR-60); everything above the floor comes again, which consumers here apply idempotently.
    Best effort: on an older server or an error the ack wait still brings them back.
    """
    spec = streams.CONSUMERS[name]
    subject = f"$JS.API.CONSUMER.RESET.{spec.stream}.{name}"
    try:
        reply = await nc.request(subject, b"", timeout=CONSUMER_RESET_TIMEOUT_SECONDS)
        answer = json.loads(reply.data or b"{}")
        problem = answer["error"].get("description", answer["error"]) if "error" in answer else None
    except Exception as exc:  # NATS away, a timeout, an unreadable answer: the ack wait will do it
        problem = exc
    if problem is not None:
        log.warning("consumer %s not reset (%s); unacknowledged messages return after the ack wait", name, problem)
        return
    log.info("consumer reset to its ack floor", extra={"consumer": name, "from_sequence": answer.get("reset_seq")})


async def ensure_bucket(js: JetStreamContext, spec: streams.BucketSpec) -> KeyValue:
    """Create the KV bucket if missing and return it."""
    try:
        kv = await js.key_value(spec.config.bucket)
    except NotFoundError:  # BucketNotFoundError
        pass
    else:
        stream = f"KV_{spec.config.bucket}"
        info = await js.stream_info(stream)
        direct = bool(spec.config.direct)
        if info.config.num_replicas != spec.config.replicas:
            # No service user may update a KV_ stream: replicas are the operator's to change.
            log.warning(
                "bucket %s has %s replicas, the settings say %s: keeping them; run "
                "`python -m services.admin.replicas` (deploy/README.md)",
                spec.config.bucket,
                info.config.num_replicas,
                spec.config.replicas,
            )
        if bool(info.config.allow_direct) != direct:
            info.config.allow_direct = direct
            await js.update_stream(info.config)
            log.info("bucket %s updated", spec.config.bucket, extra={"direct": direct})
            kv = await js.key_value(spec.config.bucket)
        return kv
    kv = await js.create_key_value(config=js_api.KeyValueConfig(**asdict(spec.config)))
    log.info("created bucket %s", spec.config.bucket)
    return kv


async def wait_for_stream(js: JetStreamContext, name: str, stop: asyncio.Event) -> None:
    """Wait until another service has created stream ``name``."""
    delay = 0.05
    logged = False
    while not stop.is_set():
        try:
            await js.stream_info(name)
            return
        except NotFoundError:
            if not logged:
                known = streams.streams().get(name)
                log.info("waiting for stream %s (created by %s)", name, known.owner if known else "?")
                logged = True
        except Exception as exc:  # timeouts while NATS restarts
            log.debug("stream_info %s: %s", name, exc)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass
        delay = min(delay * 1.5, 1.0)


async def wait_for_bucket(js: JetStreamContext, name: str, stop: asyncio.Event) -> KeyValue:
    """Wait until another service has created KV bucket ``name``; return it."""
    await wait_for_stream(js, f"KV_{name}", stop)
    return await js.key_value(name)


def _cluster_forming(exc: Exception) -> bool:
    if isinstance(exc, (NatsTimeoutError, TimeoutError, NoRespondersError, ServiceUnavailableError)):
        return True
    return isinstance(exc, APIError) and exc.err_code in CLUSTER_FORMING_ERRORS


async def while_forming(what: str, step: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T:
    """Run ``step`` (idempotent set-up) until JetStream lets it through, or ``stop`` is set.

    A service that starts with its NATS cluster (compose brings them up together, a node
    restarts) meets "no suitable peers" or a meta leader still being elected. Those answers
    mean "not yet": wait and try again, as `connect` does for the connection. Any other error
    is a real one and is raised.
    """
    delay = 0.1
    warn_at = 0.0
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await step()
        except Exception as exc:
            if not _cluster_forming(exc):
                raise
            if loop.time() >= warn_at:  # again now and then: "not yet" may be "never" (too few nodes)
                log.warning("JetStream not ready for %s (%s); retrying", what, exc or type(exc).__name__)
                warn_at = loop.time() + FORMING_WARN_EVERY_SECONDS
        if await sleep_or_stop(stop, delay):
            raise ConnectionAbortedError(f"stopped before JetStream was ready for {what}")
        delay = min(delay * 2, 2.0)


async def setup_owned(js: JetStreamContext, owner: str, replicas: int) -> dict[str, KeyValue]:
    """Create every stream and bucket ``owner`` owns; return its buckets by name."""
    for spec in streams.streams(replicas).values():
        if spec.owner == owner:
            await ensure_stream(js, spec)
    owned: dict[str, KeyValue] = {}
    for name, bucket in streams.buckets(replicas).items():
        if bucket.owner == owner:
            owned[name] = await ensure_bucket(js, bucket)
    return owned


async def read_bucket(js: JetStreamContext, bucket: str, keys: str = ">") -> AsyncIterator[tuple[str, bytes]]:
    """Every live (key, value) of a bucket matching ``keys``, once, then stop.

    Not ``KeyValue.watch``: its end-of-values marker comes from a consumer-info call racing the
    delivery (nats.py #842), and on a busy machine it arrived before the values: a restarted
    store loaded no tasks. Here the end is the server's own count: as many messages as the
    consumer had delivered plus pending when asked, and the last one with nothing behind it.
    """
    prefix = f"$KV.{bucket}."
    delivered: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_message(message: Msg) -> None:
        delivered.put_nowait(message)

    subscription = await js.subscribe(
        prefix + keys,
        stream=f"KV_{bucket}",
        cb=on_message,
        ordered_consumer=True,
        deliver_policy=js_api.DeliverPolicy.LAST_PER_SUBJECT,
        inactive_threshold=300,
    )
    try:
        info = await subscription.consumer_info()
        at_least = (info.num_pending or 0) + (info.delivered.consumer_seq if info.delivered else 0)
        received = 0
        while received < at_least:
            message = await asyncio.wait_for(delivered.get(), timeout=30)
            received += 1
            if message.data and not _is_delete_marker(message):
                yield message.subject[len(prefix) :], message.data
            if received >= at_least and message.metadata.num_pending:
                at_least = received + message.metadata.num_pending  # written since: read those too
    finally:
        try:
            await subscription.unsubscribe()
        except Exception:  # connection closing
            pass


def _is_delete_marker(message: Msg) -> bool:
    headers = message.headers or {}
    return headers.get(KV_OP) in (KV_DEL, KV_PURGE) or KV_MARKER_REASON in headers


async def close(nc: Client) -> None:
    """Drain (finish what is in flight, then close); a connection already gone just closes."""
    try:
        await nc.drain()
    except Exception:  # already closed or never connected
        await nc.close()
