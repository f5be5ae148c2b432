"""A run's output as chunks: a line written in two pieces is not split by the timed flush."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext

from proto import codec, subjects
from proto.runs import MAX_INLINE_LOG_BYTES, LogChunk
from services.common import natsio
from services.runner.output import FLUSH_SECONDS, PARTIAL_LINE_SECONDS, RunOutput


async def published(js: JetStreamContext, expected: int, timeout: float = 5.0) -> list[LogChunk]:
    subscription = await js.pull_subscribe(subjects.log_chunks("t", "r"), stream=subjects.STREAM_LOGS)
    found: list[LogChunk] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(found) < expected and asyncio.get_running_loop().time() < deadline:
        try:
            for message in await subscription.fetch(10, timeout=0.5):
                found.append(codec.log_chunk_decoder.decode(message.data))
                await message.ack()
        except TimeoutError:
            pass
    return found


async def test_a_print_written_as_text_then_newline_arrives_as_one_line(js: JetStreamContext) -> None:
    await natsio.setup_owned(js, "store", 1)
    output = RunOutput(js, "t", "r", 1, cap_bytes=1024)

    output.write("stdout", b"first line")
    await asyncio.sleep(FLUSH_SECONDS * 3)  # a slow process: the newline comes after a timed flush
    output.write("stdout", b"\nsecond line\n")
    output.end()
    await output.settled()

    chunks = await published(js, 1)
    assert [c.data for c in chunks] == ["first line\nsecond line\n"]


async def test_a_line_that_never_ends_still_goes_out_after_a_while(js: JetStreamContext) -> None:
    await natsio.setup_owned(js, "store", 1)
    output = RunOutput(js, "t", "r", 1, cap_bytes=1024)

    output.write("stdout", b"progress 10%")
    chunks = await published(js, 1, timeout=PARTIAL_LINE_SECONDS + 3)
    output.end()
    await output.settled()

    assert [c.data for c in chunks] == ["progress 10%"]


async def test_a_secret_value_is_hidden_also_when_it_is_written_across_two_chunks(js: JetStreamContext) -> None:
    await natsio.setup_owned(js, "store", 1)
    output = RunOutput(js, "t", "r", 1, cap_bytes=1024)
    output.hidden = ["s3cr3t-value"]

    output.write("stdout", b"token: s3cr")
    await asyncio.sleep(PARTIAL_LINE_SECONDS + FLUSH_SECONDS * 3)  # a timed flush between the halves
    output.write("stdout", b"3t-value and s3cr3t-value\nthe end: s3")
    output.end()
    await output.settled()

    text = "".join(c.data for c in await published(js, 2))
    assert text == "token: *** and ***\nthe end: s3"


async def test_a_print_whose_newline_comes_after_the_other_streams_output_stays_one_line(
    js: JetStreamContext,
) -> None:
    # stdout and stderr are separate pipes: a print's newline can reach the runner after stderr text
    await natsio.setup_owned(js, "store", 1)
    output = RunOutput(js, "t", "r", 1, cap_bytes=1024)

    output.write("stdout", b"first line")
    output.write("stderr", b"a warning\n")
    await asyncio.sleep(FLUSH_SECONDS * 3)  # a timed flush before the newline
    output.write("stdout", b"\nsecond line\n")
    output.end()
    await output.settled()

    chunks = await published(js, 2)
    assert [(c.stream, c.data) for c in chunks] == [("stderr", "a warning\n"), ("stdout", "first line\nsecond line\n")]


async def test_a_short_output_is_kept_for_the_outcome_and_not_published(js: JetStreamContext) -> None:
    await natsio.setup_owned(js, "store", 1)
    output = RunOutput(js, "t", "r", 1, cap_bytes=1024)
    output.hidden = ["s3cr3t-value"]

    output.system("GET http://example.test/ (timeout 30 s)")
    output.write("stdout", b"token s3cr3t-value\n")
    output.end(inline=True)
    await output.settled()

    assert [(c.seq, c.stream, c.data) for c in output.inline] == [
        (0, "system", "GET http://example.test/ (timeout 30 s)\n"),
        (1, "stdout", "token ***\n"),
    ]
    assert output.chunks == 2
    assert await published(js, 1, timeout=1.0) == []


async def test_output_too_long_for_the_outcome_is_published(js: JetStreamContext) -> None:
    await natsio.setup_owned(js, "store", 1)
    output = RunOutput(js, "t", "r", 1, cap_bytes=64 * 1024)

    output.write("stdout", b"x" * (MAX_INLINE_LOG_BYTES + 1))
    output.end(inline=True)
    await output.settled()

    assert output.inline == []
    assert [len(c.data) for c in await published(js, 1)] == [MAX_INLINE_LOG_BYTES + 1]


async def test_output_already_partly_published_is_not_kept_for_the_outcome(js: JetStreamContext) -> None:
    await natsio.setup_owned(js, "store", 1)
    output = RunOutput(js, "t", "r", 1, cap_bytes=1024)

    output.write("stdout", b"first\n")
    await asyncio.sleep(FLUSH_SECONDS * 3)  # a timed flush publishes the first line
    output.write("stdout", b"second\n")
    output.end(inline=True)
    await output.settled()

    assert output.inline == []
    assert [c.data for c in await published(js, 2)] == ["first\n", "second\n"]


async def test_output_kept_for_an_outcome_that_cannot_carry_it_is_published(js: JetStreamContext) -> None:
    await natsio.setup_owned(js, "store", 1)
    output = RunOutput(js, "t", "r", 1, cap_bytes=1024)

    output.system("200 OK in 1.0 ms, 11 bytes")
    output.end(inline=True)
    output.publish_inline()
    await output.settled()

    assert output.inline == []
    assert [c.data for c in await published(js, 1)] == ["200 OK in 1.0 ms, 11 bytes\n"]
