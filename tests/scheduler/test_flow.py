"""Admission in memory: who goes, who waits, in which order (no NATS: the state is pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from proto.flow import KeyLimit, WaitingRun
from proto.tasks import TaskSpec
from services.scheduler.flow import FlowState

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def run(n: int, *, since: float = 0.0, task: str | None = None, **flow: Any) -> WaitingRun:
    spec = TaskSpec(name=f"r{n}", task_type="immediate", api_url="http://x", **flow)
    return WaitingRun(
        task_id=task or f"t{n}",
        run_id=f"r{n}",
        spec=spec,
        slot="once",
        scheduled_for=T0,
        since=T0 + timedelta(seconds=since),
    )


def drain(state: FlowState, now: float = 0.0, waited: float = 0.0) -> list[str]:
    admitted, _ = state.admit_waiting(now, wall=T0.timestamp() + waited)
    return [r.run_id for r in admitted]


def test_runs_beyond_max_concurrency_wait_and_start_in_submission_order_as_permits_free() -> None:
    state = FlowState()
    reasons = [state.offer(run(i, since=i, concurrency_key="k", max_concurrency=2), 0.0) for i in range(5)]
    assert reasons == [None, None, "concurrency:k", "concurrency:k", "concurrency:k"]
    assert drain(state) == []
    assert state.release("r0", attempt=1) is not None
    assert drain(state) == ["r2"]
    state.release("r1", attempt=1)
    state.release("r2", attempt=1)
    assert drain(state) == ["r3", "r4"]
    assert (state.keys["k"].view().running, state.keys["k"].view().waiting) == (2, 0)


def test_an_older_attempts_outcome_frees_no_permit_and_a_redelivered_ones_does() -> None:
    state = FlowState()
    retry = run(1, concurrency_key="k", max_concurrency=1)
    retry.attempt = 3
    state.offer(retry, 0.0)
    assert state.release("r1", attempt=2) is None
    assert state.release("r1", attempt=4) is not None


def test_a_new_run_never_overtakes_one_already_waiting_on_its_key() -> None:
    state = FlowState()
    state.offer(run(0, concurrency_key="k", max_concurrency=1), 0.0)
    state.offer(run(1, since=1, concurrency_key="k", max_concurrency=1), 0.0)
    state.release("r0", attempt=1)
    assert state.offer(run(2, since=2, concurrency_key="k", max_concurrency=1), 0.0) == "concurrency:k"
    assert drain(state) == ["r1"]


def test_higher_priority_goes_first_but_an_aged_low_priority_run_is_not_starved() -> None:
    state = FlowState()
    state.offer(run(0, concurrency_key="k", max_concurrency=1), 0.0)
    state.offer(run(1, since=1, concurrency_key="k", max_concurrency=1, priority=1), 0.0)
    state.offer(run(2, since=2, concurrency_key="k", max_concurrency=1, priority=5), 0.0)
    state.offer(run(3, since=1000, concurrency_key="k", max_concurrency=1, priority=5), 0.0)
    order = []
    for holder in ("r0", "r2", "r1"):
        state.release(holder, attempt=1)
        order += drain(state)
    assert order == ["r2", "r1", "r3"]  # r1 waited longer than r3's two levels of priority are worth


def test_waiting_runs_are_served_round_robin_by_fairness_key() -> None:
    state = FlowState()
    state.offer(run(0, concurrency_key="k", max_concurrency=1), 0.0)
    for i in range(1, 6):
        state.offer(run(i, since=i, concurrency_key="k", max_concurrency=1, fairness_key="a"), 0.0)
    state.offer(run(9, since=9, concurrency_key="k", max_concurrency=1, fairness_key="b"), 0.0)
    order = []
    for holder in ("r0", "r1", "r9", "r2"):
        state.release(holder, attempt=1)
        order += drain(state)
    assert order == ["r1", "r9", "r2", "r3"]


def test_a_rate_limit_admits_a_burst_of_one_seconds_worth_then_one_token_at_a_time() -> None:
    state = FlowState()
    reasons = [state.offer(run(i, since=i, rate_limit="5/s", concurrency_key="api"), 0.0) for i in range(8)]
    assert reasons.count(None) == 5 and reasons[5:] == ["rate:api"] * 3
    admitted, wake_in = state.admit_waiting(0.1, wall=T0.timestamp())
    assert admitted == [] and wake_in is not None and 0 < wake_in <= 0.1 + 1e-9
    assert drain(state, 0.2) == ["r5"]
    assert drain(state, 0.6) == ["r6", "r7"]


def test_a_rate_without_a_key_limits_the_task_itself() -> None:
    state = FlowState()
    assert state.offer(run(0, task="t", rate_limit="1/h"), 0.0) is None
    assert state.offer(run(1, task="t", rate_limit="1/h"), 0.0) == "rate:task:t"
    assert state.offer(run(2, task="other", rate_limit="1/h"), 0.0) is None


def test_an_operator_limit_overrides_the_tasks_and_clearing_it_falls_back() -> None:
    state = FlowState()
    for i in range(4):
        state.offer(run(i, since=i, concurrency_key="k", max_concurrency=1), 0.0)
    state.key("k").operator = KeyLimit(key="k", max_concurrency=3)
    assert drain(state) == ["r1", "r2"]
    assert state.keys["k"].view().source == "operator"
    state.key("k").operator = None
    assert state.keys["k"].view().max_concurrency == 1


def test_a_run_with_two_keys_needs_room_on_both() -> None:
    state = FlowState()
    state.offer(run(0, concurrency_key="b", max_concurrency=1), 0.0)
    assert state.offer(run(1, since=1, concurrency_key=["a", "b"], max_concurrency=1), 0.0) == "concurrency:b"
    assert state.offer(run(2, since=2, concurrency_key="a", max_concurrency=1), 0.0) is None
    state.release("r0", attempt=1)
    assert drain(state) == []  # b is free now, a is not: r1 waits on a
    state.release("r2", attempt=1)
    assert drain(state) == ["r1"]


def test_a_cancelled_tasks_waiting_runs_are_dropped_and_never_admitted() -> None:
    state = FlowState()
    state.offer(run(0, concurrency_key="k", max_concurrency=1), 0.0)
    state.offer(run(1, since=1, concurrency_key="k", max_concurrency=1), 0.0)
    state.offer(run(2, since=2, concurrency_key="k", max_concurrency=1), 0.0)
    assert [r.run_id for r in state.drop_task("t1")] == ["r1"]
    state.release("r0", attempt=1)
    assert drain(state) == ["r2"]


def test_a_deleted_tasks_permits_are_freed_for_the_next_waiting_run() -> None:
    state = FlowState()
    state.offer(run(0, concurrency_key="k", max_concurrency=1), 0.0)
    state.offer(run(1, since=1, concurrency_key="k", max_concurrency=1), 0.0)
    assert [p.run_id for p in state.release_task("t0")] == ["r0"]
    assert drain(state) == ["r1"]


def test_a_higher_priority_run_of_another_fairness_key_goes_before_the_round_robin_turn() -> None:
    state = FlowState()
    state.offer(run(0, concurrency_key="k", max_concurrency=1), 0.0)
    for i in range(1, 4):
        state.offer(run(i, since=i, concurrency_key="k", max_concurrency=1, fairness_key="a"), 0.0)
    state.offer(run(8, since=8, concurrency_key="k", max_concurrency=1, fairness_key="b"), 0.0)
    state.offer(run(9, since=9, concurrency_key="k", max_concurrency=1, fairness_key="c", priority=5), 0.0)
    order = []
    for holder in ("r0", "r9", "r1", "r8"):
        state.release(holder, attempt=1)
        order += drain(state, waited=10)
    assert order == ["r9", "r1", "r8", "r2"]
    # after two minutes of waiting a priority-3 run ranks with a fresh priority-5 one
    state.offer(run(20, since=10, concurrency_key="k", max_concurrency=1, fairness_key="d", priority=5), 0.0)
    state.release("r2", attempt=1)
    assert drain(state, waited=200) == ["r3"]


def test_idle_per_task_keys_are_forgotten_once_their_bucket_is_full_again() -> None:
    state = FlowState()
    state.offer(run(0, task="t", rate_limit="1/s"), 0.0)
    state.offer(run(1, concurrency_key="named", max_concurrency=1), 0.0)
    state.release("r0", attempt=1)
    state.release("r1", attempt=1)
    assert state.prune(0.5) == 0  # its token is not back yet: forgetting it would allow a second start
    assert state.prune(1.5) == 1 and sorted(state.keys) == ["named"]
