"""The store's log query on its own: when a reply may say ``finished`` (pure logic; the logs
bucket is a stand-in that hands out chunks)."""

from __future__ import annotations

from typing import Any

from proto import api, runs
from services.store.queries import Queries
from services.store.state import StoreState
from tests.store.test_state import RUN, TASK, at, finished, fresh, queued, started

LINES = ["GET http://127.0.0.1:1/ (timeout 30 s)\n", "200 OK in 1.0 ms, 2 bytes\n"]


def chunk(seq: int) -> runs.LogChunk:
    return runs.LogChunk(task_id=TASK, run_id=RUN, attempt=1, seq=seq, stream="system", data=LINES[seq - 1], at=at(3))


class LogsBucket:
    """Stands in for the logs bucket; ``during_read`` runs while a read is in flight."""

    def __init__(self) -> None:
        self.stored: list[runs.LogChunk] = []
        self.during_read: Any = None

    async def read_log_chunks(self, task_id: str, run_id: str, attempt: int) -> list[runs.LogChunk]:
        if self.during_read is not None:
            self.during_read, during = None, self.during_read
            during()
        return list(self.stored)


def outcome_applied(state: StoreState, bucket: LogsBucket) -> None:
    """What the store does with an outcome carrying its log: apply it, file the chunks."""
    state.apply_run_event(finished(log_chunks=2, log=[chunk(1), chunk(2)]))
    bucket.stored = [chunk(1), chunk(2)]


async def test_a_log_whose_outcome_is_applied_while_it_is_read_comes_whole_and_finished() -> None:
    state = fresh()
    state.apply_run_event(queued())
    state.apply_run_event(started())
    bucket = LogsBucket()
    queries = Queries(None, state, bucket, None)  # type: ignore[arg-type]

    # the outcome lands between the query's look at the run and its read of the chunks
    bucket.during_read = lambda: outcome_applied(state, bucket)
    reply = await queries.logs(api.GetLogsRequest(id=TASK))

    assert [c.data for c in reply.chunks] == LINES
    assert reply.finished is True


async def test_a_log_read_before_its_outcome_is_not_finished() -> None:
    state = fresh()
    state.apply_run_event(queued())
    state.apply_run_event(started())
    bucket = LogsBucket()
    bucket.stored = [chunk(1)]
    queries = Queries(None, state, bucket, None)  # type: ignore[arg-type]

    reply = await queries.logs(api.GetLogsRequest(id=TASK))

    assert [c.data for c in reply.chunks] == LINES[:1]
    assert reply.finished is False
