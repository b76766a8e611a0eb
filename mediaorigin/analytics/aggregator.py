"""The aggregator: reads `mediaorigin:events` in a consumer group and keeps the aggregates.

Delivery is at-least-once (XREADGROUP, apply, XACK; entries of a dead consumer are taken
over with XAUTOCLAIM once idle for `claim_idle` seconds), counting is exactly-once: every
event is applied by one Lua script (apply.lua) that first sets `analytics:seen:{event id}`
NX and only then updates the aggregates, atomically. A redelivered event changes nothing.

Order matters for watched time (it is measured between a session's consecutive events), so
a consumer always finishes what it holds before reading new entries: its own pending entries
after a restart under the same name first, then idle entries of dead consumers, then new
ones. An event older than one already applied for its session still counts everywhere
except in watched time (see apply.lua; counted as `late`).

If Redis is away the loop backs off and retries; it never takes the process down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import keys
from .events import ORIGIN_EVENTS, PLAYER_EVENTS, STREAM

log = logging.getLogger("mediaorigin.analytics")

# Seconds of a media item, or None when unknown (live streams, unknown ids).
Durations = Callable[[str], Awaitable[float | None]]

APPLY_SCRIPT = resources.files(__package__).joinpath("apply.lua").read_text(encoding="utf-8")
_OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
_BLOCK = 1.0  # seconds an idle XREADGROUP waits: bounds how long stop() takes
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0
_CHUNK = 100  # events per script run (one round trip; Redis is busy ~5 ms)
_KNOWN = frozenset(PLAYER_EVENTS) | frozenset(ORIGIN_EVENTS)
_FORGET_CONSUMERS = 24 * 3600.0  # idle consumers without pending entries are removed


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Aggregator:
    def __init__(self, redis_url: str, *, stream: str = STREAM, group: str = "aggregators",
                 consumer: str | None = None, batch: int = 500, claim_idle: float = 30.0,
                 durations: Durations | None = None, heartbeat: float = 10.0,
                 seen_ttl: int = keys.SEEN_TTL) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.stream = stream
        self.group = group
        self.consumer = consumer or default_consumer()
        self.batch = batch
        self.claim_idle = claim_idle
        self.max_gap = 2 * heartbeat  # a longer silence is not counted as watched
        self.seen_ttl = seen_ttl
        self._durations = durations
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            redis_url, decode_responses=True, protocol=2, retry=Retry(NoBackoff(), 1),
            socket_connect_timeout=2, socket_timeout=_BLOCK + 5)
        self._script = self._redis.register_script(APPLY_SCRIPT)
        self._group_ready = False
        self._own_pending = True  # first, what this consumer name held before a restart
        self._reclaim_every = min(max(claim_idle / 2, 0.05), 5.0)
        self._next_reclaim = 0.0
        self._reclaim_cursor = "0-0"
        self._next_forget = 0.0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._outage_since: float | None = None
        self.applied = 0  # events counted (duplicates excluded), for logs and tests
        self.duplicates = 0
        self.malformed = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("aggregator already started")
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="analytics-aggregator")

    async def stop(self, grace: float = 5.0) -> None:
        """Finish the batch in hand (up to `grace` seconds), then close. What is cut short
        stays pending and is taken over later, counted once."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except TimeoutError:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._redis.aclose()

    async def _run(self) -> None:
        delay = _BACKOFF_FIRST
        while not self._stopping.is_set():
            try:
                await self.run_once(block=_BLOCK)
            except _OUTAGE_ERRORS as e:
                self._outage(e)
            except ResponseError as e:
                if str(e).startswith("NOGROUP"):  # Redis restarted empty: make it again
                    self._group_ready = False
                    continue
                log.exception("unexpected Redis error while aggregating analytics")
            except Exception:
                log.exception("unexpected error while aggregating analytics")
            else:
                self._recovered()
                delay = _BACKOFF_FIRST
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    # -- one step -----------------------------------------------------------------------------

    async def run_once(self, block: float | None = None) -> int:
        """Read one batch, apply it and acknowledge it; returns the entries handled.
        `block`: seconds to wait for new entries when there are none (None: don't wait)."""
        if not self._group_ready:
            await self._ensure_group()
        entries = await self._next(block)
        if not entries:
            return 0
        for start in range(0, len(entries), _CHUNK):
            await self._apply_chunk(entries[start:start + _CHUNK])
        await self._redis.xack(self.stream, self.group, *[msg_id for msg_id, _ in entries])
        return len(entries)

    async def _next(self, block: float | None) -> list[tuple[str, dict[str, str] | None]]:
        if self._own_pending:
            reply = await self._redis.xreadgroup(self.group, self.consumer, {self.stream: "0"},
                                                 count=self.batch)
            entries = _entries(reply)
            if entries:
                return entries
            self._own_pending = False
        now = time.monotonic()
        if now >= self._next_reclaim:
            claimed = await self._reclaim()
            if claimed:
                return claimed
            self._next_reclaim = now + self._reclaim_every
            if now >= self._next_forget:
                self._next_forget = now + 600.0
                await self._forget_consumers()
        reply = await self._redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=self.batch,
            block=None if block is None else max(1, int(block * 1000)))
        return _entries(reply)

    async def _reclaim(self) -> list[tuple[str, dict[str, str] | None]]:
        """Entries idle for claim_idle (their consumer died), oldest first."""
        cursor = self._reclaim_cursor
        while True:
            reply = await self._redis.xautoclaim(
                self.stream, self.group, self.consumer, int(self.claim_idle * 1000),
                start_id=cursor, count=self.batch)
            cursor, claimed = reply[0], reply[1]
            entries = [(msg_id, fields) for msg_id, fields in claimed if msg_id is not None]
            if entries or cursor == "0-0":
                self._reclaim_cursor = cursor
                if entries:
                    log.info("analytics: took over %d events of a stopped consumer",
                             len(entries))
                return entries

    async def _forget_consumers(self) -> None:
        """Consumers of processes long gone (host-pid names pile up) are removed, once they
        hold nothing."""
        try:
            for info in await self._redis.xinfo_consumers(self.stream, self.group):
                if info["name"] != self.consumer and int(info["pending"]) == 0 and \
                        int(info["idle"]) > _FORGET_CONSUMERS * 1000:
                    await self._redis.xgroup_delconsumer(self.stream, self.group,
                                                         info["name"])
        except ResponseError as e:
            log.debug("could not list analytics consumers: %s", e)

    async def _apply_chunk(self, entries: Sequence[tuple[str, dict[str, str] | None]]) -> None:
        """Apply up to _CHUNK entries with one script run (one round trip)."""
        events = []
        for msg_id, fields in entries:
            found = _decode(msg_id, fields)
            if found is None:
                self.malformed += 1
            else:
                events.append(found)
        if not events:
            return
        durations = await self._lookup({e["media_id"] for _, e in events})
        failed = 0
        try:
            applied = await self._run_script(events, durations)
        except ResponseError as e:
            # An event the script cannot take must not block the stream: one at a time,
            # skipping (and logging) what fails. (A script error does not roll back what
            # the failing event wrote before it; events are validated to make that moot.)
            log.error("analytics: a batch failed (%s); applying its events one by one", e)
            applied = 0
            for event in events:
                try:
                    applied += await self._run_script([event], durations)
                except ResponseError as one:
                    log.error("analytics: event %s not applied: %s", event[1]["id"], one)
                    failed += 1
        self.applied += applied
        self.malformed += failed
        self.duplicates += len(events) - failed - applied

    async def _run_script(self, events: list[tuple[str, dict[str, Any]]],
                          durations: dict[str, float | None]) -> int:
        args: list[Any] = [self.seen_ttl, keys.DAY_TTL, keys.SESSION_TTL, repr(self.max_gap),
                           keys.BUCKET, repr(keys.LIVE_WINDOW)]
        for raw, event in events:
            duration = durations.get(event["media_id"])
            max_seconds = keys.MAX_HEAT_SECONDS
            if duration and duration > 0:
                max_seconds = min(max_seconds, math.ceil(duration))
            args += [raw, keys.day_of(event["timestamp"]),
                     "" if duration is None else repr(duration), max_seconds]
        return int(await self._script(args=args))

    async def _lookup(self, media_ids: set[str]) -> dict[str, float | None]:
        found: dict[str, float | None] = {}
        for media_id in media_ids:
            if self._durations is None or keys.is_live(media_id):
                found[media_id] = None
                continue
            try:
                found[media_id] = await self._durations(media_id)
            except Exception:
                log.warning("analytics: no duration for %s (completion from `ended` only)",
                            media_id, exc_info=True)
                found[media_id] = None
        return found

    # -- plumbing ---------------------------------------------------------------------------

    async def _ensure_group(self) -> None:
        try:
            # From 0: events written before the first aggregator ever ran still count.
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if not str(e).startswith("BUSYGROUP"):
                raise
        self._group_ready = True

    def _outage(self, error: BaseException) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("analytics: Redis unavailable (%s); retrying with backoff", error)

    def _recovered(self) -> None:
        if self._outage_since is not None:
            log.warning("analytics: Redis reachable again after %.1f s",
                        time.monotonic() - self._outage_since)
            self._outage_since = None
            self._group_ready = False  # the server may have restarted empty
            self._own_pending = True
            self._reclaim_cursor = "0-0"


def _entries(reply: Any) -> list[tuple[str, dict[str, str] | None]]:
    return [(msg_id, fields) for _stream, items in reply or [] for msg_id, fields in items]


_STRINGS = ("session", "user", "quality", "error", "country", "device")
_NUMBERS = ("position", "buffering_duration", "bandwidth", "startup_time", "bytes")
_YEAR_10000 = 253402300800.0  # unix seconds; beyond, no yyyymmdd day


def _decode(msg_id: str, fields: dict[str, str] | None) -> tuple[str, dict[str, Any]] | None:
    """(raw JSON, parsed) of the entry's event (see events.Event), or None (logged) when it
    is not one the script can count."""
    try:
        if not fields or "event" not in fields:
            raise ValueError("no `event` field")
        raw = fields["event"]
        event = json.loads(raw, parse_constant=_no_constant)
        if not isinstance(event, dict):
            raise ValueError("the event is not a JSON object")
        if event.get("type") not in _KNOWN:
            raise ValueError(f"unknown event type {event.get('type')!r}")
        media_id = event.get("media_id")
        if not isinstance(media_id, str) or not keys.MEDIA_ID.match(media_id):
            raise ValueError("bad media_id")
        if not isinstance(event.get("id"), str) or not event["id"]:
            raise ValueError("no event id")
        if not _finite(event.get("timestamp")) or not 0 < event["timestamp"] < _YEAR_10000:
            raise ValueError("bad timestamp")
        for name in _STRINGS:
            if event.get(name) is not None and not isinstance(event[name], str):
                raise ValueError(f"bad {name}")
        for name in _NUMBERS:
            if event.get(name) is not None and not _finite(event[name]):
                raise ValueError(f"bad {name}")
    except ValueError as e:  # json.JSONDecodeError is one
        log.warning("analytics: skipping stream entry %s: %s", msg_id, e)
        return None
    return raw, event


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number the aggregates can hold")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)
