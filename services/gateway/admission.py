"""Caps on long-lived requests (waits, log follows): past the cap a 429, not a stalled gateway."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from services.gateway.errors import ApiError


class Admission:
    """Counts the requests of one kind in progress and refuses a new one once ``limit`` are."""

    def __init__(self, kind: str, limit: int) -> None:
        self.kind = kind
        self.limit = limit
        self.active = 0
        self.refused = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        """One place for the duration of the block; ApiError(too_many_waiters) when none is free."""
        if self.active >= self.limit:
            self.refused += 1
            raise ApiError(
                "too_many_waiters",
                f"{self.active} {self.kind} are already open on this gateway "
                f"(the limit is {self.limit}); try again shortly",
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    def __repr__(self) -> str:
        return f"Admission({self.kind}: {self.active}/{self.limit} active, {self.refused} refused)"
