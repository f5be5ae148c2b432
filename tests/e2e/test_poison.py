"""No message can wedge a service: one the scheduler cannot handle is given up, visibly, and the
tasks behind it run as usual."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import nats

from proto import codec, events, streams, subjects
from proto.tasks import TaskSpec
from tests.support import Api, Stack, TargetServer

END_OF_TIME = datetime(9999, 12, 31, 23, 59, 30, tzinfo=UTC)


async def test_a_task_event_the_scheduler_cannot_handle_is_dead_lettered_and_the_next_task_still_runs(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    # Given a submission that passes every check but makes the scheduler raise (its start deadline
    # lands past year 9999: OverflowError), published straight onto TASKS
    assert stack.nats is not None
    nc = await nats.connect(stack.nats.url)
    try:
        task_id = f"hostile-{secrets.token_hex(4)}"
        spec = TaskSpec(name="hostile", task_type="immediate", api_url=f"{target.url}/hello", start_deadline_seconds=60)
        event = events.TaskSubmitted(event_id=f"e-{task_id}", occurred_at=END_OF_TIME, task_id=task_id, spec=spec)
        await nc.jetstream().publish(
            subjects.task_event(task_id, event.subject_kind),
            codec.encode(event),
            headers={subjects.HEADER_MSG_ID: event.event_id},
            timeout=10,
        )
    finally:
        await nc.close()
    # When a normal task is submitted right after it
    normal = await api.submit({"name": "normal", "task_type": "immediate", "api_url": f"{target.url}/hello"})
    # Then the normal task runs without waiting for the bad one
    assert (await api.wait_final(normal["id"], timeout=20))["status"] == "succeeded"
    # And the bad one is given up after a few deliveries: failed as internal, with a readable reason
    task = await api.wait_final(task_id, timeout=60)
    assert task["status"] == "failed" and task["error"]["type"] == "internal", task
    assert "OverflowError" in task["error"]["message"]
    assert f"after {streams.HANDLING_DELIVERIES} deliveries" in task["error"]["message"]
    # And it is in the dead letters, with the message it could not handle
    letters = (await api.get("/api/dead-letters"))["dead_letters"]
    assert [(d["task_id"], d["deliveries"]) for d in letters] == [(task_id, streams.HANDLING_DELIVERIES)]
    assert letters[0]["subject"] == subjects.task_event(task_id, "submitted") and task_id in letters[0]["payload"]
    assert target.hits["/hello"] == 1  # only the normal task called out
