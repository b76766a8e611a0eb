"""Jobs on Redis Streams, shared by every `mediaorigin worker` process.

Delivery is at-least-once. A message is acknowledged only once its handler has returned or
raised (the pipeline records failures itself); a job cut short by shutdown or by its worker's
death stays pending and another worker takes it over with XAUTOCLAIM once it has been idle
for `claim_idle_ms`. A running job's heartbeat keeps re-claiming the job's own message so
its idle time stays low: a healthy hour-long transcode is never stolen.

Two streams give two priorities: `<stream>:high` (priority > 0) is always read first.
Acknowledged messages are deleted as well, so the streams hold only unfinished jobs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .queue import Handler, QueuedJob

log = logging.getLogger("mediaorigin.jobs")

OnDead = Callable[[QueuedJob, str], Awaitable[None]]

# Errors that mean "Redis is unreachable right now": back off and retry, never crash.
_OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
_BLOCK_MS = 1000  # bounds how long an idle worker takes to notice stop()
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 2.0


@dataclass(frozen=True)
class _Message:
    """A message this consumer holds in a stream's pending list."""

    stream: str
    msg_id: str
    fields: dict[str, str] | None
    attempt: int


def default_consumer_name() -> str:
    """hostname-pid-random: unique per process, so a restarted worker never reuses a name."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisStreamQueue:
    """A JobQueue on two Redis Streams read through one consumer group."""

    def __init__(
        self,
        redis_url: str,
        stream: str = "mediaorigin:jobs",
        group: str = "workers",
        consumer: str | None = None,
        concurrency: int = 1,
        claim_idle_ms: int = 30000,
        heartbeat_ms: int = 10000,
        max_deliveries: int = 5,
        on_dead: OnDead | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if not 0 < heartbeat_ms < claim_idle_ms:
            # Otherwise a running job looks dead between two heartbeats and gets stolen.
            raise ValueError(
                f"heartbeat_ms ({heartbeat_ms}) must be positive and below "
                f"claim_idle_ms ({claim_idle_ms})"
            )
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1, got {max_deliveries}")
        self.stream = stream
        self.high_stream = f"{stream}:high"
        self.group = group
        self.consumer = consumer or default_consumer_name()
        self._concurrency = concurrency
        self._claim_idle_ms = claim_idle_ms
        self._heartbeat_s = heartbeat_ms / 1000
        self._max_deliveries = max_deliveries
        self._on_dead = on_dead
        # One retry without delay re-dials a connection the server closed; longer outages
        # are handled by our own loops with backoff and a single log line.
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            redis_url,
            decode_responses=True,
            protocol=2,
            retry=Retry(NoBackoff(), 1),
            socket_connect_timeout=2,
            socket_timeout=_BLOCK_MS / 1000 + 5,
        )
        self._streams = (self.high_stream, self.stream)  # read order: high first
        self._reclaim_every = min(max(claim_idle_ms / 2000, 0.05), 5.0)
        self._next_reclaim = 0.0
        self._reclaim_cursor = dict.fromkeys(self._streams, "0-0")
        self._held: dict[str, set[str]] = {s: set() for s in self._streams}
        self._running = 0
        self._groups_ready = False
        self._outage_since: float | None = None
        self._stopping = asyncio.Event()
        self._workers: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._closed = False

    # -- JobQueue ---------------------------------------------------------------------------

    async def submit(
        self, job_id: str, payload: dict[str, str] | None = None, priority: int = 0
    ) -> None:
        """XADD the job; raises redis errors to the caller (nothing was queued)."""
        stream = self.high_stream if priority > 0 else self.stream
        fields = {"job": job_id, "payload": json.dumps(payload or {}), "priority": str(priority)}
        await self._redis.xadd(stream, fields)

    async def start(self, handler: Handler) -> None:
        if self._workers or self._closed:
            raise RuntimeError("queue already started or stopped")
        self._stopping.clear()
        for i in range(self._concurrency):
            task = asyncio.create_task(self._work(handler), name=f"jobs-worker-{i}")
            self._workers.add(task)
        self._heartbeat = asyncio.create_task(self._beat(), name="jobs-heartbeat")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop reading; give running jobs `grace` seconds, then cancel them unacknowledged.

        Also closes the Redis client, so a stopped queue is finished (stopping twice is fine).
        """
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._workers:
            _, late = await asyncio.wait(self._workers, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers.clear()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        await self._redis.aclose()

    async def depth(self) -> int:
        """Pending (delivered, unacknowledged) plus lag (not yet delivered), both streams."""
        total = 0
        for stream in self._streams:
            try:
                pending = await self._redis.xpending(stream, self.group)
                groups = await self._redis.xinfo_groups(stream)
            except ResponseError:  # no stream or no group yet: nothing queued there
                continue
            total += int(pending["pending"])
            for info in groups:
                if info["name"] == self.group:
                    # lag is nil only after deletions past the group's position, which we
                    # never make (only acknowledged messages are deleted).
                    total += int(info.get("lag") or 0)
        return total

    def running(self) -> int:
        return self._running

    # -- workers ----------------------------------------------------------------------------

    async def _work(self, handler: Handler) -> None:
        """One worker: fetch, run, repeat; outages and surprises only cost a backoff."""
        delay = _BACKOFF_FIRST
        while not self._stopping.is_set():
            try:
                messages = await self._fetch()
            except _OUTAGE_ERRORS as e:
                self._outage(e)
                await self._pause(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            except ResponseError as e:
                if str(e).startswith("NOGROUP"):
                    # The server lost its data (restart without persistence) or someone
                    # deleted the group: recreate and read again.
                    self._groups_ready = False
                    continue
                log.exception("unexpected Redis error while reading jobs")
                await self._pause(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            except Exception:
                log.exception("unexpected error while reading jobs")
                await self._pause(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            self._recovered()
            delay = _BACKOFF_FIRST
            for i, message in enumerate(messages):
                if self._stopping.is_set():
                    # Not started: leave them pending for another worker to claim.
                    for rest in messages[i:]:
                        self._held[rest.stream].discard(rest.msg_id)
                    break
                await self._process(handler, message)

    async def _fetch(self) -> list[_Message]:
        """Next messages for this worker: a dead worker's job, else high, else normal."""
        if not self._groups_ready:
            await self._ensure_groups()
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_reclaim:
            self._next_reclaim = loop.time() + self._reclaim_every
            claimed = await self._reclaim()
            if claimed is not None:
                self._next_reclaim = 0.0  # there may be more: look again next time
                return [claimed]
        reply = await self._redis.xreadgroup(
            self.group, self.consumer, {self.high_stream: ">"}, count=1
        )
        if not reply:
            # Both streams: a job arriving on either wakes us. Rarely this returns one
            # message from each stream; the worker then runs both, in order.
            reply = await self._redis.xreadgroup(
                self.group,
                self.consumer,
                dict.fromkeys(self._streams, ">"),
                count=1,
                block=_BLOCK_MS,
            )
        messages = []
        for stream, entries in sorted(reply or [], key=lambda r: self._streams.index(r[0])):
            for msg_id, fields in entries:
                self._held[stream].add(msg_id)
                messages.append(_Message(stream, msg_id, fields, attempt=1))
        return messages

    async def _reclaim(self) -> _Message | None:
        """Take over one message idle for claim_idle_ms (its worker died or was stopped)."""
        for stream in self._streams:
            cursor, entries, *_ = await self._redis.xautoclaim(
                stream,
                self.group,
                self.consumer,
                self._claim_idle_ms,
                start_id=self._reclaim_cursor[stream],
                count=1,
            )
            self._reclaim_cursor[stream] = cursor
            for msg_id, fields in entries:
                if msg_id is None:
                    continue
                self._held[stream].add(msg_id)
                try:
                    attempt = await self._delivery_count(stream, msg_id)
                except BaseException:
                    # Unheld, it goes idle and is claimed again, rather than heartbeated
                    # forever by a worker that never runs it.
                    self._held[stream].discard(msg_id)
                    raise
                log.info("reclaimed job message %s (delivery %d)", msg_id, attempt)
                return _Message(stream, msg_id, fields, attempt)
        return None

    async def _delivery_count(self, stream: str, msg_id: str) -> int:
        entries = await self._redis.xpending_range(stream, self.group, msg_id, msg_id, 1)
        # Gone from the pending list means someone acknowledged it meanwhile: count it as
        # a redelivery, the run is at worst one more at-least-once duplicate.
        return int(entries[0]["times_delivered"]) if entries else 2

    async def _process(self, handler: Handler, message: _Message) -> None:
        """Run one message and acknowledge it, unless the run was cut short."""
        try:
            job = _decode(message)
        except (KeyError, ValueError, TypeError) as e:
            log.error("dropping malformed job message %s: %s", message.msg_id, e)
            await self._ack(message)
            return
        if job.attempt > self._max_deliveries:
            await self._ack(message)
            await self._dead(job, f"delivered {job.attempt} times (max {self._max_deliveries})")
            return
        me = asyncio.current_task()
        self._running += 1
        try:
            await handler(job)
        except asyncio.CancelledError:
            self._held[message.stream].discard(message.msg_id)
            if me is not None and me.cancelling():
                log.warning("job %s interrupted; left pending for redelivery", job.job_id)
                raise
            log.warning("job %s cancelled itself; left pending for redelivery", job.job_id)
            return
        except Exception:
            log.exception("job %s failed (attempt %d)", job.job_id, job.attempt)
        finally:
            self._running -= 1
        await self._ack(message)

    async def _ack(self, message: _Message) -> None:
        """XACK and XDEL together; if Redis is down the job will simply run again."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(message.stream, self.group, message.msg_id)
                pipe.xdel(message.stream, message.msg_id)
                await pipe.execute()
        except _OUTAGE_ERRORS as e:
            self._outage(e)
            log.warning("could not acknowledge %s; it will be redelivered", message.msg_id)
        except Exception:
            log.exception("could not acknowledge %s; it will be redelivered", message.msg_id)
        finally:
            self._held[message.stream].discard(message.msg_id)

    async def _dead(self, job: QueuedJob, reason: str) -> None:
        log.error("job %s is poison: %s", job.job_id, reason)
        if self._on_dead is None:
            return
        try:
            await self._on_dead(job, reason)
        except Exception:
            log.exception("on_dead failed for job %s", job.job_id)

    async def _beat(self) -> None:
        """Re-claim every held message to ourselves so its idle time never reaches the
        reclaim threshold while we are alive (JUSTID: the delivery count is unchanged)."""
        while True:
            await asyncio.sleep(self._heartbeat_s)
            for stream, ids in self._held.items():
                if not ids:
                    continue
                try:
                    await self._redis.xclaim(
                        stream, self.group, self.consumer, 0, list(ids), justid=True
                    )
                except _OUTAGE_ERRORS as e:
                    self._outage(e)
                except ResponseError as e:  # e.g. NOGROUP right after a restart
                    log.debug("heartbeat on %s failed: %s", stream, e)
                except Exception:  # the heartbeat must outlive surprises, or jobs get stolen
                    log.exception("heartbeat on %s failed", stream)

    # -- plumbing ---------------------------------------------------------------------------

    async def _ensure_groups(self) -> None:
        for stream in self._streams:
            try:
                # From id 0: jobs submitted before the first worker ever started still run.
                await self._redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as e:
                if not str(e).startswith("BUSYGROUP"):
                    raise
        self._groups_ready = True

    def _outage(self, error: BaseException) -> None:
        """Log the first error of an outage only; every loop reports here."""
        if self._outage_since is None:
            self._outage_since = asyncio.get_running_loop().time()
            log.warning("Redis unavailable (%s); retrying with backoff", error)

    def _recovered(self) -> None:
        if self._outage_since is not None:
            down = asyncio.get_running_loop().time() - self._outage_since
            self._outage_since = None
            self._groups_ready = False  # the server may have restarted empty
            log.warning("Redis reachable again after %.1f s", down)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when stop() is called."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass


def _decode(message: _Message) -> QueuedJob:
    fields: dict[str, Any] | None = message.fields
    if fields is None:
        raise ValueError("message has no fields")
    payload = json.loads(fields.get("payload") or "{}")
    if not isinstance(payload, dict):
        raise ValueError("payload is not a JSON object")
    return QueuedJob(
        job_id=fields["job"],
        payload={str(k): str(v) for k, v in payload.items()},
        priority=int(fields.get("priority", 0)),
        attempt=message.attempt,
    )
