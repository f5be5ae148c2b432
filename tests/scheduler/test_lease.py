"""The scheduler's lease against a real nats-server: it rides out a restart, and expires on time."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, replace
from datetime import timedelta

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.kv import KeyValue

from proto import streams, subjects
from services.common.lease import SAFETY_MARGIN, LeaderLease, LeaseLost, keep_lease
from taskmesh.processes import NatsServer


async def _bucket(js: JetStreamContext, ttl: timedelta = streams.LEASE_TTL) -> KeyValue:
    config = replace(streams.buckets()[subjects.BUCKET_LEASES].config, ttl=ttl.total_seconds())
    return await js.create_key_value(config=js_api.KeyValueConfig(**asdict(config)))


async def _connected(nc: Client) -> None:
    deadline = time.monotonic() + 10
    while not nc.is_connected:
        assert time.monotonic() < deadline, "client did not reconnect"
        await asyncio.sleep(0.05)


async def test_a_renewal_failing_while_nats_restarts_keeps_the_leadership(
    nc: Client, js: JetStreamContext, nats_server: NatsServer
) -> None:
    kv = await _bucket(js)
    leader, standby = LeaderLease(kv, "scheduler", "leader"), LeaderLease(kv, "scheduler", "standby")
    assert await leader.try_acquire()
    await asyncio.to_thread(nats_server.stop)
    renewing = asyncio.create_task(leader.renew())
    await asyncio.sleep(1.5)
    assert not renewing.done()  # retrying, not giving up on the first failure
    await asyncio.to_thread(nats_server.start)
    assert await asyncio.wait_for(renewing, 10)
    await _connected(nc)
    assert not await standby.try_acquire()
    assert await leader.renew()
    assert leader.valid_for() > (streams.LEASE_TTL - SAFETY_MARGIN).total_seconds() - 1


async def test_a_leader_that_cannot_renew_gives_up_before_its_key_can_expire(
    nc: Client, js: JetStreamContext, nats_server: NatsServer
) -> None:
    kv = await _bucket(js, ttl=timedelta(seconds=4))
    leader = LeaderLease(kv, "scheduler", "leader")
    assert await leader.try_acquire()
    acquired = time.monotonic()
    await asyncio.to_thread(nats_server.stop)
    assert not await asyncio.wait_for(leader.renew(), 10)
    assert time.monotonic() - acquired < 4 - SAFETY_MARGIN.total_seconds() + 0.3
    assert leader.valid_for() == 0
    await asyncio.to_thread(nats_server.start)
    await _connected(nc)


async def test_a_leader_that_stops_renewing_is_replaced_after_about_the_ttl(js: JetStreamContext) -> None:
    kv = await _bucket(js, ttl=timedelta(seconds=3))
    leader, standby = LeaderLease(kv, "scheduler", "leader"), LeaderLease(kv, "scheduler", "standby")
    assert await leader.try_acquire()
    acquired = time.monotonic()
    while not await standby.try_acquire():
        assert time.monotonic() - acquired < 6, "the standby never took over"
        await asyncio.sleep(0.1)
    assert 2.5 <= time.monotonic() - acquired < 6
    assert not await leader.renew()  # the old leader learns it at its next renewal


async def test_a_renewal_whose_reply_was_lost_keeps_the_lease_it_wrote(js: JetStreamContext) -> None:
    kv = await _bucket(js)
    leader = LeaderLease(kv, "scheduler", "leader")
    assert await leader.try_acquire()
    stale = leader.revision
    assert await leader.renew()
    leader.revision = stale  # as if the reply of that renewal never came back
    assert await leader.renew()
    assert (await kv.get("scheduler")).revision == leader.revision


def test_the_lease_ttl_outlasts_an_election() -> None:
    assert streams.LEASE_TTL.total_seconds() >= 10
    assert streams.buckets()[subjects.BUCKET_LEASES].config.ttl == streams.LEASE_TTL.total_seconds()


async def test_the_holder_writes_nothing_while_its_connection_is_down_and_renews_once_back(
    nc: Client, js: JetStreamContext, nats_server: NatsServer
) -> None:
    # While its connection is down its ping has no responders: a standby may take the lease at
    # once, and writes buffered meanwhile would land after that. The clock alone says "valid".
    kv = await _bucket(js)
    leader = LeaderLease(kv, "store", "leader", connection=nc)
    assert await leader.try_acquire()
    leader.check()

    await asyncio.to_thread(nats_server.stop)
    deadline = time.monotonic() + 10
    while nc.is_connected:
        assert time.monotonic() < deadline, "the client never noticed the server stop"
        await asyncio.sleep(0.05)
    with pytest.raises(LeaseLost):
        leader.check()

    await asyncio.to_thread(nats_server.start)
    await _connected(nc)
    leader.check()
    assert leader.reconnected_since_renewal()  # the keeper renews at once
    assert await leader.renew()
    assert not leader.reconnected_since_renewal()


async def test_the_keeper_finds_a_lease_taken_while_the_holder_was_disconnected(
    nc: Client, js: JetStreamContext, nats_server: NatsServer
) -> None:
    kv = await _bucket(js)
    leader = LeaderLease(kv, "store", "leader", connection=nc)
    standby = LeaderLease(kv, "store", "standby")
    assert await leader.try_acquire()
    until, stop = asyncio.Event(), asyncio.Event()
    keeper = asyncio.create_task(keep_lease(leader, until, stop))
    try:
        await asyncio.to_thread(nats_server.stop)
        await asyncio.to_thread(nats_server.start)
        await _connected(nc)
        assert await standby.take_from("leader")  # its ping found no responders meanwhile

        await asyncio.wait_for(until.wait(), 10)
        assert leader.valid_for() == 0
        with pytest.raises(LeaseLost):
            leader.check()
        standby.check()
    finally:
        stop.set()
        await keeper
