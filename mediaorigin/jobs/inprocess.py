"""Run jobs on tasks of this event loop: the single-process deployment, and tests."""

from __future__ import annotations

import asyncio
import itertools
import logging

from .queue import Handler, QueuedJob

log = logging.getLogger("mediaorigin.jobs")


class InProcessQueue:
    """An asyncio priority queue drained by `concurrency` runner tasks.

    Higher priority first, FIFO within a priority. Nothing survives the process: jobs still
    waiting at stop() are dropped with it (the pipeline's database knows what never ran).
    """

    def __init__(self, concurrency: int = 1) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._concurrency = concurrency
        # (-priority, sequence, job): the sequence keeps FIFO order within a priority.
        self._queue: asyncio.PriorityQueue[tuple[int, int, QueuedJob]] = asyncio.PriorityQueue()
        self._seq = itertools.count()
        self._runners: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def submit(
        self, job_id: str, payload: dict[str, str] | None = None, priority: int = 0
    ) -> None:
        job = QueuedJob(job_id, dict(payload or {}), priority, attempt=1)
        self._queue.put_nowait((-priority, next(self._seq), job))

    async def start(self, handler: Handler) -> None:
        if self._runners:
            raise RuntimeError("queue already started")
        self._stopping = False
        for i in range(self._concurrency):
            task = asyncio.create_task(self._run(handler), name=f"jobs-runner-{i}")
            self._runners.add(task)

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping = True
        # Idle runners are only waiting for the next job: end them now.
        for task in self._runners - self._busy:
            task.cancel()
        busy = set(self._busy)
        if busy:
            _, late = await asyncio.wait(busy, timeout=grace)
            for task in late:
                log.warning("job still running after %.1f s grace; cancelling it", grace)
                task.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)
        self._runners.clear()
        self._busy.clear()

    async def depth(self) -> int:
        return self._queue.qsize() + len(self._busy)

    def running(self) -> int:
        return len(self._busy)

    async def _run(self, handler: Handler) -> None:
        """One runner: take the best job, run it, survive whatever the handler raises."""
        me = asyncio.current_task()
        assert me is not None
        while not self._stopping:
            _, _, job = await self._queue.get()
            self._busy.add(me)
            try:
                await handler(job)
            except Exception:
                log.exception("job %s failed", job.job_id)
            finally:
                self._busy.discard(me)
                self._queue.task_done()
