"""The timer heap: earliest first, a re-put supersedes, a discarded key never comes back."""

from __future__ import annotations

from services.scheduler.heap import TimerHeap


def heap_of(**due: float) -> TimerHeap:
    heap = TimerHeap()
    for key, at in due.items():
        heap.put(key, at)
    return heap


def test_an_empty_heap_has_nothing_due() -> None:
    heap = TimerHeap()

    assert len(heap) == 0
    assert heap.next_due() is None
    assert heap.pop_due(now=1e12) == []


def test_keys_come_out_earliest_first_whatever_the_order_they_went_in() -> None:
    heap = heap_of(c=30.0, a=10.0, d=40.0, b=20.0)

    assert heap.next_due() == 10.0
    assert heap.pop_due(now=100.0) == ["a", "b", "c", "d"]
    assert len(heap) == 0


def test_only_keys_due_at_or_before_now_are_popped() -> None:
    heap = heap_of(a=10.0, b=20.0, c=30.0)

    assert heap.pop_due(now=20.0) == ["a", "b"]
    assert heap.next_due() == 30.0
    assert len(heap) == 1


def test_keys_due_at_the_same_time_keep_their_insertion_order() -> None:
    heap = heap_of(z=5.0, y=5.0, x=5.0)

    assert heap.pop_due(now=5.0) == ["z", "y", "x"]


def test_put_says_whether_the_key_is_now_the_earliest() -> None:
    heap = TimerHeap()

    assert heap.put("a", 20.0) is True
    assert heap.put("b", 30.0) is False
    assert heap.put("c", 10.0) is True


def test_put_reports_the_earliest_even_when_a_discarded_timer_was_earlier() -> None:
    # Given a discarded timer at 10 still lying at the top of the heap, and a live one at 30
    heap = heap_of(a=10.0, c=30.0)
    heap.discard("a")

    # When a timer at 20 is added, it is the earliest live one: the fire loop must be woken
    assert heap.put("b", 20.0) is True


def test_putting_a_key_again_supersedes_its_earlier_due_time() -> None:
    heap = heap_of(a=10.0, b=20.0)

    heap.put("a", 50.0)

    assert len(heap) == 2
    assert heap.next_due() == 20.0
    assert heap.pop_due(now=30.0) == ["b"]
    assert heap.pop_due(now=60.0) == ["a"]


def test_putting_a_key_again_earlier_moves_it_forward_and_it_pops_once() -> None:
    heap = heap_of(a=50.0, b=20.0)

    assert heap.put("a", 10.0) is True

    assert heap.pop_due(now=100.0) == ["a", "b"]
    assert heap.pop_due(now=100.0) == []


def test_re_putting_the_same_due_time_still_pops_once() -> None:
    heap = heap_of(a=10.0)
    heap.put("a", 10.0)

    assert heap.pop_due(now=10.0) == ["a"]
    assert heap.pop_due(now=10.0) == []


def test_a_discarded_key_is_never_popped() -> None:
    heap = heap_of(a=10.0, b=20.0)

    heap.discard("a")

    assert len(heap) == 1
    assert heap.next_due() == 20.0
    assert heap.pop_due(now=100.0) == ["b"]


def test_discarding_an_unknown_key_is_harmless() -> None:
    heap = heap_of(a=10.0)

    heap.discard("nope")

    assert heap.pop_due(now=10.0) == ["a"]


def test_a_key_put_again_after_discard_is_due_at_its_new_time() -> None:
    heap = heap_of(a=10.0)
    heap.discard("a")
    heap.put("a", 30.0)

    assert heap.pop_due(now=20.0) == []
    assert heap.pop_due(now=30.0) == ["a"]


def test_pop_due_returns_at_most_limit_keys_and_leaves_the_rest() -> None:
    heap = heap_of(**{f"k{i}": float(i) for i in range(10)})

    assert heap.pop_due(now=100.0, limit=3) == ["k0", "k1", "k2"]
    assert len(heap) == 7
    assert heap.next_due() == 3.0
    assert heap.pop_due(now=100.0, limit=100) == [f"k{i}" for i in range(3, 10)]


def test_stale_entries_do_not_count_against_the_limit() -> None:
    heap = heap_of(a=1.0, b=2.0, c=3.0)
    heap.put("a", 10.0)  # leaves a stale (1.0, a) entry at the top
    heap.discard("b")  # and a stale (2.0, b) entry

    assert heap.pop_due(now=100.0, limit=2) == ["c", "a"]


def test_many_updates_keep_one_live_timer_per_key() -> None:
    heap = TimerHeap()
    for round_ in range(100):
        for key in ("a", "b", "c"):
            heap.put(key, float(round_ * 3 + ord(key)))

    assert len(heap) == 3
    assert heap.pop_due(now=1e9) == ["a", "b", "c"]
