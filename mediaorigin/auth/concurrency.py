"""Concurrent streams per user, shared by every origin process through Redis.

One sorted set per user, `mediaorigin:streams:<user>`: members are playback sessions, scores
the unix time at which each slot expires unless the player heartbeats. Every change runs as
one Lua script, so two origins racing for a user's last slot cannot both win. The key itself
expires with its last slot, so users who stop watching leave nothing behind.

Scores come from the caller's `now` (time.time() in production, so origin clocks should
agree to well within `ttl`); the key's own expiry runs on Redis' clock.
"""

from __future__ import annotations

import math

import redis.asyncio as aioredis

KEY_PREFIX = "mediaorigin:streams:"

# KEYS[1]: the user's set. ARGV: session, now, expiry, limit, key ttl (ms).
# Drop expired slots; refresh the session's slot if it has one; otherwise take a free slot
# while fewer than `limit` are held. limit 0 therefore only refreshes (heartbeat).
_TAKE_OR_REFRESH = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not held and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class StreamSlots:
    """At most `limit` sessions per user; a slot lapses `ttl` seconds after its last refresh."""

    def __init__(self, redis: aioredis.Redis, limit: int, ttl: float = 60) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        if not ttl > 0:
            raise ValueError(f"ttl must be positive, got {ttl!r}")
        self.redis = redis
        self.limit = limit
        self.ttl = float(ttl)
        self._key_ttl_ms = max(1, math.ceil(self.ttl * 1000))
        self._script = redis.register_script(_TAKE_OR_REFRESH)

    async def acquire(self, user: str, session: str, now: float) -> bool:
        """Take a slot for `session` (or refresh the one it holds); False when all are taken."""
        return await self._run(user, session, now, self.limit)

    async def heartbeat(self, user: str, session: str, now: float) -> bool:
        """Keep the session's slot for another `ttl`; False when it has lapsed or was released
        (call `acquire` to try for a slot again)."""
        return await self._run(user, session, now, 0)

    async def release(self, user: str, session: str) -> None:
        await self.redis.zrem(self.key(user), session)

    async def active(self, user: str, now: float) -> int:
        """Sessions holding an unexpired slot at `now`."""
        return int(await self.redis.zcount(self.key(user), f"({now!r}", "+inf"))

    @staticmethod
    def key(user: str) -> str:
        return KEY_PREFIX + user

    async def _run(self, user: str, session: str, now: float, limit: int) -> bool:
        now = float(now)
        args = [session, repr(now), repr(now + self.ttl), limit, self._key_ttl_ms]
        return bool(await self._script(keys=[self.key(user)], args=args))
