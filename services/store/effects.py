"""What the caller of an apply must do next: cancels to broadcast, waiters to wake."""

from __future__ import annotations

from dataclasses import dataclass, field

from proto.control import CancelRun


@dataclass
class Effects:
    """Follow-ups of an apply: cancels to broadcast, tasks whose waiters should look again."""

    cancels: list[CancelRun] = field(default_factory=list)
    wake: set[str] = field(default_factory=set)
    unknown_task: bool = False

    def merge(self, other: Effects) -> None:
        self.cancels.extend(other.cancels)
        self.wake |= other.wake
        self.unknown_task = self.unknown_task or other.unknown_task
