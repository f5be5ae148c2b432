"""The store's submit path against a real JetStream: what it publishes is exactly what reads back."""

from __future__ import annotations

import json

import pytest
from nats.js import JetStreamContext

from proto import bounds, codec, events, runs, subjects
from proto.errors import FieldError
from proto.records import TaskRecord
from proto.tasks import Limits
from services.common import natsio
from services.common.clock import utcnow
from services.common.ids import new_event_id
from services.store.commands import Commands
from services.store.errors import TaskNotFound
from services.store.state import StoreState


async def _commands(js: JetStreamContext) -> Commands:
    await natsio.setup_owned(js, "store", 1)
    state = StoreState()

    async def find_task(task_id: str) -> TaskRecord:
        task = state.get(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return task

    return Commands(js, state, Limits(), lambda _: None, find_task)


async def _published(js: JetStreamContext) -> int:
    return (await js.stream_info(subjects.STREAM_TASKS)).state.messages


async def test_a_hostile_body_is_refused_and_nothing_is_published(js: JetStreamContext) -> None:
    commands = await _commands(js)
    body = (
        b'{"name": "deep", "task_type": "immediate", "api_url": "http://a/", "data": ' + b"[" * 980 + b"]" * 980 + b"}"
    )

    with pytest.raises(FieldError) as raised:
        await commands.submit(body, None)

    assert raised.value.field == "data"
    assert await _published(js) == 0


async def test_a_task_whose_event_would_be_too_large_to_keep_is_refused_before_publishing(js: JetStreamContext) -> None:
    # Each control character in the code takes 6 bytes as JSON (\u0001): the code and args pass
    # their own bounds, the event would not fit beside a result in the task record.
    code = "def f(x):\n    return 1\n# " + "\x01" * (bounds.MAX_CODE_CHARS - 40)
    body = json.dumps(
        {
            "name": "big",
            "task_type": "immediate",
            "function_code": code,
            "function_name": "f",
            "args": ["x" * (bounds.MAX_VALUE_BYTES - 100)],
        }
    ).encode()
    commands = await _commands(js)

    with pytest.raises(FieldError) as raised:
        await commands.submit(body, None)

    assert raised.value.code == "payload_too_large"
    assert await _published(js) == 0


async def test_the_published_event_is_the_one_applied(js: JetStreamContext) -> None:
    commands = await _commands(js)
    body = json.dumps({"name": "ok", "task_type": "immediate", "api_url": "http://a/", "data": {"n": [1, 2.5]}})

    accepted = await commands.submit(body.encode(), None)

    stored = await js.get_msg(subjects.STREAM_TASKS, 1)
    event = codec.task_event_decoder.decode(stored.data)
    assert isinstance(event, events.TaskSubmitted) and event.task_id == accepted.id
    assert commands.state.tasks[accepted.id].spec == event.spec


async def test_the_reply_describes_the_submission_even_when_its_run_was_queued_before_the_ack(
    js: JetStreamContext,
) -> None:
    # The race a fast scheduler wins: while the submit's ack is on its way back, the store's
    # consumers apply the TaskSubmitted and then the RunQueued of its first run.
    commands = await _commands(js)
    publish = commands._publish

    async def publish_then_queue(event: events.TaskEvent, msg_id: str, payload: bytes | None = None):
        seq, duplicate = await publish(event, msg_id, payload)
        commands.state.apply_task_event(event, seq)
        commands.state.apply_run_event(
            runs.RunQueued(
                event_id=new_event_id(),
                occurred_at=utcnow(),
                task_id=event.task_id,
                run_id=runs.run_id_for(event.task_id, runs.ONCE_SLOT),
                slot=runs.ONCE_SLOT,
                scheduled_for=utcnow(),
            )
        )
        return seq, duplicate

    commands._publish = publish_then_queue  # type: ignore[method-assign]
    body = json.dumps({"name": "raced", "task_type": "immediate", "api_url": "http://a/"}).encode()

    accepted = await commands.submit(body, None)

    assert commands.state.tasks[accepted.id].status == "queued"  # the race did happen
    assert (accepted.status, accepted.task.status) == ("pending", "pending")
    assert accepted.task.id == accepted.id and not accepted.replayed
