"""Process lifecycle: run ``main(settings, stop)`` under uvloop; SIGTERM/SIGINT only set ``stop``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from services.common.collector import tune_collector
from services.common.logs import configure_logging
from services.common.settings import ServiceSettings, SettingsError, load_settings

S = TypeVar("S", bound=ServiceSettings)
log = logging.getLogger(__name__)


def run_service(name: str, settings_type: type[S], main: Callable[[S, asyncio.Event], Awaitable[None]]) -> None:
    """Load settings, configure logging, run ``main`` until it returns; exit 2 on bad settings."""
    try:
        settings = load_settings(settings_type)
    except SettingsError as exc:
        print(f"taskmesh {name}: bad configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(name, settings.log_level, settings.log_format)
    try:
        import uvloop
    except ImportError:  # optional speed-up
        runner: Callable[..., object] = asyncio.run
    else:
        runner = uvloop.run
    tune_collector()
    runner(_supervise(name, settings, main))


async def _supervise(name: str, settings: S, main: Callable[[S, asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("%s received; stopping (again to force)", signal.Signals(signum).name)
            stop.set()
        else:
            log.warning("second signal; exiting now")
            sys.exit(1)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await main(settings, stop)
    except ConnectionAbortedError as exc:  # stopped while NATS or JetStream was not there yet
        if not stop.is_set():
            raise
        log.info("%s", exc)
    log.info("%s stopped", name)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True when ``stop`` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except TimeoutError:
        return stop.is_set()


async def supervise(
    name: str, loop: Callable[[], Awaitable[None]], stop: asyncio.Event, restarts: Counter[str]
) -> None:
    """Run ``loop()`` until ``stop``; when it dies (returns or raises early), count and restart it with backoff."""
    delay = 0.2
    while not stop.is_set():
        try:
            await loop()
        except Exception:  # a bug in a loop must not stop the service: log it, restart it
            log.exception("%s loop died", name)
        if stop.is_set():
            return
        restarts[name] += 1
        log.warning("%s loop restarted", name, extra={"consumer": name, "restarts": restarts[name]})
        if await sleep_or_stop(stop, delay):
            return
        delay = min(delay * 2, 5.0)


async def stop_within(tasks: list[asyncio.Task], seconds: float, why: str) -> None:
    """Wait for ``tasks`` to end, at most ``seconds``; then cancel the ones still running, each
    logged with where it waits (the await chain), and wait for them to go."""
    if not tasks:
        return
    _, stuck = await asyncio.wait(tasks, timeout=seconds)
    for task in stuck:
        log.warning(
            "%s still running %.0f s after %s; cancelled",
            task.get_name(),
            seconds,
            why,
            extra={"waiting_in": awaiting(task)},
        )
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def awaiting(task: asyncio.Task) -> str:
    """Where a suspended task waits: its chain of awaits, outermost first (``file:line function``)."""
    steps: list[str] = []
    awaitable: object = task.get_coro()
    while awaitable is not None and len(steps) < 40:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is not None:
            steps.append(f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} {frame.f_code.co_name}")
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return " > ".join(steps)
