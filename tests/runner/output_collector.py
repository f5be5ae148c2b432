"""A RunOutput stand-in for unit tests of the HTTP client: it only collects the system lines."""

from __future__ import annotations


class NullOutput:
    """Collects what the HTTP client writes to a run's log."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def system(self, text: str) -> None:
        self.lines.append(text)

    def write(self, stream: str, data: bytes) -> None:
        self.lines.append(data.decode(errors="replace"))
