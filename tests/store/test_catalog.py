"""The catalog on its own: what lists and counts see, how it pages, and when it must be rebuilt."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from proto.records import TaskRecord
from proto.tasks import TaskSpec
from services.common.ids import new_task_id
from services.store.catalog import Catalog, CatalogUnusable, ListFilter

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = TaskSpec(name="x", task_type="immediate", api_url="http://127.0.0.1:1/")


def record(
    name: str = "job",
    status: str = "pending",
    kind: str = "api",
    task_type: str = "immediate",
    finished: datetime | None = None,
    key: str | None = None,
) -> TaskRecord:
    return TaskRecord(
        id=new_task_id(),
        name=name,
        kind=kind,
        task_type=task_type,
        status=status,  # type: ignore[arg-type]
        spec=SPEC,
        created_at=datetime.now(UTC),
        updated_at=T0,
        finished_at=finished,
        idempotency_key=key,
    )


def all_pages(catalog: Catalog, where: ListFilter, limit: int) -> list[str]:
    found, cursor = [], None
    while True:
        ids, cursor = catalog.page(where, cursor, limit)
        found += ids
        if cursor is None:
            return found


def test_lists_are_newest_first_and_pages_cover_every_task_once() -> None:
    catalog = Catalog(":memory:")
    tasks = [record() for _ in range(25)]
    catalog.commit(tasks)

    assert all_pages(catalog, ListFilter(), limit=7) == [t.id for t in reversed(tasks)]


def test_a_page_cursor_is_stable_while_newer_tasks_are_added() -> None:
    catalog = Catalog(":memory:")
    older = [record() for _ in range(10)]
    catalog.commit(older)
    first, cursor = catalog.page(ListFilter(), None, 4)

    catalog.commit([record() for _ in range(5)])  # newer tasks arrive between two pages
    second, _ = catalog.page(ListFilter(), cursor, 4)

    assert first + second == [t.id for t in reversed(older)][:8]


def test_filters_by_status_kind_trigger_and_name_prefix_combine() -> None:
    catalog = Catalog(":memory:")
    wanted = record(name="report-daily", status="failed", kind="code")
    catalog.commit(
        [
            wanted,
            record(name="report-daily", status="succeeded", kind="code"),
            record(name="reports", status="failed", kind="api"),
            record(name="other", status="failed", kind="code"),
        ]
    )

    where = ListFilter(status="failed", kind="code", task_type="immediate", name_prefix="report-")
    assert all_pages(catalog, where, 10) == [wanted.id]
    assert len(all_pages(catalog, ListFilter(name_prefix="report"), 10)) == 3


@pytest.mark.parametrize("common", [True, False], ids=["a common prefix", "a rare prefix"])
def test_a_name_prefix_lists_the_same_tasks_whether_it_is_common_or_rare(
    common: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.store.catalog as module

    monkeypatch.setattr(module, "DENSE_MATCHES", 0 if common else 10_000)
    catalog = Catalog(":memory:")
    tasks = [record(name=f"batch-{i % 3}") for i in range(30)]
    catalog.commit(tasks)

    assert all_pages(catalog, ListFilter(name_prefix="batch-1"), 4) == [
        t.id for t in reversed(tasks) if t.name == "batch-1"
    ]


def test_a_prefix_ending_in_the_last_character_before_surrogates_still_bounds_the_range() -> None:
    catalog = Catalog(":memory:")
    task = record(name="x\ud7ff-1")
    catalog.commit([task, record(name="y")])

    assert all_pages(catalog, ListFilter(name_prefix="x\ud7ff"), 10) == [task.id]


def test_created_after_and_before_bound_by_creation_time() -> None:
    catalog = Catalog(":memory:")
    tasks = [record() for _ in range(3)]
    catalog.commit(tasks)
    middle = tasks[1].created_at

    assert all_pages(catalog, ListFilter(created_after=middle), 10) == [tasks[2].id, tasks[1].id]
    assert all_pages(catalog, ListFilter(created_before=middle), 10) == [tasks[0].id]


def test_counts_follow_inserts_status_changes_and_deletes() -> None:
    catalog = Catalog(":memory:")
    a, b = record(), record(kind="code")
    catalog.commit([a, b])
    a.status = "succeeded"  # type: ignore[assignment]
    catalog.commit([a])
    catalog.commit([a])  # written again unchanged: counted once

    assert catalog.counts("status") == {"pending": 1, "succeeded": 1}
    assert catalog.counts("kind") == {"api": 1, "code": 1}

    catalog.commit([], removed=[b.id])
    assert catalog.counts("status") == {"succeeded": 1} and len(catalog) == 1
    assert catalog.deleted_count() == 1


def test_only_finished_one_shot_tasks_expire_oldest_first() -> None:
    catalog = Catalog(":memory:")
    old = record(status="succeeded", finished=T0)
    new = record(status="failed", finished=T0 + timedelta(days=2))
    schedule = record(status="completed", task_type="scheduled", finished=T0)
    catalog.commit([new, old, schedule, record()])

    assert catalog.finished_before(T0 + timedelta(days=3), 10) == [old.id, new.id]
    assert catalog.finished_before(T0 + timedelta(days=1), 10) == [old.id]


def test_work_in_progress_and_idempotency_keys_are_found_without_a_scan() -> None:
    catalog = Catalog(":memory:")
    running, done = record(status="running", key="k-1"), record(status="succeeded")
    catalog.commit([running, done])

    assert catalog.active_ids() == [running.id]
    assert catalog.task_for_key("k-1") == running.id and catalog.task_for_key("k-2") is None
    plan = " ".join(str(row) for row in catalog.db.execute("EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE final = 0"))
    assert "USING INDEX tasks_active" in plan, plan  # a partial index of work in progress, not the table


def test_a_catalog_of_another_schema_version_is_refused_then_made_anew(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite3"
    Catalog(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 999")

    with pytest.raises(CatalogUnusable):
        Catalog(path)
    fresh = Catalog.open_or_reset(path)
    assert fresh.created and len(fresh) == 0


def test_a_corrupt_catalog_file_is_made_anew(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite3"
    path.write_bytes(b"this is not a database" * 100)

    fresh = Catalog.open_or_reset(path)
    fresh.commit([record()])
    assert fresh.created and len(fresh) == 1


def test_a_damaged_page_is_found_by_the_check_and_the_next_open_makes_the_catalog_anew(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite3"
    catalog = Catalog(path)
    catalog.commit([record(name=f"job-{n}") for n in range(3000)])
    assert catalog.check() is None
    catalog.close()
    with path.open("r+b") as raw:  # a disk fault in the middle of the file, the header intact
        raw.seek(raw.seek(0, 2) // 2 // 4096 * 4096)
        raw.write(b"\xa5" * 4096)

    damaged = Catalog(path)  # opening reads no table page: a start does not pay for the whole file
    problem = damaged.check()
    assert problem is not None
    damaged.mark_damaged(problem)
    damaged.close()

    fresh = Catalog.open_or_reset(path)
    assert fresh.created and len(fresh) == 0  # rebuilt from KV by the store
    assert Catalog.open_or_reset(path).created is False  # the mark is gone with the old file


def test_commits_leave_the_wal_to_checkpoint_which_copies_all_of_it_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    catalog = Catalog(path)
    written = []
    for _ in range(300):  # far past the 1,000 pages after which SQLite would checkpoint in a commit
        batch = [record() for _ in range(20)]
        catalog.commit(batch)
        written += batch
    wal_pages = (path.parent / "catalog.db-wal").stat().st_size // 4096
    assert wal_pages > 1000  # no commit checkpointed (each would have started the WAL over)

    frames, copied = catalog.checkpoint()
    assert frames > 1000 and copied == frames
    catalog.commit([record(name="after")])
    assert catalog.checkpoint()[0] < 100  # the WAL started over after the full copy
    catalog.close()

    reopened = Catalog(path)
    try:
        assert len(reopened) == len(written) + 1
    finally:
        reopened.close()


def test_a_checkpoint_after_close_does_nothing_and_close_is_safe_twice(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    catalog.commit([record()])
    assert catalog.checkpoint()[0] > 0
    catalog.close()
    assert catalog.checkpoint() == (0, 0)
    catalog.close()
