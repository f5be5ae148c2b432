"""A small program on the public API, checked by mypy --strict in test_typing.py (and runnable against a stack)."""

from __future__ import annotations

import asyncio
from datetime import datetime

import taskmesh

tm = taskmesh.Client()
atm = taskmesh.AsyncClient()


@tm.function(requirements=["numpy==2.2.6"], timeout=60, memory_mb=256, max_retries=2)
def mean(xs: list[float]) -> float:
    import statistics  # a requirement such as numpy would be imported here, where only the sandbox needs it

    return statistics.fmean(xs)


@atm.function
def square(x: int) -> int:
    return x * x


@tm.function(concurrency_key=["partner-api", "tenant:acme"], max_concurrency=2, rate_limit="10/s", priority=4)
def call_partner(n: int) -> int:
    return n


@atm.function(network=True, allow_hosts=["api.example.com"], concurrency_key="partner-api", fairness_key="acme")
def fetch(path: str) -> str:
    return path


def main() -> None:
    run: taskmesh.Run[float] = mean.submit([1, 2, 3])
    value: float = run.result(timeout=30)
    local: float = mean([1.0, 2.0, 3.0])
    many: list[float] = mean.map([[1, 2], [3, 4]])
    status: str = run.refresh().status
    text: str = run.logs()
    for chunk in run.follow_logs():
        print(chunk, end="")
    schedule: taskmesh.Schedule = mean.schedule([1, 2], cron="0 7 * * mon-fri", timezone="Europe/Paris")
    run_id: str = schedule.pause().resume().trigger()
    entries: list[taskmesh.LedgerEntry] = schedule.ledger()
    when: datetime | None = schedule.next_run_at
    schedule.delete()
    jittered: taskmesh.Schedule = call_partner.schedule(1, cron="0 * * * *", jitter_seconds=300)
    jittered.delete()
    limited: taskmesh.Run[int] = call_partner.submit(2)
    polite: taskmesh.Run[object] = tm.http(
        "https://api.example.com/hook", allow_hosts=["api.example.com"], concurrency_key="partner-api", priority=2
    )
    reason: str | None = limited.refresh().task.waiting_reason
    print(polite.id, reason)
    reply: object = tm.http("https://example.org/hook", method="POST", json={"a": 1}, headers={"X": "1"}).result()
    failed: list[taskmesh.Task] = tm.tasks(status="failed", limit=20)
    try:
        mean.submit([1], delay_seconds=60).cancel()
    except taskmesh.ApiError as error:
        code: str = error.code
        field: str | None = error.field
        print(code, field)
    except taskmesh.TaskFailed as failure:
        remote: str | None = failure.traceback
        print(remote)
    print(value, local, many, status, text, run_id, entries, when, reply, failed)


async def amain() -> None:
    run: taskmesh.AsyncRun[int] = await square.submit(3)
    value: int = await run.result(timeout=30)
    squares: list[int] = await square.map(range(5))
    fetched: taskmesh.AsyncRun[str] = await fetch.submit("/status")
    hourly: taskmesh.AsyncSchedule = await fetch.schedule("/sync", cron="0 * * * *", jitter_seconds=60.0)
    await hourly.delete()
    print(await fetched.result(timeout=30))
    async for chunk in run.follow_logs():
        print(chunk, end="")
    print(value, squares)
    await atm.close()


if __name__ == "__main__":
    main()
    asyncio.run(amain())
