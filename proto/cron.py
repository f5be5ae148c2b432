"""Cron expressions and their fire times, with a defined daylight-saving rule. Pure: no I/O.

Accepted forms: standard 5 fields (``m h dom mon dow``), 6 fields with *seconds first*
(``s m h dom mon dow``, as in Quartz, Dkron and robfig/cron), and the aliases ``@yearly``,
``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``.

Expressions are evaluated in local wall time of the task's time zone. Daylight-saving rule:
- a wall time that does not exist (spring-forward gap) fires once, at the first valid instant
  after the gap; several gap times collapse into that one fire;
- a wall time that exists twice (fall-back overlap) fires once, at its first occurrence.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
_NEVER_HORIZON_YEARS = 5
# Enough to walk through the wall times of one fall-back hour of a per-second schedule.
_MAX_SKIPPED_WALL_TIMES = 10_000
_GAP_PROBE = datetime(2025, 1, 1, tzinfo=UTC)


class CronError(ValueError):
    """The expression or time zone cannot be used; the message says why."""


def load_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``, or CronError."""
    if not name or len(name) > 64:
        raise CronError("timezone must be an IANA name such as 'UTC' or 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(f"unknown timezone {name!r}; use an IANA name such as 'Europe/Berlin'") from None


class CronSchedule:
    """A parsed cron expression bound to a time zone."""

    __slots__ = ("_iterator_cache", "_seconds_first", "expression", "zone")

    def __init__(self, expression: str, zone: str = "UTC") -> None:
        expression = " ".join(expression.split())
        if not expression:
            raise CronError("cron_expression is empty")
        fields = expression.split(" ")
        if expression.startswith("@"):
            if expression.lower() not in ALIASES:
                raise CronError(f"unknown alias {expression!r}; known: {', '.join(sorted(ALIASES))}")
            expression = expression.lower()
            self._seconds_first = False
        elif len(fields) in (5, 6):
            self._seconds_first = len(fields) == 6
        else:
            raise CronError(
                f"cron_expression has {len(fields)} fields; use 5 (minute hour day month weekday) or 6 (second first)"
            )
        self.expression = expression
        self.zone = load_zone(zone)
        try:
            # Parsed once: building a croniter costs ~0.4 ms, moving an existing one ~20 µs.
            self._iterator_cache = croniter(
                self.expression,
                datetime(2000, 1, 1),
                second_at_beginning=self._seconds_first,
                max_years_between_matches=_NEVER_HORIZON_YEARS,
            )
        except Exception as exc:  # croniter raises several unrelated types for bad input
            raise CronError(f"invalid cron_expression {expression!r}: {exc}") from None
        probe = datetime(2025, 1, 1, tzinfo=UTC)
        if self.next_after(probe, horizon=timedelta(days=366 * _NEVER_HORIZON_YEARS)) is None:
            raise CronError(f"cron_expression {expression!r} never fires")

    def _iterator(self, start_wall: datetime) -> croniter:
        self._iterator_cache.set_current(start_wall, force=True)
        return self._iterator_cache

    def next_after(self, after: datetime, *, horizon: timedelta | None = None) -> datetime | None:
        """The first fire instant strictly after ``after`` (aware), in UTC; None past ``horizon``."""
        after = after.astimezone(UTC)
        limit = after + horizon if horizon is not None else None
        start_wall = after.astimezone(self.zone).replace(tzinfo=None)
        try:
            iterator = self._iterator(start_wall)
            for _ in range(_MAX_SKIPPED_WALL_TIMES):
                wall = iterator.get_next(datetime)
                instant = wall_to_instant(wall, self.zone)
                if limit is not None and instant > limit:
                    return None
                if instant > after:
                    return instant
        except Exception:  # croniter gives up when no match exists within its horizon
            return None
        return None

    def fires_between(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Up to ``limit`` fire instants in ``(after, until]``, oldest first."""
        fires: list[datetime] = []
        cursor = after
        while len(fires) < limit:
            nxt = self.next_after(cursor)
            if nxt is None or nxt > until:
                break
            fires.append(nxt)
            cursor = nxt
        return fires

    def shortest_gap(self, fires: int = 64) -> timedelta | None:
        """The shortest interval between consecutive fires among the first ``fires`` after a fixed
        probe instant (a sample: the same answer for the same expression); None when it fires once."""
        found = self.fires_between(_GAP_PROBE, _GAP_PROBE + timedelta(days=366 * _NEVER_HORIZON_YEARS), fires)
        return min((later - earlier for earlier, later in zip(found, found[1:], strict=False)), default=None)

    def count_between(self, after: datetime, until: datetime, cap: int = 1_000_000) -> int:
        """How many fires fall in ``(after, until]``, counting at most ``cap``."""
        return len(self.fires_between(after, until, cap))


def wall_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of naive local ``wall`` time under the DST rule of this module."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first  # exists; fold=0 is the first occurrence when it exists twice
    # In a gap: fold=1 applies the offset after the transition (an instant before the gap),
    # fold=0 the offset before it (an instant after the gap). The first valid instant lies between.
    low = int(wall.replace(tzinfo=zone, fold=1).astimezone(UTC).timestamp())
    high = int(first.timestamp())
    if low > high:
        low, high = high, low
    while low < high:
        middle = (low + high) // 2
        local = datetime.fromtimestamp(middle, UTC).astimezone(zone).replace(tzinfo=None)
        if local >= wall:
            high = middle
        else:
            low = middle + 1
    return datetime.fromtimestamp(high, UTC)
