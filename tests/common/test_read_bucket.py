"""Reading a whole bucket at start (the store's state, the scheduler's timers) against a real server."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext
from nats.js import api as js_api

from services.common.natsio import read_bucket


async def _read(js: JetStreamContext, bucket: str, keys: str = ">") -> dict[str, bytes]:
    return {key: value async for key, value in read_bucket(js, bucket, keys)}


async def test_only_the_latest_live_value_of_each_key_is_read(js: JetStreamContext) -> None:
    kv = await js.create_key_value(js_api.KeyValueConfig(bucket="things", history=5))
    await kv.put("a", b"1")
    await kv.put("a", b"2")
    await kv.put("b.x", b"3")
    await kv.put("c", b"4")
    await kv.delete("c")
    await kv.put("d", b"5")
    await kv.purge("d")  # the bucket's last message is a purge marker

    assert await _read(js, "things") == {"a": b"2", "b.x": b"3"}
    assert await _read(js, "things", "b.*") == {"b.x": b"3"}


async def test_an_empty_or_wholly_deleted_bucket_ends_at_once(js: JetStreamContext) -> None:
    kv = await js.create_key_value(js_api.KeyValueConfig(bucket="empty"))
    assert await asyncio.wait_for(_read(js, "empty"), timeout=5) == {}
    await kv.put("gone", b"x")
    await kv.delete("gone")
    assert await asyncio.wait_for(_read(js, "empty"), timeout=5) == {}
    assert await asyncio.wait_for(_read(js, "empty", "nothing.*"), timeout=5) == {}


async def test_many_readers_at_once_each_see_every_key(js: JetStreamContext) -> None:
    # A restart reads while the machine is busy; every reader must see the whole bucket.
    kv = await js.create_key_value(js_api.KeyValueConfig(bucket="busy"))
    for i in range(50):
        await kv.put(f"k{i}", str(i).encode())
    results = await asyncio.gather(*[_read(js, "busy") for _ in range(100)])
    assert all(len(result) == 50 for result in results)
