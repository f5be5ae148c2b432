"""The task index: newest first, filtered by status, with a cursor that concurrent inserts never shift."""

from __future__ import annotations

from datetime import datetime, timezone

from proto.records import TaskRecord
from proto.tasks import TaskSpec
from services.store.index import TaskIndex

SPEC = TaskSpec(name="ping", task_type="immediate", api_url="https://example.com/")
AT = datetime(2026, 1, 1, tzinfo=timezone.utc)


def task_id(n: int) -> str:
    """The n-th task id: ids sort by creation time, as UUIDv7 task ids do."""
    return f"0195f3a2-{n:04x}-7000-8000-000000000000"


def record(n: int, status: str = "pending") -> TaskRecord:
    return TaskRecord(id=task_id(n), name=f"task {n}", kind="api", task_type="immediate", status=status,  # type: ignore[arg-type]
                      spec=SPEC, created_at=AT, updated_at=AT)


def index_of(*numbers: int, status: str = "pending") -> TaskIndex:
    index = TaskIndex()
    for n in numbers:
        index.add(record(n, status))
    return index


def everything(task: str) -> bool:
    return True


def all_pages(index: TaskIndex, limit: int, status: str | None = None) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page, cursor = index.page(status=status, before=cursor, limit=limit, keep=everything)
        pages.append(page)
        if cursor is None:
            return pages


def test_a_page_lists_the_newest_tasks_first() -> None:
    index = index_of(1, 2, 3, 4, 5)

    page, cursor = index.page(status=None, before=None, limit=3, keep=everything)

    assert page == [task_id(5), task_id(4), task_id(3)]
    assert cursor == task_id(3)


def test_paging_to_the_end_visits_every_task_once() -> None:
    index = index_of(*range(1, 11))

    pages = all_pages(index, limit=4)

    assert pages == [[task_id(n) for n in (10, 9, 8, 7)], [task_id(n) for n in (6, 5, 4, 3)],
                     [task_id(2), task_id(1)]]


def test_a_last_page_that_is_exactly_full_has_no_next_cursor() -> None:
    index = index_of(*range(1, 7))

    pages = all_pages(index, limit=3)

    assert pages == [[task_id(n) for n in (6, 5, 4)], [task_id(n) for n in (3, 2, 1)]]


def test_an_empty_index_gives_one_empty_page() -> None:
    assert TaskIndex().page(status=None, before=None, limit=10, keep=everything) == ([], None)


def test_tasks_created_while_paging_do_not_shift_the_next_page() -> None:
    index = index_of(*range(1, 8))
    first, cursor = index.page(status=None, before=None, limit=3, keep=everything)

    # When new tasks arrive between two page requests
    index.add(record(8))
    index.add(record(9))
    second, cursor = index.page(status=None, before=cursor, limit=3, keep=everything)
    third, cursor = index.page(status=None, before=cursor, limit=3, keep=everything)

    # Then the walk continues where it was: nothing repeated, nothing skipped
    assert first + second + third == [task_id(n) for n in range(7, 0, -1)]
    assert cursor is None


def test_a_task_deleted_while_paging_does_not_shift_the_next_page() -> None:
    index = index_of(*range(1, 8))
    first, cursor = index.page(status=None, before=None, limit=3, keep=everything)

    index.remove(record(5))
    index.remove(record(7))
    second, _ = index.page(status=None, before=cursor, limit=3, keep=everything)

    assert first == [task_id(7), task_id(6), task_id(5)]
    assert second == [task_id(4), task_id(3), task_id(2)]


def test_a_task_added_out_of_order_is_filed_by_its_id() -> None:
    index = index_of(1, 3, 5)

    index.add(record(4))
    index.add(record(2))
    index.add(record(4))  # added again (reloaded): still once

    assert list(index.walk(status=None, before=None)) == [task_id(n) for n in (5, 4, 3, 2, 1)]


def test_a_page_of_one_status_lists_only_tasks_in_it() -> None:
    index = index_of(1, 2, 3, 4, 5, 6)
    for n in (2, 4, 5):
        index.move(task_id(n), "pending", "succeeded")

    assert all_pages(index, limit=2, status="succeeded") == [[task_id(5), task_id(4)], [task_id(2)]]
    assert all_pages(index, limit=10, status="pending") == [[task_id(6), task_id(3), task_id(1)]]
    assert index.page(status="failed", before=None, limit=10, keep=everything) == ([], None)


def test_filtered_pages_skip_what_keep_rejects_and_still_fill_up() -> None:
    index = index_of(*range(1, 11))

    def odd(task: str) -> bool:
        return int(task.split("-")[1], 16) % 2 == 1

    page, cursor = index.page(status=None, before=None, limit=3, keep=odd)
    rest, end = index.page(status=None, before=cursor, limit=3, keep=odd)

    assert page == [task_id(9), task_id(7), task_id(5)]
    assert rest == [task_id(3), task_id(1)] and end is None


def test_moving_and_removing_keep_the_status_counts_right() -> None:
    index = index_of(1, 2, 3)
    index.move(task_id(1), "pending", "running")
    index.move(task_id(1), "running", "succeeded")
    index.move(task_id(2), "pending", "pending")
    index.remove(record(3))

    assert index.counts_by_status() == {"pending": 1, "succeeded": 1}
    assert len(index) == 2
    assert index.kinds["api"] == 2 and index.triggers["immediate"] == 2
