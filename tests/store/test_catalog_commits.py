"""Catalog commits off the store's event loop: a read never waits for one nor sees one half done,
and what memory knows meanwhile is not lost (a real SQLite file; its writer held mid-commit)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.store.catalog import Catalog
from services.store.state import StoreState
from tests.store.test_catalog import record
from tests.store.test_state import TASK, finished, queued, started, submitted

HOLD_SECONDS = 10


class HeldCommit:
    """Holds the catalog's writer inside its next transaction, right after a row is inserted,
    until ``release`` (a function the writer's own temporary trigger calls; readers never see it)."""

    def __init__(self, catalog: Catalog) -> None:
        self.inside = threading.Event()
        self._go = threading.Event()
        catalog.db.create_function("hold_commit", 0, self._hold)
        catalog.db.execute("CREATE TEMP TRIGGER hold_commit AFTER INSERT ON tasks BEGIN SELECT hold_commit(); END")

    def _hold(self) -> int:
        self.inside.set()
        if not self._go.wait(HOLD_SECONDS):
            raise TimeoutError("the held commit was never released")
        return 0

    def release(self) -> None:
        self._go.set()


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    yield catalog
    catalog.close()


def test_a_read_during_a_commit_answers_at_once_with_what_was_committed_before(catalog: Catalog) -> None:
    first, second = record(), record(status="running")
    catalog.commit([first])
    held = HeldCommit(catalog)
    with ThreadPoolExecutor(2) as pool:
        committing = pool.submit(catalog.commit, [second])
        try:
            assert held.inside.wait(HOLD_SECONDS)
            read = pool.submit(lambda: (catalog.status_of(second.id), len(catalog), catalog.counts("status")))
            assert read.result(timeout=5) == (None, 1, {"pending": 1})
        finally:
            held.release()
        committing.result(timeout=HOLD_SECONDS)
    assert (catalog.status_of(second.id), len(catalog)) == ("running", 2)


async def test_a_flushs_commit_leaves_the_loop_free_and_its_finished_task_in_memory_until_done(
    catalog: Catalog,
) -> None:
    state = StoreState(catalog=catalog)
    state.apply_task_event(submitted(), seq=1)
    for event in (queued(), started(), finished()):
        state.apply_run_event(event)
    writes = state.take_writes()  # KV holds these now; the new task's final row goes in with them
    held = HeldCommit(catalog)

    committing = asyncio.create_task(state.commit_written(writes, {}))
    try:
        assert await asyncio.to_thread(held.inside.wait, HOLD_SECONDS)
        # the loop runs while the row is committed, and lookups answer from memory
        assert catalog.status_of(TASK) is None
        assert TASK in state.tasks and state.is_retained(TASK)
        assert state.get(TASK).status == "succeeded"  # type: ignore[union-attr]
    finally:
        held.release()
    await asyncio.wait_for(committing, HOLD_SECONDS)

    assert catalog.status_of(TASK) == "succeeded"
    assert TASK not in state.tasks and state.is_retained(TASK)  # it left memory with its row committed


async def test_a_task_that_changes_while_a_list_commits_its_row_is_shown_anew_by_the_next(catalog: Catalog) -> None:
    state = StoreState(catalog=catalog)
    state.apply_task_event(submitted(), seq=1)
    held = HeldCommit(catalog)

    syncing = asyncio.create_task(state.sync_catalog())
    try:
        assert await asyncio.to_thread(held.inside.wait, HOLD_SECONDS)
        state.apply_run_event(queued())  # the task moves on while its old row is committed
    finally:
        held.release()
    await asyncio.wait_for(syncing, HOLD_SECONDS)
    now = state.get(TASK).status  # type: ignore[union-attr]
    assert now != "pending" and catalog.status_of(TASK) == "pending"

    await state.sync_catalog()
    assert catalog.status_of(TASK) == now
