"""Events into the Redis stream, off the response path: `emit()` appends, a task sends.

Every handler calls `emit(event)`, which only appends to a bounded deque: it never waits and
never raises, so playback does not notice Redis at all. One background task serializes the
events and sends them in batches of up to `batch`, each one EVAL of a script that runs
`XADD stream MAXLEN ~ maxlen * event <json>` for each event, in order. Redis runs a command
only once it has arrived whole and runs a script without interleaving anything, so a batch
lands whole or not at all (like MULTI/EXEC), and a failed one goes back to the front of the
buffer to be retried whole (after a lost reply it may land twice: the event `id` lets consumers
tell). Short of a full batch the sender waits 50 ms for one to gather (a round trip costs about
ten events); under load it pipelines up to 16 batches per round trip, because a busy event
loop, not Redis, sets how many round trips per second the sender gets.

Redis away or slow (socket timeouts of 1 s): events wait in the buffer and are sent on
reconnect (retries back off from 0.1 s to 2 s). A full buffer drops its oldest events, counted
in `stats()["dropped"]` and logged at most every 10 s with the count.

Why a script rather than MULTI, XADD..., EXEC: the transaction answers two replies per event
(QUEUED, then the id in EXEC's array), and reading them through redis-py costs ~20 µs each on
the origin's own loop, 3-4x the rest of an event's cost (bench/analytics_bench.py). The script
answers one integer per batch. The command is packed here; the connection, its URL (auth, db,
TLS) and its timeouts are redis-py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any, Protocol

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError, ResponseError

from ..config import Config
from .events import STREAM, Event, Served, new_event_id, served_json

log = logging.getLogger("mediaorigin.analytics")

SOCKET_TIMEOUT = 1.0
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 2.0
DROP_WARNING_INTERVAL = 10.0
LINGER = 0.05  # short of a full batch, the sender waits this long for one to gather
COMMANDS_PER_TRIP = 16  # batches (one EVAL each) pipelined in one round trip under load
# ARGV[1] is MAXLEN, then one JSON document per event; answers how many it added.
XADD_ALL = (b"for i = 2, #ARGV do redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', "
            b"'event', ARGV[i]) end return #ARGV - 1")


class Emitter(Protocol):
    """What the origin and the beacon route use: `EventEmitter`, or `NullEmitter` when off.
    `emit` takes an Event, or an origin event as a `Served` tuple (the hot path's form)."""

    def emit(self, event: Event | Served) -> None: ...
    async def start(self) -> None: ...
    async def stop(self, drain_timeout: float = 5.0) -> None: ...
    def stats(self) -> dict[str, Any]: ...


EMITTER = web.AppKey("analytics_emitter", Emitter)


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


class EventEmitter:
    def __init__(self, redis_url: str, *, stream: str = STREAM, maxlen: int = 1_000_000,
                 buffer: int = 100_000, batch: int = 500) -> None:
        if buffer < 1 or batch < 1 or maxlen < 1:
            raise ValueError("buffer, batch and maxlen must be at least 1")
        self.redis_url = redis_url
        self.stream = stream
        self.maxlen = maxlen
        self.capacity = buffer
        self.batch = batch
        # Everything of the EVAL after its length but the JSON documents.
        self._eval_args = b"".join(_bulk(a) for a in (
            b"EVAL", XADD_ALL, b"1", stream.encode(), str(maxlen).encode()))
        # Events, Served tuples, or their JSON once encoded (a batch put back for a retry).
        self._pending: deque[Event | Served | bytes] = deque()
        self._inflight = 0  # taken by the sender; counted against the capacity too
        self._sent = self._dropped = self._errors = 0
        self._connected = False
        self._wake = asyncio.Event()
        self._idle = False  # the sender waits on _wake
        self._stopping = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._redis: aioredis.Redis | None = None
        self._unreported = 0  # drops not logged yet
        self._warned_at = -DROP_WARNING_INTERVAL

    # -- the response path --------------------------------------------------------------------

    def emit(self, event: Event | Served) -> None:
        """Buffer one event (never waits, never raises); the oldest goes when full."""
        if self._closed:
            self._drop(1)
            return
        if len(self._pending) + self._inflight >= self.capacity:
            if not self._pending:  # everything buffered is in flight: this one cannot wait
                self._drop(1)
                return
            self._pending.popleft()
            self._drop(1)
        self._pending.append(event)
        if self._idle:
            self._idle = False
            self._wake.set()

    def _drop(self, n: int) -> None:
        self._dropped += n
        self._unreported += n
        self._report_drops()

    def _report_drops(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._unreported and (force or now - self._warned_at >= DROP_WARNING_INTERVAL):
            log.warning("analytics: %d events dropped (buffer of %d full, or stopped with "
                        "Redis away; %d dropped in all)", self._unreported, self.capacity,
                        self._dropped)
            self._unreported = 0
            self._warned_at = now

    def stats(self) -> dict[str, Any]:
        return {"sent": self._sent, "buffered": len(self._pending) + self._inflight,
                "dropped": self._dropped, "redis_errors": self._errors,
                "connected": self._connected}

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        # Connects lazily, on the first batch: an origin that serves nothing never dials.
        self._redis = aioredis.from_url(self.redis_url, socket_timeout=SOCKET_TIMEOUT,
                                        socket_connect_timeout=SOCKET_TIMEOUT)
        self._task = asyncio.create_task(self._run(), name="analytics-emitter")

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Send what can be sent within `drain_timeout` s (a failed send ends the drain at
        once); what is left is counted as dropped."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), drain_timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        self._closed = True
        left = len(self._pending) + self._inflight  # in flight: cut off by the timeout
        if left:
            self._pending.clear()
            self._inflight = 0
            self._drop(left)
        self._report_drops(force=True)
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # -- the sender ---------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._idle = True
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._pending) < self.batch and not self._stopping:
                # Let a batch gather: a round trip costs ~10x an event (stop() cuts it).
                await self._sleep(LINGER)
            n = min(self.batch * COMMANDS_PER_TRIP, len(self._pending))
            self._inflight = n
            docs = self._encode([self._pending.popleft() for _ in range(n)])
            try:
                retry, error = await self._send(docs)
            except Exception as e:  # a bug: the sender never dies, nothing is lost
                log.error("analytics: sending events failed", exc_info=e)
                retry, error = docs[len(docs) - self._inflight:], e
            self._inflight = 0
            if error is None:
                delay = BACKOFF_FIRST
                if not self._connected:
                    if self._errors:
                        log.info("analytics: Redis is back; %d events buffered",
                                 len(self._pending))
                    self._connected = True
                continue
            self._pending.extendleft(reversed(retry))  # retried whole, in order, same ids
            self._errors += 1
            if self._connected or self._errors == 1:
                log.warning("analytics: Redis unreachable or failing (%s: %s); events are "
                            "buffered (up to %d) and sent on reconnect", type(error).__name__,
                            error, self.capacity)
            self._connected = False
            if self._stopping:
                return  # stop() counts what is left
            self._report_drops()
            await self._sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _sleep(self, seconds: float) -> None:
        """A backoff pause that stop() cuts short."""
        self._wake.clear()
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _encode(self, items: list[Event | Served | bytes]) -> list[bytes]:
        """Each event's JSON, made once (a retry sends the same bytes, so the same id); one
        that cannot be encoded (a bug) is dropped, counted, not retried."""
        docs: list[bytes] = []
        for item in items:
            if type(item) is bytes:
                docs.append(item)
                continue
            try:
                doc = served_json(item, new_event_id()) if type(item) is tuple \
                    else item.to_json()  # type: ignore[union-attr]
            except (TypeError, ValueError, AttributeError) as exc:
                log.error("analytics: event %r cannot be encoded (%s); dropped", item, exc)
                self._inflight -= 1
                self._drop(1)
                continue
            docs.append(doc.encode())
        return docs

    async def _send(self, docs: list[bytes]) -> tuple[list[bytes], Exception | None]:
        """One round trip of up to COMMANDS_PER_TRIP batches; returns what is to be retried
        (every batch not confirmed, in order) and the first error."""
        if not docs:
            return [], None
        size = self.batch
        chunks = [docs[i:i + size] for i in range(0, len(docs), size)]
        # EVAL XADD_ALL 1 stream maxlen json... per batch: each added whole or not at all.
        packed = b"".join([b"".join([b"*%d\r\n" % (len(c) + 5), self._eval_args,
                                     *[_bulk(doc) for doc in c]]) for c in chunks])
        assert self._redis is not None
        pool = self._redis.connection_pool
        try:
            conn = await pool.get_connection()
        except (RedisError, OSError, TimeoutError) as e:
            return docs, e
        retry: list[bytes] = []
        error: Exception | None = None
        read = 0  # batches whose reply was read
        try:
            await conn.send_packed_command(packed, check_health=False)
            for chunk in chunks:
                try:
                    added = await conn.read_response()
                except ResponseError as e:  # the script failed; the connection is fine
                    added = e
                read += 1
                if added == len(chunk):
                    self._sent += len(chunk)
                    self._inflight -= len(chunk)
                else:
                    retry += chunk
                    error = error or (added if isinstance(added, Exception) else RedisError(
                        f"the batch script added {added!r} of {len(chunk)} events"))
        except BaseException as e:
            await conn.disconnect()  # replies may be left unread: never reuse it
            if not isinstance(e, Exception):
                raise  # cancelled by stop(): it counts what was not confirmed
            for chunk in chunks[read:]:  # sent, perhaps added, unconfirmed: retried
                retry += chunk
            error = error or e
        finally:
            await pool.release(conn)
        return retry, error


class NullEmitter:
    """`[analytics] enabled = false`: the same interface, nothing kept."""

    def emit(self, event: Event | Served) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self, drain_timeout: float = 5.0) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"sent": 0, "buffered": 0, "dropped": 0, "redis_errors": 0, "connected": False}


def emitter_from_config(config: Config) -> Emitter:
    """`[analytics]` with `[redis] url`: an EventEmitter, or a NullEmitter when disabled."""
    an = config.analytics
    if not an.enabled:
        return NullEmitter()
    return EventEmitter(config.redis.url, maxlen=an.stream_maxlen, buffer=an.buffer)
