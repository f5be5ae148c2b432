"""The runner service: pull due runs into free slots, execute, report; scale by adding runners."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from contextlib import AsyncExitStack
from functools import partial

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from proto import codec, subjects
from proto.control import Heartbeat
from services import VERSION
from services.common import natsio
from services.common.clock import utcnow
from services.common.lifecycle import supervise
from services.common.poison import handling_failed
from services.common.presence import announce_forever, hostname
from services.common.pulling import ContinuousPull
from services.runner import pings
from services.runner.executor import RunExecutor
from services.runner.http_task import HttpTasks
from services.runner.identity import RunnerIdentity
from services.runner.sandbox.docker_sandbox import DockerSandboxes
from services.runner.secrets import SecretResolver
from services.runner.settings import RunnerSettings
from services.runner.slots import Slots

log = logging.getLogger(__name__)


async def main(settings: RunnerSettings, stop: asyncio.Event) -> None:
    """Run one runner until ``stop``; then finish or hand back what it holds."""
    identity = RunnerIdentity.generate()
    runner_id = identity.runner_id
    started_at = utcnow()
    async with AsyncExitStack() as stack:
        nc = await natsio.connect(settings, f"taskmesh-runner-{runner_id}", stop, user="runner")
        stack.push_async_callback(natsio.close, nc)
        js = nc.jetstream(timeout=10)
        for stream in (
            subjects.STREAM_WORK,
            subjects.STREAM_EVENTS,
            subjects.STREAM_LOGS,
            subjects.STREAM_DEAD_LETTERS,
        ):
            await natsio.wait_for_stream(js, stream, stop)
        secrets_kv = await natsio.wait_for_bucket(js, subjects.BUCKET_SECRETS, stop)
        if stop.is_set():
            return
        for name in (subjects.CONSUMER_RUNNER_CODE, subjects.CONSUMER_RUNNER_API):
            await natsio.while_forming(name, partial(natsio.ensure_consumer, js, name), stop)

        executor: RunExecutor | None = None
        # Answer pings from the start: another runner reaping orphans must see us alive.
        await pings.answer_pings(nc, identity, lambda run_id: executor is not None and executor.holds(run_id))
        sandboxes = DockerSandboxes(settings, runner_id, nc)
        await sandboxes.start(stop)
        stack.push_async_callback(sandboxes.close)
        limits = settings.limits()
        http = HttpTasks(
            settings.egress_policy(),
            max_connections=settings.api_slots * 2,
            default_timeout=limits.api_timeout_seconds,
            max_timeout=limits.max_timeout_seconds,
            body_cap_bytes=settings.response_body_cap_bytes,
        )
        stack.push_async_callback(http.close)
        resolver = SecretResolver(secrets_kv, settings.secret_keys())
        executor = RunExecutor(js, runner_id, settings, http, sandboxes, resolver, nc)

        async def on_cancel(msg: Msg) -> None:
            try:
                request = codec.cancel_decoder.decode(msg.data)
            except Exception:  # a foreign message
                return
            if executor.cancel(request):
                log.info("cancelling run", extra={"task": request.task_id, "run": request.run_id or "*"})

        await nc.subscribe(subjects.CANCEL_RUNS, cb=on_cancel)
        pools = {"code": Slots("code", settings.effective_code_slots()), "api": Slots("api", settings.api_slots)}

        def heartbeat() -> Heartbeat:
            return Heartbeat(
                service="runner",
                instance_id=runner_id,
                host=hostname(),
                version=VERSION,
                started_at=started_at,
                sent_at=utcnow(),
                slots={name: slots.usage() for name, slots in pools.items()},
                sandbox=sandboxes.status(),
                runs_finished=executor.finished,
                consumer_restarts=dict(restarts),
            )

        restarts: Counter[str] = Counter()
        beats = asyncio.create_task(announce_forever(nc, heartbeat, settings.heartbeat_interval, stop))
        in_flight: set[asyncio.Task[None]] = set()
        pullers = [
            asyncio.create_task(
                supervise(
                    durable, partial(_pull, nc, js, durable, pools[pool], executor, in_flight, stop), stop, restarts
                )
            )
            for durable, pool in ((subjects.CONSUMER_RUNNER_CODE, "code"), (subjects.CONSUMER_RUNNER_API, "api"))
        ]
        log.info(
            "runner ready",
            extra={
                "runner": runner_id,
                "code_slots": pools["code"].total,
                "api_slots": pools["api"].total,
                "sandbox": sandboxes.detail,
            },
        )
        await stop.wait()
        await asyncio.gather(*pullers, return_exceptions=True)
        grace = settings.shutdown_grace.total_seconds()
        holding = len(executor.active)
        log.info("stopping: no more pulls; waiting up to %.0f s for %d run(s)", grace, holding)
        finished_in_grace = all([await slots.drained(grace) for slots in pools.values()])
        handed_back = 0 if finished_in_grace else executor.hand_back_all()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        await beats
        log.info("runner stopped", extra={"finished": executor.finished, "handed_back": handed_back})


async def _pull(
    nc: Client,
    js: JetStreamContext,
    durable: str,
    slots: Slots,
    executor: RunExecutor,
    in_flight: set[asyncio.Task[None]],
    stop: asyncio.Event,
) -> None:
    # Asks for no more than the free slots: a run is never held here waiting for one.
    pull = ContinuousPull(nc, subjects.STREAM_WORK, durable, slots.total, capacity=lambda: slots.free)
    await pull.start(stop)
    try:
        while not stop.is_set():
            if slots.free == 0:
                await slots.wait_free(stop)
                continue
            for message in await pull.next_batch(limit=slots.free):
                slots.take()
                task = asyncio.create_task(_run(js, executor, message, slots))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
    finally:
        await pull.close()


async def _run(js: JetStreamContext, executor: RunExecutor, message: Msg, slots: Slots) -> None:
    try:
        await executor.handle(message)
    except Exception as exc:  # this message only: redelivered later with a delay, then given up
        log.exception("run not completed")
        try:
            await handling_failed(js, message, exc, "runner")
        except Exception as settle_exc:  # not acked: redelivered after the ack wait
            log.warning("run message not settled (%s); it will be redelivered", settle_exc)
    finally:
        slots.release()
