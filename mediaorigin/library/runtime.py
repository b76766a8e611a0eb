"""Wiring of the library for one process: database, storage, queue, pipeline, webhooks.

Used by `serve` (API + origin, optionally working on jobs) and `worker` (jobs only), so both
build the same objects from the same config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from ..config import Config
from ..jobs.factory import make_queue
from ..jobs.queue import JobQueue, QueuedJob
from ..processing.validate import Limits
from ..storage.local import LocalStorage
from .db import open_database
from .notify import Notifier
from .pipeline import Pipeline, PipelineSettings
from .repository import Library
from .service import MediaService
from .webhooks import WebhookSender

log = logging.getLogger("mediaorigin.library")
# Queued jobs this old were never picked up (a refused submit, a process that died): queue
# them again. At start every queued job is, in-process (the queue was in memory).
REQUEUE_AFTER = {"inprocess": 120.0, "redis": 300.0}


@dataclass
class LibraryRuntime:
    config: Config
    library: Library
    storage: LocalStorage
    notifier: Notifier
    queue: JobQueue
    pipeline: Pipeline
    service: MediaService
    webhooks: WebhookSender | None
    consuming: bool
    _sweeper: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.queue.stop()
        if self.webhooks is not None:
            await self.webhooks.stop()
        await self.library.close()

    async def _sweep(self) -> None:
        """Recover jobs no queue holds: queued ones never picked up and running ones whose
        worker died (its heartbeat went stale). `Library.start_job` lets only one run win."""
        backend = self.config.jobs.backend
        stale = self.config.jobs.claim_idle_seconds
        requeue_after = 0.0 if backend == "inprocess" else REQUEUE_AFTER[backend]
        while True:
            try:
                now = time.time()
                for job in await self.library.jobs(status=("queued", "running")):
                    # A dead worker's job, on either backend: Redis reclaims its message
                    # itself, but may do so before the job's heartbeat here is stale (the two
                    # heartbeats tick apart), and then start_job refuses it and the message is
                    # acknowledged: without this the job would stay "running" forever.
                    orphaned = job.status == "running" and \
                        now - (job.heartbeat_at or 0.0) > stale
                    waiting = job.status == "queued" and now - job.created_at >= requeue_after
                    if orphaned or waiting:
                        await self.queue.submit(job.id, {"media": job.media_id}, job.priority)
            except Exception:
                log.warning("job sweep failed; trying again", exc_info=True)
            requeue_after = REQUEUE_AFTER[backend]
            await asyncio.sleep(min(stale / 2, 30.0))


def pipeline_settings(config: Config) -> PipelineSettings:
    p, lib = config.processing, config.library
    return PipelineSettings(
        limits=Limits(max_size=lib.max_upload_mb * 1024 * 1024, max_duration=lib.max_duration),
        preset=p.preset, max_keyframe_interval=p.max_keyframe_interval,
        sprite_interval=p.sprite_interval, preview_seconds=p.preview_seconds,
        stale_after=config.jobs.claim_idle_seconds)


async def start_library(config: Config, *, consume: bool) -> LibraryRuntime:
    """Open everything; with `consume`, this process also runs processing jobs."""
    engine = await open_database(config.library.url, config.base_dir,
                                 config.library.auto_migrate)
    library = Library(engine)
    storage = LocalStorage(config.path(config.storage.root))
    webhooks = None
    urls = [u.strip() for u in config.webhooks.urls.split(",") if u.strip()]
    if urls:
        if not config.webhooks.secret:
            raise ValueError("webhooks.urls needs webhooks.secret to sign the deliveries")
        webhooks = WebhookSender(urls, config.webhooks.secret.encode())
        await webhooks.start()
    notifier = Notifier(webhooks)
    jobs = config.jobs

    async def dead(job: QueuedJob, reason: str) -> None:
        """A job that took its worker down again and again: fail it rather than loop."""
        await library.finish_job(job.job_id, "failed", {
            "code": "worker_crashed", "message": f"processing stopped its worker ({reason})"})

    extra: dict[str, object] = {}
    if jobs.backend == "redis":
        claim_ms = int(jobs.claim_idle_seconds * 1000)
        extra = {"claim_idle_ms": claim_ms, "heartbeat_ms": max(100, claim_ms // 4),
                 "on_dead": dead}
    queue = make_queue(jobs.backend, config.redis.url, jobs.concurrency, **extra)
    pipeline = Pipeline(library, storage, notifier, pipeline_settings(config))
    service = MediaService(library, storage, queue, notifier)
    runtime = LibraryRuntime(config, library, storage, notifier, queue, pipeline, service,
                             webhooks, consume)
    if consume:
        async def handle(job: QueuedJob) -> None:
            await pipeline.run(job)

        await queue.start(handle)
        runtime._sweeper = asyncio.create_task(runtime._sweep())
    return runtime
