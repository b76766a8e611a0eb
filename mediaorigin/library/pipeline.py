"""The processing pipeline: one job turns an uploaded generation into playable assets.

Stages as in the design: validation (probe content, limits, polyglots), preprocessing
(metadata, poster, preview), transcoding (passthrough and/or the ABR ladder; image variants;
document page count), postprocessing (thumbnails, scrub-preview sprite; a watermark is burned
in while transcoding). A compliant H.264/AAC MP4 is published as uploaded right after
validation, so it plays within seconds while the lower rungs are still being encoded.

Blocking work runs on threads; progress flows back through a throttled callback that also
notices a cancel. Outputs are written into the generation's folder and only become visible to
players when `Library.publish` lists them, so nothing half-written is ever served.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..jobs.queue import QueuedJob
from ..processing import documents, images, passthrough, thumbnails, transcode
from ..processing.errors import Cancelled, ProcessingError
from ..processing.ladder import Rung, plan_ladder
from ..processing.probe import Probe, probe_file
from ..processing.validate import Limits, validate
from ..processing.watermark import Watermark
from ..storage.local import LocalStorage
from .notify import Notifier
from .records import Asset, Generation, Job, Media
from .repository import Library

log = logging.getLogger("mediaorigin.pipeline")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"/:]+/)*[^\s'\"/:]*")
T = TypeVar("T")
HEARTBEAT_SECONDS = 2.0
AUDIO_LADDER = (128_000, 64_000)
SAMPLE_RATES = (22_050, 24_000, 32_000, 44_100, 48_000)
IMAGE_WIDTHS = (1920, 1280, 640, 320)
# Share of the job's percentage each stage covers.
STAGES = {"validation": (0, 5), "preprocessing": (5, 10), "transcoding": (10, 90),
          "postprocessing": (90, 99)}


@dataclass(frozen=True)
class PipelineSettings:
    limits: Limits = field(default_factory=Limits)
    preset: str = "veryfast"
    max_keyframe_interval: float = 10.0
    sprite_interval: float = 10.0
    preview_seconds: float = 6.0
    stale_after: float = 60.0  # a running job silent this long belongs to a dead worker
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")


class _Progress:
    """The callback handed to blocking stages: throttled progress, and the way a cancel gets in.

    Called on a worker thread; it schedules the database write on the loop and raises
    Cancelled once the job was cancelled.
    """

    def __init__(self, run: _Run, stage: str) -> None:
        self.run = run
        self.stage = stage
        self.lo, self.hi = STAGES[stage]
        self.sent_at = 0.0

    def __call__(self, pct: float) -> None:
        if self.run.cancelled.is_set():
            raise Cancelled()
        now = time.monotonic()
        if now - self.sent_at < 0.5 and pct < 100:
            return
        self.sent_at = now
        overall = self.lo + (self.hi - self.lo) * max(0.0, min(pct, 100.0)) / 100
        report = self.run.report(self.stage, overall)
        try:
            asyncio.run_coroutine_threadsafe(report, self.run.loop)
        except RuntimeError:  # the loop is closed: the process is stopping, stop this stage
            report.close()
            raise Cancelled() from None


@dataclass
class _Run:
    pipeline: Pipeline
    job: Job
    media: Media
    generation: Generation
    source: Path
    out_dir: Path
    loop: asyncio.AbstractEventLoop
    token: str  # this run's claim on the job (jobs.worker)
    cancelled: threading.Event = field(default_factory=threading.Event)
    assets: list[Asset] = field(default_factory=list)
    # The record's description of this upload (metadata, type, duration). A new version
    # describes the record only once it is published: until then the old one still plays.
    described: dict[str, Any] = field(default_factory=dict)
    last_webhook_pct: float = -100.0

    async def report(self, stage: str, pct: float, details: dict[str, Any] | None = None
                     ) -> None:
        lib = self.pipeline.library
        status = await lib.progress(self.job.id, stage, pct, details, self.token)
        if status == "cancelled":
            self.cancelled.set()
        self.pipeline.notifier.changed(self.media.id)
        if pct - self.last_webhook_pct >= 10 or details is not None:
            self.last_webhook_pct = pct
            self.pipeline.notifier.emit("job.progress", {
                "mediaId": self.media.id, "jobId": self.job.id, "stage": stage,
                "percentage": round(pct, 1)})

    async def stage(self, name: str, details: dict[str, Any] | None = None) -> _Progress:
        await self.report(name, STAGES[name][0], details or {})
        await self.pipeline.library.add_history(self.media.id, f"stage.{name}", details or {},
                                                self.job.id)
        return _Progress(self, name)

    async def blocking(self, fn: Callable[[], T]) -> T:
        if self.cancelled.is_set():
            raise Cancelled()
        return await asyncio.to_thread(fn)

    def asset(self, kind: str, name: str, path: Path, fmt: str, **extra: Any) -> Asset:
        storage = self.pipeline.storage
        return Asset(kind, name, fmt, storage.key_of(path), path.stat().st_size,
                     self.generation.generation, position=len(self.assets), **extra)


class Pipeline:
    def __init__(self, library: Library, storage: LocalStorage, notifier: Notifier,
                 settings: PipelineSettings) -> None:
        self.library = library
        self.storage = storage
        self.notifier = notifier
        self.settings = settings

    async def run(self, queued: QueuedJob) -> None:
        """The job queue's handler. Safe to call twice for one job: only one run takes it."""
        lib = self.library
        # This run's claim on the job: every write it makes later requires it still holds
        # it, so a run that was cancelled, retried or taken over can no longer touch the job.
        token = f"{self.settings.worker}/{secrets.token_hex(4)}"
        job = await lib.start_job(queued.job_id, token, self.settings.stale_after)
        if job is None:
            return  # finished, cancelled, or alive on another worker
        media = await lib.get_media(job.media_id)
        gen = await lib.generation(job.media_id, job.generation)
        if media is None or gen is None or gen.status == "purged" or not gen.source_key:
            await lib.finish_job(job.id, "failed", {"code": "source_missing",
                                                    "message": "the upload is gone"}, token)
            return
        # Each run writes into a folder of its own beside the upload: what players use now
        # is never overwritten, and a failed run removes only its own files.
        folder = f"media/{media.id}/g{gen.generation}"
        await asyncio.to_thread(_prune_runs, self.storage.folder(folder),
                                {Path(a.storage_key).parent.name for a in media.assets})
        run = _Run(self, job, media, gen, self.storage.resolve(gen.source_key),
                   self.storage.folder(f"{folder}/{job.id}.{job.attempts}"),
                   asyncio.get_running_loop(), token)
        await lib.add_history(media.id, "job.started", {"attempt": job.attempts,
                                                        "worker": self.settings.worker}, job.id)
        heartbeat = asyncio.create_task(self._heartbeat(run))
        try:
            await self._stages(run)
        except asyncio.CancelledError:
            # The queue is stopping: the job stays running for another worker to take over
            # once its heartbeat is stale; the blocking stage on its thread stops at its next
            # progress call instead of running on unobserved.
            run.cancelled.set()
            raise
        except Cancelled:
            await self._ended(run, "cancelled", {"code": "cancelled", "message": "cancelled"})
        except ProcessingError as e:
            await self._ended(run, "failed", {"code": e.code,
                                              "message": self._public(e.message)})
        except Exception as e:
            log.exception("job %s failed unexpectedly", job.id)
            await self._ended(run, "failed", {"code": "internal_error",
                                              "message": f"processing failed ({type(e).__name__})"})
        finally:
            heartbeat.cancel()

    def _public(self, message: str) -> str:
        """An error message fit for API clients: library errors (FFmpeg, Pillow, pdfium) may
        name the stored file; no path inside or outside storage is ever shown."""
        message = message.replace(str(self.storage.root), "<storage>")
        return _ABSOLUTE_PATH.sub("<file>", message)

    async def _heartbeat(self, run: _Run) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                status = await self.library.heartbeat(run.job.id, run.token)
            except Exception:  # the database is briefly unreachable: try again
                log.warning("job %s: heartbeat failed", run.job.id, exc_info=True)
                continue
            if status != "running":
                run.cancelled.set()

    async def _ended(self, run: _Run, status: str, error: dict[str, str]) -> None:
        """Failure or cancel: keep the upload, drop what this run made, settle the status."""
        lib = self.library
        await asyncio.to_thread(shutil.rmtree, run.out_dir, True)
        job = await lib.get_job(run.job.id)
        if job is None or job.worker != run.token:
            return  # retried or taken over meanwhile: the job is no longer this run's
        await lib.set_generation(run.media.id, run.generation.generation,
                                 status="failed" if status == "failed" else "cancelled")
        # The media status settles before the job finishes: whoever sees the finished job
        # (status polls, the `done` progress event) sees the final media status with it.
        media = await lib.get_media(run.media.id)
        if media is not None and media.status == "processing":
            await lib.update_media(media.id, {
                "status": "ready" if media.generation is not None else "failed"})
        # History first: whoever sees the job finished sees its history entry too.
        await lib.add_history(run.media.id, f"job.{status}", error, run.job.id)
        await lib.finish_job(run.job.id, status, error, run.token)
        self.notifier.changed(run.media.id)
        if status == "failed":
            self.notifier.emit("media.failed", {"mediaId": run.media.id, "jobId": run.job.id,
                                                "error": error})

    # -- the stages ------------------------------------------------------------------------

    async def _stages(self, run: _Run) -> None:
        cfg = run.job.config
        progress = await run.stage("validation")
        probe = await self._validate(run, progress)
        kind = "interactive" if run.media.type == "interactive" else probe.kind
        await self._describe(run, probe, kind)
        if kind == "video" or kind == "audio":
            await self._audiovisual(run, probe, cfg)
        elif kind == "image":
            await self._image(run)
        else:
            await self._document(run, kind)
        await self._publish(run, probe, final=True)
        await self.library.add_history(run.media.id, "job.completed",
                                       {"assets": len(run.assets)}, run.job.id)
        await self.library.finish_job(run.job.id, "completed", None, run.token)
        self.notifier.changed(run.media.id)
        self.notifier.emit("media.ready", {"mediaId": run.media.id, "jobId": run.job.id,
                                           "generation": run.generation.generation})

    async def _validate(self, run: _Run, progress: _Progress) -> Probe:
        if run.media.type == "interactive":  # an opaque package (H5P, SCORM): limits only
            size = run.source.stat().st_size
            if size > self.settings.limits.max_size:
                raise ProcessingError("too_large", "the package is larger than allowed")
            return Probe(kind="document", format="package", size=size)
        probe = await run.blocking(lambda: probe_file(run.source))
        await run.blocking(lambda: validate(run.source, probe, self.settings.limits))
        progress(100)
        return probe

    async def _describe(self, run: _Run, probe: Probe, kind: str) -> None:
        """Metadata from the probe onto the record (the type follows the content)."""
        meta = {**run.media.meta, "format": probe.format, "size": probe.size,
                "bitrate": probe.bitrate, "codec": probe.video_codec or probe.audio_codec,
                "audioCodec": probe.audio_codec, "frameRate": probe.frame_rate,
                "channels": probe.audio_channels, "sampleRate": probe.audio_sample_rate,
                "pages": probe.pages,
                "dimensions": {"width": probe.width, "height": probe.height}}
        run.described = {"meta": meta, "type": kind, "duration": probe.duration}
        if run.media.generation is None:  # nothing plays yet: describe the upload at once
            await self.library.update_media(run.media.id, run.described)
        await self.library.set_generation(run.media.id, run.generation.generation, probe={
            "format": probe.format, "duration": probe.duration, "kind": probe.kind,
            "width": probe.width, "height": probe.height})
        await self.library.add_history(run.media.id, "validated", {
            "kind": kind, "format": probe.format, "duration": probe.duration,
            "width": probe.width, "height": probe.height}, run.job.id)

    async def _audiovisual(self, run: _Run, probe: Probe, cfg: dict[str, Any]) -> None:
        video_cfg, audio_cfg = cfg["video"], cfg["audio"]
        watermark = _watermark(cfg.get("watermark"), run.out_dir)
        check = passthrough.PassthroughCheck(False, "disabled")
        if cfg.get("passthrough", True) and watermark is None:
            check = await run.blocking(lambda: passthrough.check_passthrough(
                run.source, self.settings.max_keyframe_interval))
        rungs: list[Rung] = []
        if probe.has_video:
            rungs = plan_ladder(probe.width or 0, probe.height or 0, cfg["quality"],
                                video_cfg.get("bitrate") or None)
        source_height = probe.height or 0
        if check.ok:
            # Playable now: the upload itself is the top rendition.
            name = f"{source_height}p" if probe.has_video else "source"
            run.assets.append(run.asset("rendition", name, run.source, "mp4",
                                        width=probe.width, height=probe.height,
                                        bitrate=probe.bitrate))
            await self._publish(run, probe, final=False)
            await self.library.add_history(run.media.id, "passthrough", {}, run.job.id)
            rungs = [r for r in rungs if r.height < source_height]
        else:
            await self.library.add_history(run.media.id, "transcode.needed",
                                           {"reason": check.reason}, run.job.id)
        progress = await run.stage("preprocessing")
        if probe.has_video:
            poster = await run.blocking(lambda: thumbnails.make_poster(
                run.source, run.out_dir / "poster.jpg", progress=progress))
            run.assets.append(run.asset("poster", "poster", poster.path, "jpg",
                                        width=poster.width, height=poster.height,
                                        time=poster.time))
            if self.settings.preview_seconds > 0:
                preview = await run.blocking(lambda: thumbnails.make_preview(
                    run.source, run.out_dir / "preview.mp4", self.settings.preview_seconds,
                    progress=progress))
                run.assets.append(run.asset("preview", "preview", preview, "mp4"))
        progress = await run.stage("transcoding", {"rungs": [r.name for r in rungs],
                                                   "passthrough": check.ok})
        channels, rate = int(audio_cfg["channels"]), int(audio_cfg["sampling"])
        if check.ok and probe.audio_sample_rate in SAMPLE_RATES and probe.audio_channels:
            # Lower rungs beside the uploaded top rung match its audio, so players get one
            # audio rendition for the whole ladder (the packager lists it once).
            channels, rate = min(probe.audio_channels, 2), probe.audio_sample_rate
        audio = transcode.AudioSettings(bitrate=int(audio_cfg["bitrate"]), channels=channels,
                                        sample_rate=rate)
        if probe.has_video and rungs:
            keyframes = None
            if check.ok:  # lower rungs cut where the uploaded top rendition has keyframes
                times = await run.blocking(lambda: passthrough.keyframe_times(run.source))
                keyframes = tuple(times) if times else None
            video = transcode.VideoSettings(
                framerate=None if check.ok else video_cfg.get("framerate"),
                keyframe_interval=float(video_cfg["keyframe"]), preset=self.settings.preset,
                keyframe_times=keyframes)
            renditions = await run.blocking(lambda: transcode.transcode_ladder(
                run.source, run.out_dir, rungs, video, audio, progress, watermark))
            for r in renditions:
                run.assets.append(run.asset("rendition", r.name, r.path, "mp4", width=r.width,
                                            height=r.height, bitrate=r.video_bitrate))
        elif not probe.has_video and not check.ok:
            renditions = await run.blocking(lambda: transcode.transcode_audio_ladder(
                run.source, run.out_dir, list(AUDIO_LADDER), audio, progress))
            for r in renditions:
                run.assets.append(run.asset("rendition", r.name, r.path, "mp4",
                                            bitrate=r.audio_bitrate))
        run.assets.sort(key=lambda a: (a.kind != "rendition", -(a.height or 0),
                                       -(a.bitrate or 0)))
        progress = await run.stage("postprocessing")
        thumbs = cfg["thumbnails"]
        if probe.has_video and thumbs.get("enabled", True) and probe.duration:
            times = thumbnails.thumbnail_times(probe.duration, thumbs.get("count"),
                                               thumbs.get("interval"))
            width, height = (int(x) for x in thumbs["size"].split("x"))
            made = await run.blocking(lambda: thumbnails.make_thumbnails(
                run.source, run.out_dir, times, (width, height), progress))
            for t in made:
                run.assets.append(run.asset("thumbnail", t.path.name, t.path, "jpg",
                                            width=t.width, height=t.height, time=t.time))
        if probe.has_video and self.settings.sprite_interval > 0:
            sprite = await run.blocking(lambda: thumbnails.make_sprite(
                run.source, run.out_dir, self.settings.sprite_interval, progress=progress))
            for image in sprite.images:
                run.assets.append(run.asset("sprite", image.name, image, "jpg"))
            run.assets.append(run.asset("sprite_vtt", "sprite.vtt", sprite.vtt, "vtt"))

    async def _image(self, run: _Run) -> None:
        progress = await run.stage("transcoding")
        variants = await run.blocking(lambda: images.image_variants(
            run.source, run.out_dir, IMAGE_WIDTHS, progress))
        for v in variants:
            run.assets.append(run.asset("image", f"{v.width}w", v.path, v.path.suffix[1:],
                                        width=v.width, height=v.height))
        smallest = variants[-1]
        run.assets.append(run.asset("thumbnail", smallest.path.name, smallest.path,
                                    smallest.path.suffix[1:], width=smallest.width,
                                    height=smallest.height, time=0.0))

    async def _document(self, run: _Run, kind: str) -> None:
        await run.stage("transcoding")
        run.assets.append(run.asset("document", "original", run.source,
                                    run.source.suffix[1:] or "bin"))
        if kind == "document":
            info = await run.blocking(lambda: documents.document_info(
                run.source, run.out_dir / "page-1.jpg"))
            run.assets.append(run.asset("thumbnail", "page-1.jpg", info.thumbnail, "jpg",
                                        width=info.width, height=info.height, time=0.0))
            run.described["meta"] = {**run.described["meta"], "pages": info.pages}

    async def _publish(self, run: _Run, probe: Probe, final: bool) -> None:
        values: dict[str, Any] = {"duration": probe.duration, **run.described}
        if not final:
            await self.library.add_history(run.media.id, "published.early", {}, run.job.id)
        await self.library.publish(run.media.id, run.generation.generation, run.assets, values)
        self.notifier.published(run.media.id)


def _watermark(spec: dict[str, Any] | None, out_dir: Path) -> Watermark | None:
    if not spec:
        return None
    image = None
    if spec.get("image"):
        fd, name = tempfile.mkstemp(suffix=".png", dir=out_dir, prefix=".watermark-")
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(spec["image"]))
        image = Path(name)
    return Watermark(image=image, text=None if image else spec.get("text"),
                     position=spec.get("position", "bottom-right"),
                     opacity=float(spec.get("opacity", 0.5)))


def _prune_runs(generation_dir: Path, in_use: set[str]) -> None:
    """Remove the output folders of earlier runs that no published asset points to any more
    (the published set stays until the next run has published its own)."""
    for path in generation_dir.iterdir():
        if path.is_dir() and path.name not in in_use:
            shutil.rmtree(path, ignore_errors=True)

