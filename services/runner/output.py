"""A run's output: decoded, chunked, capped, and published as it happens."""

from __future__ import annotations

import asyncio
import codecs
import logging

from nats.js import JetStreamContext

from proto import codec, subjects
from proto.runs import MAX_INLINE_LOG_BYTES, LogChunk, LogStream
from services.common.clock import utcnow
from services.common.masking import MASK
from services.common.publishing import publish_async

log = logging.getLogger(__name__)

CHUNK_BYTES = 32 * 1024
FLUSH_SECONDS = 0.1
PARTIAL_LINE_SECONDS = 1.0
"""How long a timed flush may hold back an unfinished last line (a ``print`` is often two writes:
the text, then its newline); a line without end (a progress bar) still goes out after this."""
SETTLE_SECONDS = 10.0
"""Longest wait for room to publish a chunk, and for all of a run's chunks to be acknowledged."""


class RunOutput:
    """Collects stdout/stderr/system text for one attempt and publishes ``LogChunk``s on LOGS:
    at most every 100 ms or 32 KiB, in order, until ``cap_bytes``; the rest is counted and dropped."""

    def __init__(self, js: JetStreamContext, task_id: str, run_id: str, attempt: int, cap_bytes: int) -> None:
        self.js = js
        self.task_id, self.run_id, self.attempt = task_id, run_id, attempt
        self.cap_bytes = cap_bytes
        self.subject = subjects.log_chunks(task_id, run_id)
        self.bytes_kept = 0
        self.bytes_seen = 0
        self.truncated = False
        self._seq = 0
        self._buffer: list[tuple[LogStream, str]] = []
        self._buffered = 0
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in ("stdout", "stderr")}
        self._timer: asyncio.TimerHandle | None = None
        self._partial_since = 0.0
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._acks: list[asyncio.Future] = []
        self._worker: asyncio.Task[None] | None = None
        self.hidden: list[str] = []
        """Secret values this run uses: replaced by ``***`` in every chunk, also one written across
        two chunks (text that may begin a value waits for what follows it)."""
        self._held_back: dict[LogStream, str] = {}
        self.inline: list[LogChunk] = []
        """The whole output, kept by ``end`` for the outcome to carry (not published on LOGS)."""

    @property
    def chunks(self) -> int:
        """How many chunks have been published (or queued to be)."""
        return self._seq

    def write(self, stream: LogStream, data: bytes) -> None:
        """Add raw output of the sandbox or request."""
        self.bytes_seen += len(data)
        if self.truncated:
            return
        room = self.cap_bytes - self.bytes_kept
        if len(data) > room:
            data = data[:room]
            self._append(stream, self._decoders[stream].decode(data, final=True))
            self.bytes_kept += len(data)
            self.truncated = True
            self._append("system", f"\n[output truncated at {self.cap_bytes} bytes; the rest was discarded]\n")
            return
        self.bytes_kept += len(data)
        self._append(stream, self._decoders[stream].decode(data))

    def system(self, text: str) -> None:
        """Add a line of Taskmesh's own (what happened to the run), never user secrets."""
        self._append("system", text if text.endswith("\n") else text + "\n")

    def _append(self, stream: LogStream, text: str) -> None:
        if not text:
            return
        self._buffered += len(text)
        unfinished = self._unfinished_line(stream)
        if unfinished is not None:
            # stdout and stderr come through separate pipes, so the other stream's text can arrive
            # between a print's text and its newline: the line's end joins its beginning.
            end = text.find("\n") + 1 or len(text)
            self._buffer[unfinished] = (stream, self._buffer[unfinished][1] + text[:end])
            text = text[end:]
        if text and self._buffer and self._buffer[-1][0] == stream:
            self._buffer[-1] = (stream, self._buffer[-1][1] + text)
        elif text:
            self._buffer.append((stream, text))
        if self._buffered >= CHUNK_BYTES:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._flush_on_time)

    def _unfinished_line(self, stream: LogStream) -> int | None:
        """Index of the buffered entry holding ``stream``'s unfinished last line, if any.

        Looks at the last few entries only (the other stream's and system lines between): each
        append stays O(1) whatever a process interleaves."""
        if stream == "system":
            return None
        for index in range(len(self._buffer) - 1, max(len(self._buffer) - 4, -1), -1):
            entry_stream, text = self._buffer[index]
            if entry_stream == stream:
                return None if text.endswith("\n") else index
        return None

    def _flush_on_time(self) -> None:
        """The timer's flush: everything but each stream's unfinished last line, unless it waited long enough."""
        self._timer = None
        loop = asyncio.get_running_loop()
        held: list[tuple[LogStream, str]] = []
        partial = [i for i in (self._unfinished_line("stdout"), self._unfinished_line("stderr")) if i is not None]
        if partial:
            self._partial_since = self._partial_since or loop.time()
            if loop.time() - self._partial_since < PARTIAL_LINE_SECONDS:
                for index in sorted(partial):
                    stream, text = self._buffer[index]
                    cut = text.rfind("\n") + 1
                    held.append((stream, text[cut:]))
                    self._buffer[index] = (stream, text[:cut])
                self._buffer = [(stream, text) for stream, text in self._buffer if text]
        since = self._partial_since
        self._flush()
        if held:
            self._partial_since = since
            self._buffer.extend(held)
            self._buffered = sum(len(text) for _, text in held)
            self._timer = loop.call_later(FLUSH_SECONDS, self._flush_on_time)

    def _hide(self, stream: LogStream, text: str, final: bool) -> str:
        """``text`` with secret values replaced; unless ``final``, a tail that may begin one is held back."""
        text = self._held_back.pop(stream, "") + text
        for value in self.hidden:
            text = text.replace(value, MASK)
        held = 0 if final else self._may_begin_a_value(text)
        if held:
            self._held_back[stream] = text[-held:]
            text = text[:-held]
        return text

    def _may_begin_a_value(self, text: str) -> int:
        """Length of the longest end of ``text`` that is the start of a secret value (0: none)."""
        longest = 0
        for value in self.hidden:
            index = text.find(value[0], max(len(text) - len(value) + 1, 0))
            while index != -1:
                if value.startswith(text[index:]):
                    longest = max(longest, len(text) - index)
                    break
                index = text.find(value[0], index + 1)
        return longest

    def _flush(self, final: bool = False) -> None:
        self._publish(self._take_chunks(final))

    def _take_chunks(self, final: bool) -> list[LogChunk]:
        """The buffered text as the next chunks, one per stream run (secret values hidden)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._partial_since = 0.0
        buffered, self._buffer, self._buffered = self._buffer, [], 0
        if self.hidden:
            streams = {stream for stream, _ in buffered}
            held = [(s, "") for s in self._held_back if final and s not in streams]
            buffered = [(s, self._hide(s, t, final)) for s, t in [*buffered, *held]]
            buffered = [(s, t) for s, t in buffered if t]
        chunks = []
        for stream, text in buffered:
            chunks.append(
                LogChunk(
                    task_id=self.task_id,
                    run_id=self.run_id,
                    attempt=self.attempt,
                    seq=self._seq,
                    stream=stream,
                    data=text,
                    at=utcnow(),
                )
            )
            self._seq += 1
        return chunks

    def _publish(self, chunks: list[LogChunk]) -> None:
        for chunk in chunks:
            self._outbox.put_nowait(codec.encode(chunk))
        if self._worker is None and chunks:
            self._worker = asyncio.create_task(self._publish_in_order())

    async def _publish_in_order(self) -> None:
        while (payload := await self._outbox.get()) is not None:
            try:
                self._acks.append(await publish_async(self.js, self.subject, payload, seconds=SETTLE_SECONDS))
            except Exception as exc:  # output is best effort; the outcome is not
                log.warning("log chunk not published: %s", exc)

    def end(self, inline: bool = False) -> None:
        """No more output: publish what is buffered (``settled`` waits for it).

        ``inline``: when none of the output has been published yet and all of it fits in
        ``MAX_INLINE_LOG_BYTES``, keep it in ``inline`` for the outcome to carry instead."""
        for stream, decoder in self._decoders.items():
            tail = decoder.decode(b"", final=True)
            if tail:
                self._append(stream, tail)  # type: ignore[arg-type]  # the decoders' keys are stdout and stderr
        chunks = self._take_chunks(final=True)
        if inline and self._worker is None and sum(len(c.data.encode()) for c in chunks) <= MAX_INLINE_LOG_BYTES:
            self.inline = chunks
        else:
            self._publish(chunks)
        if self._worker is not None:
            self._outbox.put_nowait(None)

    def publish_inline(self) -> None:
        """Publish on LOGS what ``end`` kept for the outcome (an outcome that cannot carry it)."""
        chunks, self.inline = self.inline, []
        if chunks:
            self._publish(chunks)
            self._outbox.put_nowait(None)

    async def settled(self) -> None:
        """Wait until JetStream has every chunk (or 10 s passed)."""
        if self._worker is None:
            return
        await self._worker
        try:
            await asyncio.wait_for(asyncio.gather(*self._acks, return_exceptions=True), SETTLE_SECONDS)
        except TimeoutError:
            log.warning("log chunks of run %s not all acknowledged", self.run_id)
