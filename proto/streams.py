"""JetStream streams, durable consumers and KV buckets: their definitions and their owners.

Each is created idempotently by the service that owns it; the others wait for it to exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from nats.js import api as js_api

from proto import subjects

DAY = 24 * 3600.0

RUNNER_ACK_WAIT: Final = timedelta(seconds=10)
"""A runner that stops heartbeating (``in_progress``) loses its run after this long."""
STORE_ACK_WAIT: Final = timedelta(seconds=10)
"""An event the store took but could not write back (NATS away) is redelivered after this."""
SCHEDULER_ACK_WAIT: Final = timedelta(seconds=10)
HANDLING_DELIVERIES: Final = 5
"""A message whose handling raised this many times is given up: dead-lettered, its run failed."""
HANDLING_RETRY_DELAY: Final = timedelta(seconds=0.5)
"""First redelivery delay of a message whose handling raised; doubles on each delivery."""
HANDLING_RETRY_DELAY_MAX: Final = timedelta(seconds=8)
NATS_CALL_DEADLINE: Final = timedelta(seconds=10)
"""Longest wait on one NATS call (a publish acknowledgement, a KV write, an ack)."""
LEASE_TTL: Final = timedelta(seconds=10)
"""A scheduler or store leader that stops renewing its lease is replaced after at most this long. Longer
than a JetStream election (4-9 s), so a holder rides out one (services/common/lease.py)."""
WORK_DEDUP_WINDOW: Final = timedelta(minutes=10)
"""Fires published twice (failover, restart) within this window land once. nats-server keeps every
message id of the window in memory (about 150 B each): at 1,000 fires/s an hour held 3.6 M ids.
A failover repeats a fire within the lease TTL plus an ack wait (seconds); a fire repeated later
(a scheduler down for longer) is caught by the runner only on redelivery, so it may run twice."""
EVENTS_DEDUP_WINDOW: Final = timedelta(minutes=2)
"""Run events carry a fresh ``event_id``; only a publisher's own retry (seconds) repeats one."""
CATCH_UP_WINDOW: Final = timedelta(days=1)
"""How long TASKS and EVENTS keep an event after it was published. The store turns them into KV
records at once; the stream only has to cover a consumer that is stopped or lagging. Every unique
subject of a stream costs nats-server memory (about 200 B) as long as its message is kept: with
30 days of TASKS and 7 of EVENTS, history of ~1.6 KB per task stayed in memory for a week."""
MAX_BYTES: Final = {
    subjects.STREAM_TASKS: 1 * 2**30,
    subjects.STREAM_EVENTS: 2 * 2**30,
    subjects.STREAM_LOGS: 1 * 2**30,
    subjects.STREAM_DEAD_LETTERS: 256 * 2**20,
    subjects.STREAM_WORK: 512 * 2**20,
}
"""Disk bound of each stream (bytes). TASKS, EVENTS, LOGS and DEADLETTER drop their oldest when
full (discard ``old``), as max_age does: a byte bound on the catch-up window (TASKS: ~2 M
submissions of 0.46 KB). WORK holds runs not yet done and refuses instead (discard ``new``): the
scheduler sees the error and retries. max_bytes is a reservation: nats-server refuses to create
a stream whose bound does not fit its storage limit (75 % of the free disk unless configured),
so these stay small; the buckets (the truth, ~2.6 KB per finished API task) are not bounded
here: before JetStream is full the store refuses new tasks with a 507 (``storage_limit_bytes``,
``services/store/storage.py``), so a full disk never stalls the writes of accepted ones."""
MAX_PAYLOAD_BYTES: Final = 4 * 1024 * 1024
"""Largest stream message or KV value (a task record with a big spec and result fits)."""
SERVER_MAX_PAYLOAD_BYTES: Final = 8 * 1024 * 1024
"""nats-server's ``max_payload``, as every config here sets it (deploy/nats/*.conf, local mode):
room for a MAX_PAYLOAD_BYTES message plus headers (a test compares them)."""
PUBLISH_RETRY_WINDOW: Final = timedelta(seconds=15)
"""How long a publish carrying a ``Nats-Msg-Id`` is repeated through an election or reconnect;
shorter than every stream's duplicate window, so a repeat can never be stored twice."""
REPLY_PAGE_BYTES: Final = 512 * 1024
"""Pages of lists and logs stop growing past this, whatever their ``limit``."""


@dataclass(frozen=True)
class StreamSpec:
    """A stream and the service that creates it."""

    owner: str
    config: js_api.StreamConfig


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer and the stream it reads."""

    stream: str
    config: js_api.ConsumerConfig


@dataclass(frozen=True)
class BucketSpec:
    """A KV bucket and the service that creates (and solely writes) it."""

    owner: str
    config: js_api.KeyValueConfig


def streams(replicas: int = 1) -> dict[str, StreamSpec]:
    """Every stream, by name."""
    file = js_api.StorageType.FILE
    limits = js_api.RetentionPolicy.LIMITS
    # Changing max_age, max_bytes, discard or the dedup window of an existing stream is a plain
    # update (natsio.ensure_stream); the retention policy can never change, so none does here.
    old, new = js_api.DiscardPolicy.OLD, js_api.DiscardPolicy.NEW
    return {
        subjects.STREAM_TASKS: StreamSpec(
            "store",
            js_api.StreamConfig(
                name=subjects.STREAM_TASKS,
                subjects=[subjects.TASK_EVENTS_ALL],
                retention=limits,
                storage=file,
                num_replicas=replicas,
                max_age=CATCH_UP_WINDOW.total_seconds(),
                duplicate_window=120.0,
                max_msg_size=MAX_PAYLOAD_BYTES,
                max_bytes=MAX_BYTES[subjects.STREAM_TASKS],
                discard=old,
                description="Task lifecycle events",
            ),
        ),
        subjects.STREAM_EVENTS: StreamSpec(
            "store",
            js_api.StreamConfig(
                name=subjects.STREAM_EVENTS,
                subjects=[subjects.RUN_EVENTS_ALL, subjects.SCHEDULE_EVENTS_ALL],
                retention=limits,
                storage=file,
                num_replicas=replicas,
                max_age=CATCH_UP_WINDOW.total_seconds(),
                duplicate_window=EVENTS_DEDUP_WINDOW.total_seconds(),
                max_msg_size=MAX_PAYLOAD_BYTES,
                allow_direct=True,
                max_bytes=MAX_BYTES[subjects.STREAM_EVENTS],
                discard=old,
                description="Run and schedule events",
            ),
        ),
        subjects.STREAM_LOGS: StreamSpec(
            "store",
            js_api.StreamConfig(
                name=subjects.STREAM_LOGS,
                subjects=[subjects.LOGS_ALL],
                retention=limits,
                storage=file,
                num_replicas=replicas,
                max_age=1 * DAY,
                max_msg_size=MAX_PAYLOAD_BYTES,
                max_bytes=MAX_BYTES[subjects.STREAM_LOGS],
                discard=old,
                description="Run output on its way to the logs bucket",
            ),
        ),
        subjects.STREAM_DEAD_LETTERS: StreamSpec(
            "store",
            js_api.StreamConfig(
                name=subjects.STREAM_DEAD_LETTERS,
                subjects=[subjects.DEAD_LETTERS_ALL],
                retention=limits,
                storage=file,
                num_replicas=replicas,
                max_age=30 * DAY,
                max_msg_size=MAX_PAYLOAD_BYTES,
                max_bytes=MAX_BYTES[subjects.STREAM_DEAD_LETTERS],
                discard=old,
                description="Runs given up after too many deliveries",
            ),
        ),
        subjects.STREAM_WORK: StreamSpec(
            "scheduler",
            js_api.StreamConfig(
                name=subjects.STREAM_WORK,
                subjects=[subjects.WORK_ALL],
                retention=js_api.RetentionPolicy.WORK_QUEUE,
                storage=file,
                num_replicas=replicas,
                duplicate_window=WORK_DEDUP_WINDOW.total_seconds(),
                max_msg_size=MAX_PAYLOAD_BYTES,
                max_bytes=MAX_BYTES[subjects.STREAM_WORK],
                discard=new,
                description="Due runs, pulled by runners",
            ),
        ),
    }


def _durable(
    name: str, *, ack_wait: timedelta, filter_subject: str | None = None, max_ack_pending: int = 20_000
) -> js_api.ConsumerConfig:
    # Explicit acknowledgement everywhere, the store's consumers included. AckAll (one ack per
    # batch) is unsafe for them: messages delivered to a store that was killed, or lost in a
    # reconnect, are redelivered only after the ack wait, and the next batch's single ack would
    # cover them before they were ever written.
    return js_api.ConsumerConfig(
        durable_name=name,
        filter_subject=filter_subject,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=ack_wait.total_seconds(),
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
        max_waiting=1024,
    )


CONSUMERS: Final[dict[str, ConsumerSpec]] = {
    subjects.CONSUMER_STORE_TASKS: ConsumerSpec(
        subjects.STREAM_TASKS, _durable(subjects.CONSUMER_STORE_TASKS, ack_wait=STORE_ACK_WAIT)
    ),
    subjects.CONSUMER_STORE_EVENTS: ConsumerSpec(
        subjects.STREAM_EVENTS, _durable(subjects.CONSUMER_STORE_EVENTS, ack_wait=STORE_ACK_WAIT)
    ),
    subjects.CONSUMER_STORE_LOGS: ConsumerSpec(
        subjects.STREAM_LOGS, _durable(subjects.CONSUMER_STORE_LOGS, ack_wait=STORE_ACK_WAIT)
    ),
    subjects.CONSUMER_SCHEDULER_TASKS: ConsumerSpec(
        subjects.STREAM_TASKS, _durable(subjects.CONSUMER_SCHEDULER_TASKS, ack_wait=SCHEDULER_ACK_WAIT)
    ),
    subjects.CONSUMER_SCHEDULER_RUNS: ConsumerSpec(
        subjects.STREAM_EVENTS,
        _durable(
            subjects.CONSUMER_SCHEDULER_RUNS, ack_wait=SCHEDULER_ACK_WAIT, filter_subject=subjects.RUN_FINISHED_ALL
        ),
    ),
    subjects.CONSUMER_RUNNER_CODE: ConsumerSpec(
        subjects.STREAM_WORK,
        _durable(subjects.CONSUMER_RUNNER_CODE, ack_wait=RUNNER_ACK_WAIT, filter_subject=subjects.WORK_CODE),
    ),
    subjects.CONSUMER_RUNNER_API: ConsumerSpec(
        subjects.STREAM_WORK,
        _durable(subjects.CONSUMER_RUNNER_API, ack_wait=RUNNER_ACK_WAIT, filter_subject=subjects.WORK_API),
    ),
}
"""Every durable consumer, by name."""


def buckets(replicas: int = 1) -> dict[str, BucketSpec]:
    """Every KV bucket, by name."""
    file = js_api.StorageType.FILE
    return {
        subjects.BUCKET_TASKS: BucketSpec(
            "store",
            js_api.KeyValueConfig(
                bucket=subjects.BUCKET_TASKS,
                history=1,
                storage=file,
                replicas=replicas,
                max_value_size=MAX_PAYLOAD_BYTES,
                direct=True,
                description="Task records",
            ),
        ),
        subjects.BUCKET_RUNS: BucketSpec(
            "store",
            js_api.KeyValueConfig(
                bucket=subjects.BUCKET_RUNS,
                history=1,
                storage=file,
                replicas=replicas,
                max_value_size=MAX_PAYLOAD_BYTES,
                direct=True,
                description="Run records",
            ),
        ),
        subjects.BUCKET_LOGS: BucketSpec(
            "store",
            js_api.KeyValueConfig(
                bucket=subjects.BUCKET_LOGS,
                history=1,
                storage=file,
                replicas=replicas,
                max_value_size=MAX_PAYLOAD_BYTES,
                direct=True,
                description="Run output, chunked",
            ),
        ),
        subjects.BUCKET_SECRETS: BucketSpec(
            "store",
            js_api.KeyValueConfig(
                bucket=subjects.BUCKET_SECRETS,
                history=1,  # a replaced or deleted value is not kept
                storage=file,
                replicas=replicas,
                max_value_size=64 * 1024,
                direct=True,
                description="Sealed secret values",
            ),
        ),
        subjects.BUCKET_SCHEDULES: BucketSpec(
            "scheduler",
            js_api.KeyValueConfig(
                bucket=subjects.BUCKET_SCHEDULES,
                history=1,
                storage=file,
                replicas=replicas,
                max_value_size=MAX_PAYLOAD_BYTES,
                direct=True,
                description="Durable timers",
            ),
        ),
        subjects.BUCKET_LEASES: BucketSpec(
            "scheduler",
            js_api.KeyValueConfig(
                bucket=subjects.BUCKET_LEASES,
                history=1,
                storage=file,
                replicas=replicas,
                ttl=LEASE_TTL.total_seconds(),
                direct=True,
                description="Leader leases",
            ),
        ),
        subjects.BUCKET_STORE_LEASE: BucketSpec(
            "store",
            js_api.KeyValueConfig(
                bucket=subjects.BUCKET_STORE_LEASE,
                history=1,
                storage=file,
                replicas=replicas,
                ttl=LEASE_TTL.total_seconds(),
                direct=True,
                description="The store leader's lease",
            ),
        ),
    }
