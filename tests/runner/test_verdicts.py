"""VerdictAsker against a real nats-server, with the store's side played by a subscriber: the runs
of one turn of the loop are asked about in one request, and every run gets the answer the single
request would give when the store cannot answer together."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from nats.aio.msg import Msg

from proto import api, codec, subjects
from services.runner.verdicts import VerdictAsker

CANCELLED = {"t-cancelled"}


def _verdict(ref: api.RunRef) -> api.RunVerdict:
    return api.RunVerdict(verdict="cancelled" if ref.id in CANCELLED else "run")


async def _store(nc: Client, *, together: bool = True) -> tuple[list[api.RunVerdictsRequest], list[api.RunRef]]:
    """A store that answers single verdicts, and batches too unless ``together`` is False."""
    batches: list[api.RunVerdictsRequest] = []
    singles: list[api.RunRef] = []

    async def on_batch(message: Msg) -> None:
        request = codec.decode(api.RunVerdictsRequest, message.data)
        batches.append(request)
        await message.respond(codec.encode(api.RunVerdicts(verdicts=[_verdict(ref) for ref in request.runs])))

    async def on_single(message: Msg) -> None:
        ref = codec.decode(api.RunRef, message.data)
        singles.append(ref)
        await message.respond(codec.encode(_verdict(ref)))

    if together:
        await nc.subscribe(subjects.RUN_VERDICTS, cb=on_batch)
    await nc.subscribe(subjects.RUN_VERDICT, cb=on_single)
    await nc.flush()
    return batches, singles


async def test_runs_that_ask_in_the_same_turn_are_asked_about_in_one_request(nc: Client) -> None:
    batches, singles = await _store(nc)
    asker = VerdictAsker(nc, 5.0)
    ids = ["t-1", "t-cancelled", "t-2"]
    verdicts = await asyncio.gather(*(asker.verdict(task_id, f"r-{task_id}") for task_id in ids))
    assert verdicts == ["run", "cancelled", "run"]
    assert [[ref.id for ref in batch.runs] for batch in batches] == [ids] and singles == []


async def test_a_lone_run_is_asked_about_on_its_own(nc: Client) -> None:
    batches, singles = await _store(nc)
    asker = VerdictAsker(nc, 5.0)
    assert await asker.verdict("t-cancelled", "r-1") == "cancelled"
    assert await asker.verdict("t-1", "r-2") == "run"
    assert batches == [] and [ref.id for ref in singles] == ["t-cancelled", "t-1"]


async def test_a_store_that_cannot_answer_together_is_asked_run_by_run(nc: Client) -> None:
    _, singles = await _store(nc, together=False)  # an older store: no responders on RUN_VERDICTS
    asker = VerdictAsker(nc, 5.0)
    verdicts = await asyncio.gather(*(asker.verdict(task_id, "r") for task_id in ["t-cancelled", "t-1"]))
    assert verdicts == ["cancelled", "run"]
    assert sorted(ref.id for ref in singles) == ["t-1", "t-cancelled"]


async def test_with_no_store_at_all_every_run_runs(nc: Client) -> None:
    asker = VerdictAsker(nc, 1.0)
    assert await asyncio.gather(asker.verdict("t-1", "r"), asker.verdict("t-2", "r")) == ["run", "run"]
