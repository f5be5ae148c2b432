"""One due run, from the work queue to its outcome: check, start, execute, report, acknowledge.

The ack / nak / term decision for a WORK message lives here and only here:
- ack   after the run's ``RunFinished`` is durable (or when there is nothing to do: already
        finished, task deleted or cancelled, dead-lettered);
- nak   when this runner hands the run back (shutdown past its grace period);
- term  for a message that is not a ``RunDue`` at all.
A runner killed before acking loses nothing: the message is redelivered as attempt + 1.
A run is started by one delivery only (``claim``): a delivery that finds the run started by a
runner that still holds it waits for that runner to let go, then acks if the run finished.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from proto import codec, streams, subjects
from proto.control import CancelRun
from proto.retry import should_retry
from proto.runs import DeadLetter, Execution, RunDue, RunError, RunFinished, RunStarted, execution_facts
from services.common import publishing
from services.common.clock import utcnow
from services.common.poison import is_transient, within_deadline
from services.common.secret_keys import SecretKeys
from services.runner import claim
from services.runner.http_task import HttpTasks
from services.runner.outcome import retry_at
from services.runner.output import RunOutput
from services.runner.sandbox.docker_sandbox import DockerSandboxes, SandboxJob
from services.runner.secrets import SecretResolver, SecretUnavailable, hidden_outcome, unavailable
from services.runner.settings import RunnerSettings
from services.runner.verdicts import VerdictAsker

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = streams.RUNNER_ACK_WAIT.total_seconds() / 3
OUTCOME_PUBLISH_PATIENCE_SECONDS = 120.0
START_PUBLISH_PATIENCE_SECONDS = 10.0
"""How long a run waits for its ``RunStarted`` to be recorded; then it is handed back, not run."""
UNSTARTED_REDELIVERY_DELAY_SECONDS = 2.0
HOLDER_POLL_SECONDS = 1.0
"""How often a delivery that found its run held by another runner asks again."""
VERDICT_TIMEOUT_SECONDS = 5.0
"""How long the store has to say whether a run is still wanted, before it runs anyway."""


@dataclass
class ActiveRun:
    """A run this runner holds."""

    task_id: str
    run_id: str
    attempt: int
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_reason: str = ""
    hand_back: bool = False
    secret_values: list[str] = field(default_factory=list)
    """Values of the secrets this run uses, hidden in its outcome."""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when this delivery is settled (acked, naked or left to the ack wait)."""


class RunExecutor:
    """Executes due runs for one runner."""

    def __init__(
        self,
        js: JetStreamContext,
        runner_id: str,
        settings: RunnerSettings,
        http: HttpTasks,
        sandboxes: DockerSandboxes,
        secrets: SecretResolver | None = None,
        nc: Client | None = None,
    ) -> None:
        self.js = js
        self.runner_id = runner_id
        self.settings = settings
        self.limits = settings.limits()
        self.http = http
        self.sandboxes = sandboxes
        self.secrets = secrets or SecretResolver(None, SecretKeys([]))
        self.nc = nc
        """Asks the store whether a run is still wanted, and other runners whether they still
        hold a run (None: neither; every run is wanted and never waits for another runner)."""
        self.verdicts = None if nc is None else VerdictAsker(nc, VERDICT_TIMEOUT_SECONDS)
        self.active: dict[str, ActiveRun] = {}
        self.finished = 0

    # --- control ------------------------------------------------------------------------------

    def cancel(self, request: CancelRun) -> int:
        """Cancel runs held here that match ``request``; returns how many."""
        hit = 0
        for run in list(self.active.values()):
            if run.task_id == request.task_id and (request.run_id is None or run.run_id == request.run_id):
                run.cancel_reason = request.reason
                run.cancelled.set()
                hit += 1
        return hit

    def hand_back_all(self) -> int:
        """Stop every held run so it is redelivered to another runner (shutdown)."""
        for run in self.active.values():
            run.hand_back = True
            run.cancelled.set()
        return len(self.active)

    def holds(self, run_id: str) -> bool:
        """Whether a delivery of ``run_id`` is here: waiting to start, running or reporting."""
        return run_id in self.active

    # --- one message --------------------------------------------------------------------------

    async def handle(self, message: Msg) -> None:
        try:
            due = codec.run_due_decoder.decode(message.data)
        except msgspec.MsgspecError as exc:
            log.warning("not a due run on %s, terminated: %s", message.subject, exc)
            await within_deadline(message.term())
            return
        delivered = message.metadata.num_delivered or 1
        attempt = due.attempt + delivered - 1
        active = ActiveRun(due.task_id, due.run_id, attempt)
        keep_alive = asyncio.create_task(self._keep_alive(message))
        try:
            earlier = self.active.get(due.run_id)
            if earlier is not None:  # this runner was handed the run twice: the first delivery decides
                await earlier.done.wait()
                if earlier.hand_back:
                    await within_deadline(message.nak())
                    return
            self.active[due.run_id] = active  # before the checks: a cancel arriving now is not missed
            await self._handle(message, due, delivered, active)
        finally:
            keep_alive.cancel()
            active.done.set()
            if self.active.get(due.run_id) is active:
                del self.active[due.run_id]

    async def _handle(self, message: Msg, due: RunDue, delivered: int, active: ActiveRun) -> None:
        attempt = active.attempt
        if delivered > 1:
            self.sandboxes.reap_soon()  # its last runner probably died: its containers are orphans
            if await self._already_finished(due):
                await within_deadline(message.ack())
                return
            if delivered > self.settings.poison_deliveries:
                await self._dead_letter(due, attempt, delivered)
                await within_deadline(message.ack())
                return
        expired = due.deadline_at is not None and utcnow() > due.deadline_at
        if delivered == 1 and due.attempt == 1 and not expired:
            # A first start reads nothing before it publishes: record it while the store is asked
            # whether the run is still wanted, rather than after (one round trip less before the
            # run). A run the store says is not wanted then ends right after its start.
            asking = asyncio.ensure_future(self._still_wanted(due))
            try:
                started_at = await self._start(message, due, delivered, active)
            except BaseException:
                asking.cancel()
                raise
            if started_at is None:
                asking.cancel()
                return
            if await self._settled_unwanted(message, due, attempt, active, await asking):
                return
        else:
            if await self._settled_unwanted(message, due, attempt, active, await self._still_wanted(due)):
                return
            if expired:
                assert due.deadline_at is not None
                await self._report(
                    due,
                    attempt,
                    Execution(
                        status="expired",
                        error=RunError(
                            type="expired",
                            message=f"waited in the queue past its start deadline {due.deadline_at.isoformat()}",
                        ),
                    ),
                    None,
                )
                await within_deadline(message.ack())
                return
            started_at = await self._start(message, due, delivered, active)
            if started_at is None:
                return
        output = RunOutput(self.js, due.task_id, due.run_id, attempt, self.settings.log_cap_bytes)
        if delivered > 1:
            output.system(f"attempt {attempt}: delivered again (the previous runner stopped without an outcome)")
        try:
            outcome = await self._execute(due, active, output)
        except Exception as exc:  # a runner bug must not lose the run: report it as such
            log.exception("run %s failed inside the runner", due.run_id)
            outcome = Execution(
                status="failed", error=RunError(type="runner_error", message=f"{type(exc).__name__}: {exc}")
            )
        outcome = hidden_outcome(outcome, active.secret_values)
        # The outcome does not wait for the last log chunks to be acknowledged: the store tells a
        # complete log by the chunk count the outcome carries. A short output travels in the
        # outcome itself, unless the run is handed back (then there is no outcome to carry it).
        output.end(inline=not active.hand_back)
        if active.hand_back:
            await output.settled()
            await within_deadline(message.nak())
            log.info("run handed back", extra={"run": due.run_id, "attempt": attempt})
            return
        await self._report_once(due, attempt, outcome, started_at, output)
        await output.settled()
        await within_deadline(message.ack())

    async def _settled_unwanted(self, message: Msg, due: RunDue, attempt: int, active: ActiveRun, verdict: str) -> bool:
        """Settle a delivery that must not run: its task deleted, the runner stopping, the run
        cancelled. False: it runs."""
        if verdict == "deleted":
            log.info("run dropped: its task is deleted", extra={"task": due.task_id, "run": due.run_id})
            await within_deadline(message.ack())
            return True
        if active.hand_back:  # this runner stopped while it asked: the next runner decides, nobody cancelled it
            await within_deadline(message.nak())
            return True
        if verdict == "cancelled" or active.cancelled.is_set():
            log.info("run cancelled before it started", extra={"task": due.task_id, "run": due.run_id})
            await self._report(
                due,
                attempt,
                Execution(
                    status="cancelled",
                    error=RunError(type="cancelled", message=active.cancel_reason or "cancelled before it started"),
                ),
                None,
            )
            await within_deadline(message.ack())
            return True
        return False

    async def _start(self, message: Msg, due: RunDue, delivered: int, active: ActiveRun) -> datetime | None:
        """Record this delivery as the run's one start and return when it started; None when it
        must not run here (the message is then settled).

        Recorded before the run, never after: an outcome that cannot be recorded either would
        have the finished run executed again.
        """
        subject = subjects.run_event(due.task_id, due.run_id, "started")
        # The first delivery of a first attempt expects no start before it and skips the read. A
        # conflict sends it the careful way: read the last start, wait for its runner to let go,
        # then start after it.
        after: int | None = 0 if delivered == 1 and due.attempt == 1 else None
        mine: dict[bytes, datetime] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_PUBLISH_PATIENCE_SECONDS
        delay = 0.2
        while True:
            try:
                if after is None:
                    last = await claim.last_start(self.js, subject)
                    if last is not None and last.data in mine:
                        return mine[last.data]  # this delivery's own start; its acknowledgement was lost
                    if last is not None and last.runner_id:
                        if not await self._wait_for_holder(due, active, last.runner_id):
                            await within_deadline(message.nak())
                            return None
                        deadline = loop.time() + START_PUBLISH_PATIENCE_SECONDS  # waiting on a runner is no outage
                        if await self._already_finished(due):
                            await within_deadline(message.ack())
                            return None
                    after = last.seq if last is not None else 0
                now = utcnow()
                started = RunStarted(
                    # one id per start position: a repeat of this publish is a duplicate, a start
                    # after another start is a new message
                    event_id=f"s:{due.task_id}:{due.slot}:{active.attempt}" + (f"@{after}" if after else ""),
                    occurred_at=now,
                    task_id=due.task_id,
                    run_id=due.run_id,
                    attempt=active.attempt,
                    runner_id=self.runner_id,
                    scheduled_for=due.scheduled_for,
                    queued_at=due.queued_at,
                )
                payload = codec.encode(started)
                mine[payload] = now
                await claim.publish_start(self.js, subject, payload, started.event_id, after)
                return now
            except claim.StartTaken as exc:
                log.info("run start taken (%s); looking who holds it", exc, extra={"run": due.run_id})
                after = None
            except Exception as exc:  # disconnected, timed out, no stream leader during an election
                if loop.time() + delay > deadline:
                    log.warning(
                        "run not started: its start could not be recorded (%s); handed back",
                        exc,
                        extra={"run": due.run_id, "attempt": active.attempt},
                    )
                    await within_deadline(message.nak(delay=UNSTARTED_REDELIVERY_DELAY_SECONDS))
                    return None
                log.warning("start not yet recorded (%s); retrying in %.1f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _wait_for_holder(self, due: RunDue, active: ActiveRun, holder: str) -> bool:
        """Wait while runner ``holder`` holds the run; False when this delivery is handed back meanwhile."""
        if holder == self.runner_id:
            return True  # an earlier delivery here, and it has ended: handle() waited for it
        waited = False
        while await claim.holder_busy(self.nc, holder, due.run_id):
            if active.hand_back:
                return False
            if not waited:
                log.info("run is held by another runner; waiting for it", extra={"run": due.run_id, "holder": holder})
                waited = True
            await asyncio.sleep(HOLDER_POLL_SECONDS)
        return not active.hand_back

    async def _report_once(
        self, due: RunDue, attempt: int, outcome: Execution, started_at: datetime | None, output: RunOutput
    ) -> None:
        """Report the outcome of a run that has executed; whatever goes wrong, exactly one outcome
        is recorded (the user code must not run again because reporting it failed)."""
        try:
            await self._report(due, attempt, outcome, started_at, output)
        except Exception as exc:
            if is_transient(exc):
                raise  # _report waited out its patience: redelivered, and the redelivery fences the run
            log.exception("outcome of run %s could not be reported", due.run_id)
            output.publish_inline()
            reason = f"the runner could not report the outcome ({type(exc).__name__}: {exc})"
            finished = RunFinished(
                event_id=f"f:{due.task_id}:{due.slot}:{attempt}",
                occurred_at=utcnow(),
                task_id=due.task_id,
                run_id=due.run_id,
                attempt=attempt,
                runner_id=self.runner_id,
                status="failed",
                slot=due.slot,
                scheduled_for=due.scheduled_for,
                started_at=started_at,
                error=RunError(type="internal", message=reason),
                log_bytes=output.bytes_seen,
                log_chunks=output.chunks,
            )
            await self._publish_durably(
                subjects.run_event(due.task_id, due.run_id, "finished"), codec.encode(finished), finished.event_id
            )
            self.finished += 1

    async def _keep_alive(self, message: Msg) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await within_deadline(message.in_progress())
            except Exception as exc:  # NATS away: the ack wait may pass; redelivery then fences us
                log.debug("in_progress failed: %s", exc)

    async def _already_finished(self, due: RunDue) -> bool:
        """Whether this message's work is already done (the last runner died before acking)."""
        try:
            last = await self.js.get_last_msg(
                subjects.STREAM_EVENTS, subjects.run_event(due.task_id, due.run_id, "finished")
            )
        except NotFoundError:
            return False
        try:
            finished = codec.decode(RunFinished, last.data)
        except msgspec.MsgspecError:
            return False
        return finished.attempt >= due.attempt

    async def _still_wanted(self, due: RunDue) -> str:
        """``run``, or ``cancelled`` (task or run cancelled) or ``deleted`` (task deleted), as the
        store says (``services.runner.verdicts``); with no connection to ask on, ``run``."""
        if self.verdicts is None:
            return "run"
        return await self.verdicts.verdict(due.task_id, due.run_id)

    async def _execute(self, due: RunDue, active: ActiveRun, output: RunOutput) -> Execution:
        try:
            resolved = await self.secrets.resolve(due.spec)
        except SecretUnavailable as exc:
            output.system(f"not run: {exc.message}")
            return unavailable(exc)
        active.secret_values = output.hidden = resolved.values
        spec = resolved.spec
        if spec.sandboxed:
            default = self.limits.code_timeout_seconds if spec.kind == "code" else self.limits.api_timeout_seconds
            job = SandboxJob(
                task_id=due.task_id,
                run_id=due.run_id,
                attempt=active.attempt,
                spec=spec,
                timeout_seconds=min(spec.timeout or default, self.limits.max_timeout_seconds),
                memory_mb=min(spec.memory_mb or self.limits.memory_mb, self.limits.max_memory_mb),
                cpus=min(spec.cpus or self.limits.cpus, self.limits.max_cpus),
                network=(spec.network or spec.kind == "api") and self.limits.allow_network,
                environment=resolved.environment,
            )
            if spec.kind == "api":
                blocked = await self.http.egress_blocked(spec.api_url or "", spec.allow_hosts)
                if blocked:
                    output.system(f"blocked: {blocked}")
                    return Execution(status="failed", error=RunError(type="egress_denied", message=blocked))
            return await self.sandboxes.run(job, output, active.cancelled)
        request = asyncio.create_task(self.http.execute(spec, output))
        stopper = asyncio.create_task(active.cancelled.wait())
        try:
            done, _ = await asyncio.wait({request, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if request in done:
            return request.result()
        request.cancel()
        await asyncio.gather(request, return_exceptions=True)
        output.system("cancelled: request aborted")
        return Execution(
            status="cancelled", error=RunError(type="cancelled", message=active.cancel_reason or "cancelled")
        )

    async def _report(
        self,
        due: RunDue,
        attempt: int,
        outcome: Execution,
        started_at: datetime | None,
        output: RunOutput | None = None,
    ) -> None:
        """Publish the attempt's ``RunFinished`` and wait until JetStream has it; it counts the
        attempt's ``output`` (None: it made none) and carries what ``RunOutput.end`` kept for it,
        or that goes on LOGS."""
        log_bytes = output.bytes_seen if output is not None else 0
        log_chunks = output.chunks if output is not None else 0
        poison = outcome.error is not None and outcome.error.type == "poison"
        will_retry = should_retry(due.spec, outcome.status, due.retry) and not poison
        now = utcnow()
        finished = RunFinished(
            event_id=f"f:{due.task_id}:{due.slot}:{attempt}",
            occurred_at=now,
            task_id=due.task_id,
            run_id=due.run_id,
            attempt=attempt,
            runner_id=self.runner_id,
            status=outcome.status,
            slot=due.slot,
            scheduled_for=due.scheduled_for,
            started_at=started_at,
            **(
                execution_facts(outcome)
                | {"output_truncated": outcome.output_truncated or log_bytes > self.settings.log_cap_bytes}
            ),
            log_bytes=log_bytes,
            log_chunks=log_chunks,
            log=output.inline if output is not None else [],
            will_retry=will_retry,
            retry=due.retry,
            retry_at=retry_at(due.spec, due.retry + 1, now) if will_retry else None,
        )
        payload = codec.encode(finished)
        if output is not None and finished.log and len(payload) > streams.MAX_PAYLOAD_BYTES - 4096:
            output.publish_inline()  # the result needs the room
            finished = msgspec.structs.replace(finished, log=[])
            payload = codec.encode(finished)
        if len(payload) > streams.MAX_PAYLOAD_BYTES - 4096:
            finished = msgspec.structs.replace(
                finished,
                result=None,
                error=RunError(
                    type="result_too_large", message=f"the outcome is {len(payload)} bytes; too large to record"
                ),
                status="failed",
                will_retry=False,
                retry_at=None,
            )
            payload = codec.encode(finished)
        await self._publish_durably(subjects.run_event(due.task_id, due.run_id, "finished"), payload, finished.event_id)
        self.finished += 1

    async def _publish_durably(
        self, subject: str, payload: bytes, msg_id: str, patience_seconds: float = OUTCOME_PUBLISH_PATIENCE_SECONDS
    ) -> None:
        """Publish until JetStream acknowledges it: an outcome is worth waiting out a NATS restart for
        (giving up would re-run the attempt). The message id makes a repeated publish land once."""
        delay = 0.2
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience_seconds
        while True:
            try:
                await publishing.publish(self.js, subject, payload, headers={subjects.HEADER_MSG_ID: msg_id}, seconds=5)
                return
            except Exception as exc:  # disconnected, timed out, no responders while JetStream restarts
                if loop.time() + delay > deadline:
                    raise
                log.warning("outcome not yet recorded (%s); retrying in %.1f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _dead_letter(self, due: RunDue, attempt: int, delivered: int) -> None:
        reason = (
            f"delivered {delivered} times without an outcome (the runners holding it stopped); "
            f"given up after {self.settings.poison_deliveries}"
        )
        letter = DeadLetter(
            task_id=due.task_id,
            run_id=due.run_id,
            attempt=attempt,
            deliveries=delivered,
            reason=reason,
            at=utcnow(),
            due=due,
        )
        await self.js.publish(
            subjects.dead_letter(due.task_id),
            codec.encode(letter),
            timeout=10,
            headers={subjects.HEADER_MSG_ID: f"dl:{due.task_id}:{due.slot}:{due.attempt}"},
        )
        await self._report(
            due, attempt, Execution(status="failed", error=RunError(type="poison", message=reason)), None
        )
        log.warning("run dead-lettered", extra={"run": due.run_id, "deliveries": delivered})
