"""A bucket that does not answer is not an empty bucket.

A new leader loads the tasks in progress from KV right after an election, when reads can time out.
A task whose record could not be read was taken as absent: the catalog forgot it, its outcome
was then dropped as the event of an unknown task, and it showed ``running`` for good. A run or
ledger not read was written back later without its history. Reads now fail loudly (the load
fails and is retried), and only a key that is really not there reads as absent.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from nats.aio.client import Client
from nats.js.kv import KeyValue

from proto import events, subjects
from proto.runs import ONCE_SLOT, run_id_for
from proto.tasks import TaskSpec
from services.common import natsio
from services.common.clock import utcnow
from services.store.persistence import Persistence
from services.store.state import StoreState
from services.store.writes import ledger_key
from taskmesh.processes import NatsServer

SPEC = TaskSpec(name="kept", task_type="immediate", api_url="http://127.0.0.1:9/")
READ_TIMEOUT_SECONDS = 0.5


@contextmanager
def paused(server: NatsServer) -> Iterator[None]:
    """The server stops answering (SIGSTOP), as a stream without a leader does during an election."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


async def _one_task(nc: Client) -> tuple[Persistence, StoreState, dict[str, KeyValue]]:
    """A store's persistence (reads time out after 0.5 s) and a state holding task ``t-1``, not yet written."""
    js = nc.jetstream(timeout=READ_TIMEOUT_SECONDS)
    buckets = await natsio.setup_owned(js, "store", 1)
    state = StoreState()
    state.apply_task_event(events.TaskSubmitted(event_id="e-1", occurred_at=utcnow(), task_id="t-1", spec=SPEC), 1)
    return Persistence(js, buckets), state, buckets


async def test_reads_that_get_no_answer_raise_and_keys_that_are_not_there_read_as_absent(
    nats_server: NatsServer, nc: Client
) -> None:
    persistence, state, _ = await _one_task(nc)
    await persistence.flush(state)

    assert await persistence.get_task("never-submitted") is None
    assert await persistence.get_runs(state, "t-1", loading=True) == []  # no run queued yet
    assert await persistence.get_ledger("t-1") == []
    with paused(nats_server):
        with pytest.raises(TimeoutError):
            await persistence.get_task("t-1")
        with pytest.raises(TimeoutError):
            await persistence.get_runs(state, "t-1", loading=True)
        with pytest.raises(TimeoutError):
            await persistence.get_ledger("t-1")
    found = await persistence.get_task("t-1")
    assert found is not None and found.status == "pending"


async def test_a_run_record_or_ledger_that_does_not_decode_is_skipped_not_raised(nc: Client) -> None:
    # Raising here would fail every load: one damaged record must not keep the store from leading.
    persistence, state, buckets = await _one_task(nc)
    runs_bucket = buckets[subjects.BUCKET_RUNS]
    await runs_bucket.put(subjects.run_key("t-1", run_id_for("t-1", ONCE_SLOT)), b"{not a run")
    await runs_bucket.put(ledger_key("t-1"), b"[{not a ledger")

    assert await persistence.get_runs(state, "t-1", loading=True) == []
    assert await persistence.get_ledger("t-1") == []
