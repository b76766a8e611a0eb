"""What the API and the CLI do to the library: ingest uploads, start and stop processing,
edit and delete media. Handlers stay thin; the rules live here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..errors import ClientError
from ..packaging.model import MediaError
from ..packaging.webvtt import parse_webvtt
from ..storage.local import LocalStorage
from .notify import Notifier
from .records import Asset, Job, Media
from .repository import Library

log = logging.getLogger("mediaorigin.library")
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,5}$")


class ServiceError(ClientError):
    """A library operation refused: unknown media or job, a conflicting state."""


class Queue(Protocol):
    async def submit(self, job_id: str, payload: dict[str, str] | None = None,
                     priority: int = 0) -> None: ...


def processing_defaults(config: Any) -> dict[str, Any]:
    """The processing settings a job gets when the client names none (from [processing])."""
    p = config.processing
    return {
        "quality": [q.strip() for q in p.qualities.split(",") if q.strip()],
        "formats": ["mp4", "hls", "dash"],
        "passthrough": p.passthrough,
        "priority": 0,
        "captions": {"generate": False, "languages": []},
        "thumbnails": {"enabled": p.thumbnails > 0, "count": p.thumbnails, "interval": None,
                       "size": p.thumbnail_size},
        "video": {"codec": "h264", "bitrate": {}, "framerate": None,
                  "keyframe": p.keyframe_interval},
        "audio": {"codec": "aac", "bitrate": 128_000, "channels": 2, "sampling": 48000},
        "watermark": None,
    }


class MediaService:
    def __init__(self, library: Library, storage: LocalStorage, queue: Queue,
                 notifier: Notifier, forget: Callable[[str, list[str]], None] | None = None
                 ) -> None:
        self.library = library
        self.storage = storage
        self.queue = queue
        self.notifier = notifier
        self.forget = forget  # drops the origin's caches of a media item

    async def ingest(self, source: Path, file_name: str, fields: dict[str, Any],
                     processing: dict[str, Any], organization_id: str | None,
                     media_id: str | None = None, move: bool = True) -> tuple[Media, Job]:
        """Store an uploaded file as a new media item (or a new generation of `media_id`) and
        queue its processing. `source` is moved into storage (`move`) or linked (kept)."""
        try:
            if media_id is None:
                meta: dict[str, Any] = {"typeGiven": "type" in fields}
                if "copyright" in fields:
                    meta["copyright"] = fields["copyright"]
                media_id = await self.library.create_media(
                    title=fields.get("title") or Path(file_name).stem[:500] or "Untitled",
                    type=fields.get("type", "video"), description=fields.get("description", ""),
                    language=fields.get("language"), tags=fields.get("tags", ()),
                    organization_id=fields.get("organization", organization_id),
                    permissions=fields.get("permissions"), meta=meta, settings=processing)
            suffix = Path(file_name).suffix.lower()
            suffix = suffix if _SUFFIX.match(suffix) else ""
            size = source.stat().st_size
            number = await self.library.add_generation(
                media_id, "", file_name, size)
            key = f"media/{media_id}/g{number}/original{suffix}"
            await asyncio.to_thread(self.storage.put_file, key, source)
            await self.library.set_generation(media_id, number, source_key=key)
        finally:
            if move:
                source.unlink(missing_ok=True)
        await self.library.add_history(media_id, "uploaded", {
            "generation": number, "fileName": file_name, "size": size})
        job = await self._queue_job(media_id, number, "process", processing)
        media = await self.library.get_media(media_id)
        assert media is not None
        return media, job

    async def _queue_job(self, media_id: str, generation: int, type: str,
                         config: dict[str, Any]) -> Job:
        media = await self.library.get_media(media_id)
        if media is not None and media.generation is None:
            await self.library.update_media(media_id, {"status": "processing"})
        job = await self.library.create_job(media_id, generation, type, config,
                                            priority=int(config.get("priority", 0)))
        await self.library.add_history(media_id, "job.queued",
                                       {"type": type, "generation": generation}, job.id)
        try:
            await self.queue.submit(job.id, {"media": media_id}, job.priority)
        except Exception as e:  # the job stays queued in the database and is resubmitted
            # (`type` is the job type here, so the class name comes from the instance)
            log.warning("job %s stays queued: the queue refused it (%s)", job.id,
                        e.__class__.__name__)
        self.notifier.changed(media_id)
        return job

    async def process(self, media_id: str, config: dict[str, Any]) -> Job:
        """Process the latest upload again with new settings."""
        media = await self._media(media_id)
        running = [j for j in await self.library.jobs(status=("queued", "running"),
                                                      media_id=media_id)]
        if running:
            raise ServiceError(409, "job_in_progress",
                               f"job {running[0].id} is still {running[0].status}")
        live = [g for g in media.generations if g.status != "purged" and g.source_key]
        if not live:
            raise ServiceError(409, "no_source", "the media has no stored upload to process")
        await self.library.update_media(media_id, {"settings": config})
        return await self._queue_job(media_id, live[-1].generation, "reprocess", config)

    async def cancel(self, job_id: str) -> Job:
        job = await self._job(job_id)
        if not await self.library.finish_job(job_id, "cancelled",
                                             {"code": "cancelled", "message": "cancelled"}):
            raise ServiceError(409, "job_finished", f"job {job_id} is already {job.status}")
        await self.library.add_history(job.media_id, "job.cancelled", {}, job_id)
        await self._settle(job.media_id)
        self.notifier.changed(job.media_id)
        return await self._job(job_id)

    async def retry(self, job_id: str) -> Job:
        job = await self._job(job_id)
        if not await self.library.requeue_job(job_id):
            raise ServiceError(409, "job_not_retryable",
                               f"job {job_id} is {job.status}; only failed or cancelled jobs "
                               "can be retried")
        await self.library.add_history(job.media_id, "job.retried", {}, job_id)
        media = await self.library.get_media(job.media_id)
        if media is not None and media.generation is None:
            await self.library.update_media(job.media_id, {"status": "processing"})
        await self.queue.submit(job_id, {"media": job.media_id}, job.priority)
        self.notifier.changed(job.media_id)
        return await self._job(job_id)

    async def _settle(self, media_id: str) -> None:
        """After a job ends without success: ready if something plays, else failed."""
        media = await self.library.get_media(media_id)
        if media is not None and media.status == "processing":
            await self.library.update_media(
                media_id, {"status": "ready" if media.generation is not None else "failed"})

    async def delete(self, media_id: str) -> None:
        await self._media(media_id)
        for job in await self.library.jobs(status=("queued", "running"), media_id=media_id):
            await self.library.finish_job(job.id, "cancelled",
                                          {"code": "deleted", "message": "media deleted"})
        keys = await self.library.storage_keys(media_id)
        await self.library.delete_media(media_id)
        await asyncio.to_thread(self.storage.delete_prefix, f"media/{media_id}")
        if self.forget is not None:
            self.forget(media_id, keys)
        self.notifier.changed(media_id)

    async def purge(self, media_id: str, generation: int) -> None:
        """Remove an earlier upload (a previous version) and everything made from it."""
        media = await self._media(media_id)
        gen = next((g for g in media.generations if g.generation == generation), None)
        if gen is None or gen.status == "purged":
            raise ServiceError(404, "version_not_found", f"no version {generation}")
        if generation == media.generation:
            raise ServiceError(409, "version_current", "the current version cannot be purged")
        if any(j.generation == generation for j in await self.library.jobs(
                status=("queued", "running"), media_id=media_id)):
            raise ServiceError(409, "job_in_progress", "that version is being processed")
        keys = await self.library.storage_keys(media_id, generation)
        await self.library.purge_generation(media_id, generation)
        await asyncio.to_thread(self.storage.delete_prefix, f"media/{media_id}/g{generation}")
        if self.forget is not None:
            self.forget(media_id, keys)
        await self.library.add_history(media_id, "version.purged", {"generation": generation})

    async def add_captions(self, media_id: str, language: str, text: str) -> Media:
        """WebVTT captions in one language for the current version (replacing earlier ones)."""
        media = await self._media(media_id)
        if media.generation is None:
            raise ServiceError(409, "not_playable", "captions need a processed version first")
        try:
            parse_webvtt(text)
        except MediaError as e:
            raise ServiceError(422, "invalid_captions", f"not valid WebVTT: {e}") from None
        name = f"captions-{language.lower()}.vtt"
        key = f"media/{media_id}/g{media.generation}/{name}"
        path = self.storage.resolve(key)
        await asyncio.to_thread(_write_atomic, path, text.encode())
        position = 1000 + len(media.assets_of("caption"))
        await self.library.put_asset(media_id, Asset(
            "caption", language, "vtt", key, path.stat().st_size, media.generation,
            position=position))
        await self.library.add_history(media_id, "captions.added", {"language": language})
        self.notifier.published(media_id)
        return await self._media(media_id)

    async def external_update(self, update: dict[str, Any]) -> Job:
        """A callback from an external processor: progress, completion or failure of a job."""
        job = await self._job(str(update.get("jobId", "")))
        status, progress, error = _external_fields(update)
        if status in ("running", None):
            if job.status == "queued":
                await self.library.start_job(job.id, "external", 0.0)
            await self.library.progress(job.id, str(progress.get("stage", "external"))[:32],
                                        float(progress.get("percentage", 0.0)),
                                        progress.get("details") or {})
        elif status in ("completed", "failed"):
            if not await self.library.finish_job(job.id, status, error):
                raise ServiceError(409, "job_finished", f"job {job.id} is already {job.status}")
            await self._settle(job.media_id)
            self.notifier.emit("media.failed" if status == "failed" else "job.completed",
                               {"mediaId": job.media_id, "jobId": job.id, "error": error})
        await self.library.add_history(job.media_id, "job.callback",
                                       {"status": status, "progress": progress}, job.id)
        self.notifier.changed(job.media_id)
        return await self._job(job.id)

    async def _media(self, media_id: str) -> Media:
        media = await self.library.get_media(media_id)
        if media is None:
            raise ServiceError(404, "media_not_found", f"no media {media_id!r}")
        return media

    async def _job(self, job_id: str) -> Job:
        job = await self.library.get_job(job_id) if job_id else None
        if job is None:
            raise ServiceError(404, "job_not_found", f"no job {job_id!r}")
        return job


def _external_fields(update: dict[str, Any]
                     ) -> tuple[str | None, dict[str, Any], dict[str, str] | None]:
    """Check a processor callback's status, progress and error (422 on a bad shape), so
    nothing malformed reaches the job record (the Media record reads error["message"])."""
    def bad(field: str, message: str) -> ServiceError:
        return ServiceError(422, "invalid_field", f"{field}: {message}")

    status = update.get("status")
    if status not in ("running", "completed", "failed", None):
        raise bad("status", "must be running, completed or failed")
    progress = update.get("progress") or {}
    if not isinstance(progress, dict):
        raise bad("progress", "must be an object {stage, percentage, details}")
    pct = progress.get("percentage", 0.0)
    if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 <= pct <= 100:
        raise bad("progress.percentage", "must be a number from 0 to 100")
    if not isinstance(progress.get("details") or {}, dict):
        raise bad("progress.details", "must be an object")
    if status != "failed":
        return status, progress, None
    error = update.get("error") or {}
    if not isinstance(error, dict) or not all(
            isinstance(error.get(k, ""), str) for k in ("code", "message")):
        raise bad("error", "must be an object {code, message} of strings")
    code = error.get("code") or "external_error"
    return status, progress, {"code": code[:64],
                              "message": (error.get("message") or code)[:1000]}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
