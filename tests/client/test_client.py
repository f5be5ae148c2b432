"""``taskmesh.Client`` against a real stack: functions in sandboxes, results, errors, logs, schedules, HTTP tasks."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import taskmesh
from tests.client import tasks
from tests.support import TargetServer


def unique(prefix: str) -> str:
    """A flow key no other test (or earlier run on this stack) shares."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def until(run: taskmesh.Run[Any], condition: Callable[[taskmesh.Task], bool], timeout: float = 90) -> taskmesh.Task:
    """Read the task again until ``condition`` holds for it; fail past ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition(run.refresh().task):
        assert time.monotonic() < deadline, f"not within {timeout} s: {run.task}"
        time.sleep(0.1)
    return run.task


def test_a_submitted_function_returns_its_result_and_still_runs_locally(tm: taskmesh.Client) -> None:
    mean = tm.function(timeout=60, memory_mb=256, max_retries=2)(tasks.mean)
    run = mean.submit([1, 2, 3])
    assert isinstance(run, taskmesh.Run) and run.id
    assert run.result(timeout=60) == 2.0
    assert run.refresh().status == "succeeded"
    assert run.task.spec.memory_mb == 256 and run.task.spec.max_retries == 2 and run.task.spec.timeout == 60
    assert mean([1, 2, 3]) == 2.0  # a plain local call


def test_a_remote_exception_surfaces_as_task_failed_with_the_remote_traceback(tm: taskmesh.Client) -> None:
    ratio = tm.function(tasks.ratio)
    with pytest.raises(taskmesh.TaskFailed) as failure:
        ratio.submit(1, 0).result(timeout=60)
    error = failure.value
    assert error.error_type == "exception" and error.exc_type == "ZeroDivisionError"
    assert error.traceback is not None and "return a / b" in error.traceback
    assert "Remote traceback" in str(error) and "ZeroDivisionError: division by zero" in str(error)


def test_map_of_50_items_returns_the_results_in_order(tm: taskmesh.Client) -> None:
    mean = tm.function(tasks.mean)
    inputs = [[i, i + 1] for i in range(50)]
    assert mean.map(inputs, timeout=240) == [i + 0.5 for i in range(50)]
    assert len(tm.tasks(name="mean", limit=500)) >= 50


def test_keyword_arguments_travel_as_json_and_other_values_are_refused_before_sending(tm: taskmesh.Client) -> None:
    encode = tm.function(tasks.encode)
    assert encode.submit(value={"b": 2, "a": 1}).result(timeout=60) == '{"a": 1, "b": 2}'
    before = len(tm.tasks(name="encode", limit=500))
    with pytest.raises(taskmesh.ArgumentsNotJson, match=r"kwargs\['value'\]\['when'\] is not a JSON value"):
        from datetime import datetime

        encode.submit(value={"when": datetime(2026, 1, 1)})
    assert len(tm.tasks(name="encode", limit=500)) == before


def test_a_delayed_submission_starts_after_its_delay(tm: taskmesh.Client) -> None:
    run = tm.function(tasks.mean).submit([4], delay_seconds=2)
    assert run.task.task_type == "delayed" and run.status == "pending"
    assert run.result(timeout=60) == 4.0
    assert run.task.started_at is not None
    assert (run.task.started_at - run.task.created_at).total_seconds() >= 1.9


def test_waiting_past_the_timeout_raises_result_not_ready_and_cancel_ends_the_task(tm: taskmesh.Client) -> None:
    run = tm.function(tasks.sleeper).submit(60)
    with pytest.raises(taskmesh.ResultNotReady):
        run.result(timeout=1)
    assert run.cancel().status in ("cancelled", "running", "queued", "pending")
    with pytest.raises(taskmesh.TaskCancelled):
        run.result(timeout=60)
    assert run.status == "cancelled"


def test_a_task_past_its_timeout_raises_task_timed_out(tm: taskmesh.Client) -> None:
    sleeper = tm.function(timeout=1)(tasks.sleeper)
    with pytest.raises(taskmesh.TaskTimedOut) as timed_out:
        sleeper.submit(30).result(timeout=60)
    assert timed_out.value.error_type == "timed_out"


def test_follow_logs_of_a_running_task_yields_each_chunk_once_until_the_run_ends(tm: taskmesh.Client) -> None:
    run = tm.function(tasks.chatty).submit(6, 0.4)
    deadline = time.monotonic() + 60
    while run.refresh().status != "running":  # follow a run that is under way, not a finished one
        assert time.monotonic() < deadline and run.status in ("pending", "queued"), run.task
        time.sleep(0.05)
    followed = "".join(run.follow_logs())
    assert followed == "".join(f"line {n}\n" for n in range(6))
    assert run.result(timeout=30) == 6
    assert run.logs() == followed


def test_a_schedule_is_paused_resumed_triggered_listed_in_its_ledger_and_deleted(tm: taskmesh.Client) -> None:
    mean = tm.function(tasks.mean)
    schedule = mean.schedule([1, 2], cron="0 7 * * mon-fri", timezone="Europe/Paris")
    assert isinstance(schedule, taskmesh.Schedule)
    assert schedule.status == "active"
    deadline = time.monotonic() + 10
    while schedule.refresh().next_run_at is None:  # the scheduler plans the first fire just after acceptance
        assert time.monotonic() < deadline, schedule.task
        time.sleep(0.05)
    assert schedule.next_run_at.weekday() < 5
    assert schedule.task.spec.cron_expression == "0 7 * * mon-fri" and schedule.task.spec.timezone == "Europe/Paris"
    assert schedule.pause().status == "paused"
    assert schedule.resume().status == "active"
    run_id = schedule.trigger()
    assert schedule.run_result(run_id, timeout=60) == 1.5
    assert run_id in [entry.run_id for entry in schedule.ledger()] or run_id in [r.run_id for r in schedule.runs()]
    schedule.delete()
    with pytest.raises(taskmesh.ApiError) as missing:
        schedule.refresh()
    assert missing.value.code == "not_found"


def test_an_idempotency_key_makes_a_second_submission_return_the_first_task(tm: taskmesh.Client) -> None:
    mean = tm.function(tasks.mean)
    first = mean.submit([1], idempotency_key="client-test-key")
    second = mean.submit([1], idempotency_key="client-test-key")
    assert first.id == second.id


def test_server_side_checks_come_back_as_api_errors_naming_the_field(tm: taskmesh.Client) -> None:
    with pytest.raises(taskmesh.ApiError) as refused:
        tm.function(memory_mb=10**6)(tasks.mean).submit([1])
    assert refused.value.code == "invalid_field" and refused.value.field == "memory_mb"
    with pytest.raises(taskmesh.ApiError) as missing:
        tm.get_run("no-such-task")
    assert missing.value.code == "not_found" and missing.value.status == 404


async def test_an_http_task_posts_json_with_headers_and_failed_tasks_are_listed(
    tm: taskmesh.Client, target: TargetServer
) -> None:
    def calls() -> tuple[object, list[taskmesh.Task]]:
        response = tm.http(f"{target.url}/echo", method="POST", json={"n": 1}, headers={"X-Trace": "abc"}).result(30)
        with pytest.raises(taskmesh.TaskFailed) as failed:
            tm.http(f"{target.url}/status/500", name="client-broken").result(timeout=30)
        assert failed.value.error_type == "http_status"
        return response, tm.tasks(status="failed", limit=20)

    response, failed_tasks = await asyncio.to_thread(calls)  # the target server lives on this event loop
    assert response["status_code"] == 200 and response["body"]["body"] == {"n": 1}  # type: ignore[index]
    assert target.headers[-1]["X-Trace"] == "abc"
    assert "client-broken" in [task.name for task in failed_tasks]
    assert all(task.status == "failed" for task in failed_tasks)


async def test_the_async_client_has_the_same_surface(atm: taskmesh.AsyncClient) -> None:
    mean = atm.function(tasks.mean)
    run = await mean.submit([1, 2, 3])
    assert await run.result(timeout=60) == 2.0
    assert (await run.refresh()).status == "succeeded"
    assert await mean.map([[1], [2], [3]], timeout=120) == [1.0, 2.0, 3.0]
    with pytest.raises(taskmesh.TaskFailed, match="ZeroDivisionError"):
        await (await atm.function(tasks.ratio).submit(1, 0)).result(timeout=60)

    chatty = await atm.function(tasks.chatty).submit(3, 0.3)
    assert "".join([text async for text in chatty.follow_logs()]) == "line 0\nline 1\nline 2\n"
    assert await chatty.logs() == "line 0\nline 1\nline 2\n"

    schedule = await mean.schedule([5], cron="@daily")
    assert (await schedule.pause()).status == "paused"
    assert (await schedule.resume()).status == "active"
    assert await schedule.run_result(await schedule.trigger(), timeout=60) == 5.0
    assert len(await schedule.ledger()) >= 0
    await schedule.delete()
    assert [t.id for t in await atm.tasks(task_type="scheduled", limit=500)].count(schedule.id) == 0


def test_a_sync_client_is_usable_from_several_threads(tm: taskmesh.Client) -> None:
    mean = tm.function(tasks.mean)
    results: list[float] = []
    threads = [threading.Thread(target=lambda i=i: results.append(mean.submit([i]).result(60))) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert sorted(results) == [0.0, 1.0, 2.0, 3.0]


def test_a_second_run_on_a_concurrency_key_of_one_waits_for_the_first(tm: taskmesh.Client) -> None:
    key = unique("client-one")
    sleeper = tm.function(concurrency_key=key, max_concurrency=1, priority=4)(tasks.sleeper)
    first = sleeper.submit(120)
    until(first, lambda task: task.status == "running")
    second = sleeper.submit(0)
    waiting = until(second, lambda task: task.waiting_reason is not None or task.status not in ("pending", "queued"))
    assert (waiting.status, waiting.waiting_reason) == ("queued", f"concurrency:{key}"), waiting
    assert first.refresh().status == "running"
    spec = second.task.spec
    assert (spec.concurrency_key, spec.max_concurrency, spec.priority) == (key, 1, 4)
    assert (spec.rate_limit, spec.fairness_key, spec.allow_hosts) == (None, None, [])  # not given: not sent

    first.cancel()  # its run ends with an outcome, which frees the key's only permit
    assert second.result(timeout=120) == "woke"
    assert second.task.waiting_reason is None
    with pytest.raises(taskmesh.TaskCancelled):
        first.result(timeout=60)


def test_flow_options_of_a_function_reach_the_stored_spec_and_bad_ones_are_named(tm: taskmesh.Client) -> None:
    keys = [unique("client-a"), unique("client-b")]
    mean = tm.function(concurrency_key=keys, max_concurrency=3, rate_limit="100/m", fairness_key="tenant:docs")(
        tasks.mean
    )
    run = mean.submit([1, 3])
    assert run.result(timeout=90) == 2.0
    spec = tm.get_run(run.id).task.spec
    assert (spec.concurrency_key, spec.max_concurrency, spec.rate_limit) == (keys, 3, "100/m")
    assert (spec.fairness_key, spec.priority) == ("tenant:docs", 3)  # priority not given: the server's default

    refused = {
        "rate_limit": tm.function(concurrency_key=keys[0], rate_limit="fast"),
        "max_concurrency": tm.function(max_concurrency=2),  # no key to count runs by
        "priority": tm.function(priority=9),
        "allow_hosts": tm.function(allow_hosts=["api.example.com"]),  # a code task without network
    }
    for field, decorator in refused.items():
        with pytest.raises(taskmesh.ApiError) as error:
            decorator(tasks.mean).submit([1])
        assert (error.value.code, error.value.field) == ("invalid_field", field), error.value


def test_a_schedule_keeps_its_jitter_and_one_longer_than_its_interval_is_refused(tm: taskmesh.Client) -> None:
    mean = tm.function(concurrency_key=unique("client-sched"), rate_limit="1/s")(tasks.mean)
    schedule = mean.schedule([2], cron="*/5 * * * *", jitter_seconds=45)
    try:
        stored = tm.get_schedule(schedule.id).task.spec
        assert (stored.cron_expression, stored.jitter_seconds, stored.rate_limit) == ("*/5 * * * *", 45, "1/s")
    finally:
        schedule.delete()
    with pytest.raises(taskmesh.ApiError) as refused:
        mean.schedule([2], cron="* * * * *", jitter_seconds=120)
    assert (refused.value.code, refused.value.field) == ("invalid_field", "jitter_seconds")


async def test_an_http_task_takes_flow_options_and_allow_hosts(tm: taskmesh.Client, target: TargetServer) -> None:
    key = unique("client-http")

    def calls() -> tuple[object, taskmesh.Task, list[str | None]]:
        run = tm.http(
            f"{target.url}/echo",
            method="POST",
            json={"n": 2},
            allow_hosts=["127.0.0.1"],
            concurrency_key=key,
            max_concurrency=2,
            rate_limit="10/s",
            priority=5,
            fairness_key="tenant:http",
        )
        response = run.result(timeout=60)
        fields = []
        for options in ({"allow_hosts": ["api.example.com"]}, {"rate_limit": "fast"}, {"fairness_key": "alone"}):
            with pytest.raises(taskmesh.ApiError) as refused:
                tm.http(f"{target.url}/echo", **options)
            fields.append(refused.value.field)
        return response, run.refresh().task, fields

    response, task, fields = await asyncio.to_thread(calls)  # the target server lives on this event loop
    assert response["status_code"] == 200 and response["body"]["body"] == {"n": 2}  # type: ignore[index]
    spec = task.spec
    assert (spec.allow_hosts, spec.concurrency_key, spec.max_concurrency) == (["127.0.0.1"], key, 2)
    assert (spec.rate_limit, spec.priority, spec.fairness_key) == ("10/s", 5, "tenant:http")
    # api_url's host outside allow_hosts; a rate that is no rate; a fairness key with nothing to share
    assert fields == ["allow_hosts", "rate_limit", "fairness_key"]


async def test_the_async_client_takes_the_flow_options_and_jitter(atm: taskmesh.AsyncClient) -> None:
    key = unique("client-async")
    mean = atm.function(concurrency_key=key, max_concurrency=1, priority=2)(tasks.mean)
    run = await mean.submit([4])
    assert await run.result(timeout=90) == 4.0
    assert (run.task.spec.concurrency_key, run.task.spec.max_concurrency, run.task.spec.priority) == (key, 1, 2)
    schedule = await mean.schedule([4], cron="0 * * * *", jitter_seconds=300)
    try:
        found = await atm.get_schedule(schedule.id)
        assert found.task.spec.jitter_seconds == 300 and found.next_run_at is not None
    finally:
        await schedule.delete()
    with pytest.raises(taskmesh.ApiError) as refused:
        await atm.http("http://127.0.0.1:9/", rate_limit="fast")
    assert refused.value.field == "rate_limit"
