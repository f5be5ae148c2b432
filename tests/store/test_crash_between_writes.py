"""A store killed between its writes starts again from what KV holds.

The catalog says which tasks a start loads (the ones not final) and the saved run counts say what
was already counted; neither may run ahead of the records in KV, or a task KV holds running is
never loaded and its replayed outcome is dropped as stale (stuck "running" for good), or a
replayed outcome is counted twice. Real JetStream buckets and a catalog file; "killed" means the
state is dropped without another flush, and the events it had not acknowledged are applied again.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from proto import codec, runs, subjects
from proto.records import TaskRecord
from services.common import natsio
from services.store.catalog import Catalog
from services.store.persistence import Persistence
from services.store.state import StoreState
from tests.store.test_state import TASK, deleted, finished, queued, started, submitted

OTHER = "0195f3a2-7c41-7d3e-9a10-4b2c8e6f1a99"


def _run(task_id: str) -> str:
    return runs.run_id_for(task_id, runs.ONCE_SLOT)


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """The catalog file the store and its successor share."""
    return tmp_path / "catalog.sqlite3"


async def _store(js: JetStreamContext, catalog: Path) -> tuple[StoreState, Persistence]:
    buckets = await natsio.setup_owned(js, "store", 1)
    return StoreState(catalog=Catalog.open_or_reset(catalog)), Persistence(js, buckets)


async def _restarted(js: JetStreamContext, killed: StoreState, catalog: Path) -> tuple[StoreState, Persistence]:
    killed.catalog.close()
    state, persistence = await _store(js, catalog)
    await persistence.load(state)
    return state, persistence


async def _in_kv(js: JetStreamContext, task_id: str) -> str:
    entry = await (await js.key_value(subjects.BUCKET_TASKS)).get(task_id)
    assert entry.value
    return codec.decode(TaskRecord, entry.value).status


async def _succeeded_once(js: JetStreamContext, state: StoreState) -> None:
    """KV, the catalog and the run counts all hold the one outcome, once."""
    assert await _in_kv(js, TASK) == "succeeded"
    assert state.runs_by_status() == {"succeeded": 1}
    assert state.catalog.counts("status") == {"succeeded": 1}


def _running(state: StoreState, task_id: str = TASK) -> None:
    state.apply_task_event(submitted(task_id), seq=1 if task_id == TASK else 2)
    state.apply_run_event(queued(task_id=task_id, run_id=_run(task_id)))
    state.apply_run_event(started(task_id=task_id, run_id=_run(task_id)))


async def test_an_outcome_applied_while_its_flush_was_writing_is_loaded_and_counted_once_after_a_kill(
    js: JetStreamContext, catalog: Path
) -> None:
    state, persistence = await _store(js, catalog)
    _running(state)
    flushing = asyncio.create_task(persistence.flush(state))
    await asyncio.sleep(0)
    assert not state.dirty_tasks, "the flush has taken the running task"
    outcome = finished(run_id=_run(TASK))
    state.apply_run_event(outcome)  # applied while the flush waits for KV: KV gets it next flush
    await flushing
    assert await _in_kv(js, TASK) == "running"

    # Killed before the next flush: the outcome was never acknowledged, so it comes again.
    again, persistence = await _restarted(js, state, catalog)
    assert again.tasks[TASK].status == "running", "KV holds it running: it is loaded as in progress"
    again.apply_run_event(outcome)
    await persistence.flush(again)

    await _succeeded_once(js, again)


async def test_what_a_list_showed_before_kv_had_it_is_taken_back_to_what_kv_holds_after_a_kill(
    js: JetStreamContext, catalog: Path
) -> None:
    state, persistence = await _store(js, catalog)
    _running(state)
    _running(state, OTHER)
    await persistence.flush(state)
    outcome, deletion = finished(run_id=_run(TASK)), deleted(task_id=OTHER)
    state.apply_run_event(outcome)
    state.apply_task_event(deletion, seq=3)
    await state.sync_catalog()  # a list right after the answers shows them at once
    assert state.catalog.status_of(TASK) == "succeeded"
    assert state.catalog.status_of(OTHER) is None

    again, persistence = await _restarted(js, state, catalog)
    assert again.catalog.status_of(TASK) == "running" and TASK in again.tasks
    assert again.catalog.status_of(OTHER) == "running" and OTHER in again.tasks
    again.apply_run_event(outcome)
    again.apply_task_event(deletion, seq=3)
    await persistence.flush(again)

    await _succeeded_once(js, again)
    assert not await persistence.get_task(OTHER)


async def test_a_task_listed_but_never_written_leaves_the_catalog_without_a_rebuild(
    js: JetStreamContext, catalog: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state, persistence = await _store(js, catalog)
    _running(state)
    await persistence.flush(state)
    state.apply_task_event(submitted(OTHER), seq=2)
    await state.sync_catalog()
    assert len(state.catalog) == 2

    with caplog.at_level(logging.INFO, logger="services.store.persistence"):
        again, _ = await _restarted(js, state, catalog)

    assert again.catalog.status_of(OTHER) is None, "KV never had it; its submission is replayed"
    assert set(again.tasks) == {TASK}
    assert "catalog rebuilt" not in caplog.text
    assert "rebuilding" not in caplog.text
