"""Concurrent streams per user against the private redis-server (`redis_url`).

Slot expiry follows the `now` the caller passes, so tests step time by hand (ttl 0.5 s);
only the Redis key's own expiry needs real time, and that wait stays under a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from mediaorigin.auth.concurrency import StreamSlots

TTL = 0.5
T0 = 1_750_000_000.0


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def slots(redis: aioredis.Redis) -> StreamSlots:
    return StreamSlots(redis, limit=2, ttl=TTL)


async def test_third_session_is_refused(slots: StreamSlots, redis: aioredis.Redis) -> None:
    assert await slots.acquire("u1", "s1", T0)
    assert await slots.acquire("u1", "s2", T0)
    assert not await slots.acquire("u1", "s3", T0)
    assert await slots.active("u1", T0) == 2
    # a session that holds a slot may acquire again (page reload, second request)
    assert await slots.acquire("u1", "s2", T0 + 0.1)
    # users are independent
    assert await slots.acquire("u2", "s3", T0)
    assert await redis.zrange("mediaorigin:streams:u1", 0, -1) == ["s1", "s2"]
    assert await redis.zscore("mediaorigin:streams:u1", "s2") == T0 + 0.1 + TTL


async def test_heartbeat_keeps_the_slot(slots: StreamSlots) -> None:
    assert await slots.acquire("u1", "s1", T0)
    assert await slots.acquire("u1", "s2", T0)
    assert await slots.heartbeat("u1", "s1", T0 + 0.4)
    # s2 stopped heartbeating at T0 and lapses at T0 + ttl; s1 holds until T0 + 0.9
    assert await slots.active("u1", T0 + 0.49) == 2
    assert await slots.active("u1", T0 + TTL) == 1
    assert not await slots.heartbeat("u1", "s2", T0 + 0.6)  # lost: heartbeat never re-takes
    assert await slots.acquire("u1", "s3", T0 + 0.6)
    assert not await slots.acquire("u1", "s4", T0 + 0.6)
    assert await slots.heartbeat("u1", "s1", T0 + 0.8)
    assert await slots.active("u1", T0 + 0.8) == 2


async def test_slots_free_after_ttl(slots: StreamSlots) -> None:
    assert await slots.acquire("u1", "s1", T0)
    assert await slots.acquire("u1", "s2", T0)
    assert not await slots.acquire("u1", "s3", T0 + TTL - 0.001)
    assert await slots.acquire("u1", "s3", T0 + TTL)  # expiry is exclusive
    assert await slots.acquire("u1", "s4", T0 + TTL)
    assert await slots.active("u1", T0 + TTL) == 2


async def test_release_frees_at_once(slots: StreamSlots) -> None:
    assert await slots.acquire("u1", "s1", T0)
    assert await slots.acquire("u1", "s2", T0)
    await slots.release("u1", "s1")
    await slots.release("u1", "never-held")
    assert await slots.active("u1", T0) == 1
    assert not await slots.heartbeat("u1", "s1", T0)
    assert await slots.acquire("u1", "s3", T0)
    assert not await slots.acquire("u1", "s1", T0)


async def test_key_expires_with_its_last_slot(slots: StreamSlots, redis: aioredis.Redis) -> None:
    key = StreamSlots.key("u1")
    assert await slots.acquire("u1", "s1", time.time())
    assert 0 < await redis.pttl(key) <= TTL * 1000
    await asyncio.sleep(TTL + 0.1)  # Redis' own clock: the only real wait in this module
    assert await redis.exists(key) == 0
    assert await slots.active("u1", time.time()) == 0
    assert await slots.acquire("u1", "s2", time.time())


async def test_concurrent_acquires_are_atomic(redis: aioredis.Redis) -> None:
    slots = StreamSlots(redis, limit=3, ttl=60)
    results = await asyncio.gather(*(slots.acquire("u1", f"s{i}", T0) for i in range(20)))
    assert sum(results) == 3
    assert await slots.active("u1", T0) == 3


async def test_concurrent_acquires_from_separate_clients(redis_url: str) -> None:
    """Several origin processes: one connection each, racing for the same user's slots."""
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(5)]
    try:
        racers = [StreamSlots(c, limit=3, ttl=60) for c in clients]
        calls = [racers[i % 5].acquire("u1", f"s{i}", T0) for i in range(20)]
        assert sum(await asyncio.gather(*calls)) == 3
    finally:
        for c in clients:
            await c.aclose()


async def test_validates(redis: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="limit"):
        StreamSlots(redis, limit=0)
    with pytest.raises(ValueError, match="ttl"):
        StreamSlots(redis, limit=1, ttl=0)
