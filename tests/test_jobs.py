"""Job queues: the in-process queue, and Redis Streams against a private redis-server.

Redis tests use shortened timers (claim_idle_ms of a few hundred ms) so takeovers happen
within a test; every wait is bounded by asyncio.wait_for so a bug fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis_server import RedisServer

from mediaorigin.jobs.factory import make_queue
from mediaorigin.jobs.inprocess import InProcessQueue
from mediaorigin.jobs.queue import QueuedJob
from mediaorigin.jobs.redis_streams import RedisStreamQueue

TIMEOUT = 10.0
STREAM = "mediaorigin:jobs"
GROUP = "workers"


async def within(aw: Any, timeout: float = TIMEOUT) -> Any:
    return await asyncio.wait_for(aw, timeout)


class Runs:
    """Records handler calls and lets a test await "n calls so far"."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, QueuedJob]] = []
        self._changed = asyncio.Condition()

    async def add(self, who: str, job: QueuedJob) -> None:
        async with self._changed:
            self.jobs.append((who, job))
            self._changed.notify_all()

    async def wait_for(self, n: int) -> None:
        async def reached() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.jobs) >= n)

        await within(reached())

    @property
    def ids(self) -> list[str]:
        return [job.job_id for _, job in self.jobs]


# -- in-process -----------------------------------------------------------------------------


async def test_inprocess_priority_then_fifo() -> None:
    queue = InProcessQueue(concurrency=1)
    runs = Runs()
    busy, release = asyncio.Event(), asyncio.Event()

    async def handler(job: QueuedJob) -> None:
        await runs.add("q", job)
        if job.job_id == "blocker":
            busy.set()
            await release.wait()

    await queue.submit("blocker")
    await queue.start(handler)
    await within(busy.wait())
    await queue.submit("low1")
    await queue.submit("low2", {"k": "v"})
    await queue.submit("high", priority=5)
    assert await queue.depth() == 4
    release.set()
    await runs.wait_for(4)
    assert runs.ids == ["blocker", "high", "low1", "low2"]
    assert runs.jobs[3][1] == QueuedJob("low2", {"k": "v"}, priority=0, attempt=1)
    await queue.stop()


async def test_inprocess_concurrency_limit() -> None:
    queue = InProcessQueue(concurrency=3)
    runs = Runs()
    active = peak = 0
    three_in, release = asyncio.Event(), asyncio.Event()

    async def handler(job: QueuedJob) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if active == 3:
            three_in.set()
        await release.wait()
        active -= 1
        await runs.add("q", job)

    for i in range(10):
        await queue.submit(f"j{i}")
    await queue.start(handler)
    await within(three_in.wait())
    # Negative check (nothing else may start): give the loop a moment, there is no event.
    await asyncio.sleep(0.05)
    assert queue.running() == 3
    assert await queue.depth() == 10
    release.set()
    await runs.wait_for(10)
    assert peak == 3
    assert sorted(runs.ids) == sorted(f"j{i}" for i in range(10))
    await queue.stop()
    assert queue.running() == 0


async def test_inprocess_handler_exception_keeps_runner(caplog: pytest.LogCaptureFixture) -> None:
    queue = InProcessQueue(concurrency=1)
    runs = Runs()

    async def handler(job: QueuedJob) -> None:
        await runs.add("q", job)
        if job.job_id == "bad":
            raise RuntimeError("transcode exploded")

    await queue.submit("bad")
    await queue.submit("good")
    await queue.start(handler)
    await runs.wait_for(2)
    assert runs.ids == ["bad", "good"]
    failures = [r for r in caplog.records if r.name == "mediaorigin.jobs"]
    assert [r.getMessage() for r in failures] == ["job bad failed"]
    assert failures[0].exc_info is not None
    await queue.stop()


async def test_inprocess_stop_cancels_after_grace() -> None:
    queue = InProcessQueue(concurrency=2)
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(job: QueuedJob) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await queue.submit("forever")
    await queue.start(handler)
    await within(started.wait())
    await within(queue.stop(grace=0.1))
    assert cancelled.is_set()
    assert queue.running() == 0


async def test_inprocess_stop_lets_job_finish_within_grace() -> None:
    queue = InProcessQueue(concurrency=1)
    started, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handler(job: QueuedJob) -> None:
        started.set()
        await release.wait()
        finished.set()

    await queue.submit("short")
    await queue.start(handler)
    await within(started.wait())
    stopping = asyncio.create_task(queue.stop(grace=TIMEOUT))
    await asyncio.sleep(0)  # stop() is now waiting on the running job
    assert not stopping.done()
    release.set()
    await within(stopping)
    assert finished.is_set()


def test_factory() -> None:
    assert isinstance(make_queue("inprocess", "", 2), InProcessQueue)
    assert isinstance(make_queue("redis", "redis://127.0.0.1:1/0", 2), RedisStreamQueue)
    with pytest.raises(ValueError, match="unknown job queue backend 'kafka'.*inprocess, redis"):
        make_queue("kafka", "", 1)


# -- Redis Streams --------------------------------------------------------------------------

QueueMaker = Callable[..., RedisStreamQueue]


@pytest.fixture
async def queues(redis_url: str) -> AsyncIterator[QueueMaker]:
    """Factory for queues on the test's Redis; all are stopped at the end."""
    made: list[RedisStreamQueue] = []

    def make(**kw: Any) -> RedisStreamQueue:
        queue = RedisStreamQueue(redis_url, **kw)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        await queue.stop(grace=0)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url, decode_responses=True, protocol=2)
    yield c
    await c.aclose()


async def pending(client: aioredis.Redis, stream: str = STREAM) -> int:
    return int((await client.xpending(stream, GROUP))["pending"])


async def test_redis_two_consumers_share_work(queues: QueueMaker, client: aioredis.Redis) -> None:
    a = queues(consumer="a", concurrency=2)
    b = queues(consumer="b", concurrency=2)
    runs = Runs()

    def handler_for(name: str) -> Callable[[QueuedJob], Any]:
        async def handler(job: QueuedJob) -> None:
            await asyncio.sleep(0.02)  # a little work, so both consumers get some
            await runs.add(name, job)

        return handler

    await a.start(handler_for("a"))
    await b.start(handler_for("b"))
    for i in range(20):
        await a.submit(f"j{i}", {"n": str(i)})
    await runs.wait_for(20)
    await a.stop()
    await b.stop()
    assert Counter(runs.ids) == Counter(f"j{i}" for i in range(20))
    assert {who for who, _ in runs.jobs} == {"a", "b"}
    assert all(job.attempt == 1 and job.payload == {"n": job.job_id[1:]} for _, job in runs.jobs)
    assert await pending(client) == 0
    # Acknowledged jobs are deleted too: the stream holds only unfinished work.
    assert await client.xlen(STREAM) == 0


async def test_redis_high_priority_stream_first(queues: QueueMaker) -> None:
    queue = queues(concurrency=1)
    runs = Runs()
    busy, release = asyncio.Event(), asyncio.Event()

    async def handler(job: QueuedJob) -> None:
        await runs.add("q", job)
        if job.job_id == "blocker":
            busy.set()
            await release.wait()

    await queue.start(handler)
    await queue.submit("blocker")
    await within(busy.wait())
    await queue.submit("low1")
    await queue.submit("low2")
    await queue.submit("high", priority=1)
    assert await queue.depth() == 4  # 1 pending (running) + 3 waiting
    release.set()
    await runs.wait_for(4)
    assert runs.ids == ["blocker", "high", "low1", "low2"]
    assert runs.jobs[1][1].priority == 1
    await queue.stop()


async def test_redis_handler_exception_is_acked(
    queues: QueueMaker, client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    queue = queues(concurrency=1, claim_idle_ms=300, heartbeat_ms=100)
    runs = Runs()
    pending_during_good: list[int] = []

    async def handler(job: QueuedJob) -> None:
        if job.job_id == "bad":
            await runs.add("q", job)
            raise RuntimeError("transcode exploded")
        pending_during_good.append(await pending(client))
        await runs.add("q", job)

    await queue.submit("bad")
    await queue.submit("good")
    await queue.start(handler)
    await runs.wait_for(2)
    await queue.stop()
    assert runs.ids == ["bad", "good"]
    assert pending_during_good == [1]  # only "good" itself: "bad" was already acked
    assert await pending(client) == 0
    assert any("job bad failed" in r.getMessage() for r in caplog.records)


async def test_redis_stop_mid_job_is_redelivered(queues: QueueMaker) -> None:
    a = queues(consumer="a", claim_idle_ms=300, heartbeat_ms=100)
    b = queues(consumer="b", claim_idle_ms=300, heartbeat_ms=100)
    started, cancelled = asyncio.Event(), asyncio.Event()
    runs = Runs()

    async def a_handler(job: QueuedJob) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def b_handler(job: QueuedJob) -> None:
        await runs.add("b", job)

    await a.start(a_handler)
    await a.submit("j", {"media": "m1"})
    await within(started.wait())
    assert a.running() == 1
    await within(a.stop(grace=0.1))
    assert cancelled.is_set()
    await b.start(b_handler)
    await runs.wait_for(1)
    assert runs.jobs == [("b", QueuedJob("j", {"media": "m1"}, priority=0, attempt=2))]


async def test_redis_heartbeat_keeps_long_job(queues: QueueMaker) -> None:
    a = queues(consumer="a", claim_idle_ms=400, heartbeat_ms=100)
    b = queues(consumer="b", claim_idle_ms=400, heartbeat_ms=100)
    runs = Runs()
    started = asyncio.Event()

    async def a_handler(job: QueuedJob) -> None:
        await runs.add("a", job)
        started.set()
        await asyncio.sleep(1.5)  # the long job itself, far beyond claim_idle_ms

    async def b_handler(job: QueuedJob) -> None:
        await runs.add("b", job)

    await a.start(a_handler)
    await a.submit("long")
    await within(started.wait())
    await b.start(b_handler)
    await within(a.stop())  # returns once the job finished and was acked
    await b.stop()
    assert [(who, job.job_id, job.attempt) for who, job in runs.jobs] == [("a", "long", 1)]


WORKER_SCRIPT = """
import asyncio, sys
from mediaorigin.jobs.redis_streams import RedisStreamQueue

async def main():
    queue = RedisStreamQueue(sys.argv[1], consumer="doomed", concurrency=2,
                             claim_idle_ms=500, heartbeat_ms=100)
    async def handler(job):
        print("started", job.job_id, flush=True)
        await asyncio.Event().wait()
    await queue.start(handler)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_redis_killed_worker_jobs_are_reclaimed(
    queues: QueueMaker, redis_url: str, client: aioredis.Redis
) -> None:
    producer = queues()
    await producer.submit("j1")
    await producer.submit("j2")
    # The worker reports each start on stdout: an awaitable marker, no file polling.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER_SCRIPT,
        redis_url,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert proc.stdout is not None
        markers = {(await within(proc.stdout.readline())).decode().strip() for _ in range(2)}
        assert markers == {"started j1", "started j2"}
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    assert await pending(client) == 2

    rescuer = queues(consumer="rescuer", concurrency=2, claim_idle_ms=500, heartbeat_ms=100)
    runs = Runs()

    async def handler(job: QueuedJob) -> None:
        await runs.add("rescuer", job)

    await rescuer.start(handler)
    await runs.wait_for(2)
    await rescuer.stop()
    assert sorted((job.job_id, job.attempt) for _, job in runs.jobs) == [("j1", 2), ("j2", 2)]
    assert await pending(client) == 0


async def test_redis_poison_job_goes_to_on_dead(queues: QueueMaker, client: aioredis.Redis) -> None:
    # Simulate workers killed mid-job: a ghost consumer holds both messages, and XCLAIM's
    # RETRYCOUNT sets how often they were delivered; IDLE makes them claimable at once.
    dead: list[tuple[QueuedJob, str]] = []
    dead_event = asyncio.Event()

    async def on_dead(job: QueuedJob, reason: str) -> None:
        dead.append((job, reason))
        dead_event.set()

    queue = queues(claim_idle_ms=300, heartbeat_ms=100, max_deliveries=3, on_dead=on_dead)
    await queue.submit("poison")
    await queue.submit("last-chance")
    await client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    reply = await client.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=2)
    ids = {fields["job"]: msg_id for msg_id, fields in reply[0][1]}
    await client.xclaim(STREAM, GROUP, "ghost", 0, [ids["poison"]], idle=60_000, retrycount=3)
    await client.xclaim(STREAM, GROUP, "ghost", 0, [ids["last-chance"]], idle=60_000, retrycount=2)
    runs = Runs()

    async def handler(job: QueuedJob) -> None:
        await runs.add("q", job)

    await queue.start(handler)
    await within(dead_event.wait())
    await runs.wait_for(1)
    await queue.stop()
    assert [(job.job_id, job.attempt) for job, _ in dead] == [("poison", 4)]
    assert "delivered 4 times" in dead[0][1]
    assert [(job.job_id, job.attempt) for _, job in runs.jobs] == [("last-chance", 3)]
    assert await pending(client) == 0


async def test_redis_restart_while_idle(
    queues: QueueMaker, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    queue = queues(claim_idle_ms=300, heartbeat_ms=100)
    runs = Runs()

    async def handler(job: QueuedJob) -> None:
        await runs.add("q", job)

    await queue.start(handler)
    await queue.submit("before")
    await runs.wait_for(1)

    redis_server.stop()
    with pytest.raises(RedisConnectionError):
        await queue.submit("during")  # the caller learns nothing was queued
    await asyncio.sleep(0.5)  # the outage lasts a while: the worker retries several times
    redis_server.start()  # back on the same port, empty: no stream, no group

    await queue.submit("after")
    await runs.wait_for(2)
    assert runs.ids == ["before", "after"]
    outage_logs = [
        r.getMessage()
        for r in caplog.records
        if r.name == "mediaorigin.jobs" and r.levelno == logging.WARNING
    ]
    assert len([m for m in outage_logs if m.startswith("Redis unavailable")]) == 1
    assert len([m for m in outage_logs if m.startswith("Redis reachable again")]) == 1
