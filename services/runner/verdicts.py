"""Whether runs about to start are still wanted, asked of the store together.

The runs of one pulled batch start in the same turn of the loop, so each one's question joins a
list and the list goes out as one request once they have all asked: in a burst, one request per
batch instead of one per run. A lone run is asked on its own (``RUN_VERDICT``), as is each run of
a batch the store could not answer at once (a store older than ``RUN_VERDICTS``, an error about
one run): the answer for every run is the one the single request would give.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TypeVar

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError

from proto import api, codec, subjects

log = logging.getLogger(__name__)
T = TypeVar("T")

Verdict = str
"""``run``, ``cancelled`` (task or run cancelled) or ``deleted`` (task deleted)."""


class VerdictAsker:
    """Collects the verdict questions of one turn of the loop and asks them in one request."""

    def __init__(self, nc: Client, timeout: float) -> None:
        self.nc = nc
        self.timeout = timeout
        self._waiting: list[tuple[api.RunRef, asyncio.Future[Verdict]]] = []
        self._asking: set[asyncio.Task[None]] = set()

    async def verdict(self, task_id: str, run_id: str) -> Verdict:
        """The store's verdict on one run; ``run`` when the store cannot say (no store, a timeout)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Verdict] = loop.create_future()
        self._waiting.append((api.RunRef(id=task_id, run_id=run_id), future))
        if len(self._waiting) == 1:
            loop.call_soon(self._send)  # after the other runs of this batch have asked
        return await future

    def _send(self) -> None:
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), api.MAX_VERDICTS_PER_REQUEST):
            task = asyncio.create_task(self._answer(waiting[start : start + api.MAX_VERDICTS_PER_REQUEST]))
            self._asking.add(task)
            task.add_done_callback(self._asking.discard)

    async def _answer(self, waiting: list[tuple[api.RunRef, asyncio.Future[Verdict]]]) -> None:
        refs = [ref for ref, _ in waiting]
        verdicts: list[Verdict] | None = None
        try:
            if len(refs) > 1:
                verdicts = await self._ask_together(refs)
        except (TimeoutError, NatsTimeoutError):  # no store answers in time: asking again would double the wait
            log.info("verdicts of %d runs not known in time; running them", len(refs))
            verdicts = ["run"] * len(refs)
        except Exception as exc:  # an older store, an error about one run: ask each alone
            log.info("verdicts of %d runs not known together (%s: %s)", len(refs), type(exc).__name__, exc)
        if verdicts is None:
            verdicts = list(await asyncio.gather(*(self._ask_alone(ref) for ref in refs)))
        for (_, future), verdict in zip(waiting, verdicts, strict=True):
            if not future.done():
                future.set_result(verdict)

    async def _request(self, subject: str, request: object, reply_type: type[T]) -> T:
        """The store's reply to ``request``; raises on an error reply, as on no reply."""
        reply = await self.nc.request(subject, codec.encode(request), timeout=self.timeout)
        if reply.headers and subjects.HEADER_ERROR in reply.headers:
            raise ValueError(reply.data[:200].decode(errors="replace"))
        return codec.decode(reply_type, reply.data)

    async def _ask_together(self, refs: list[api.RunRef]) -> list[Verdict]:
        reply = await self._request(subjects.RUN_VERDICTS, api.RunVerdictsRequest(runs=refs), api.RunVerdicts)
        verdicts: list[Verdict] = [v.verdict for v in reply.verdicts]
        if len(verdicts) != len(refs):
            raise ValueError(f"{len(verdicts)} verdicts for {len(refs)} runs")
        return verdicts

    async def _ask_alone(self, ref: api.RunRef) -> Verdict:
        """Asked of the store, which answers from its own state: the runner reads none of the
        store's buckets. With no store to answer (an election, a restart), run it: a cancel sent
        later still reaches the run here, as it does once a run has started."""
        try:
            return (await self._request(subjects.RUN_VERDICT, ref, api.RunVerdict)).verdict
        except Exception as exc:  # no responders, a timeout, an error reply
            log.info("run verdict not known (%s: %s); running it", type(exc).__name__, exc, extra={"run": ref.run_id})
            return "run"
