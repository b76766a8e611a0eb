"""Live streams at run time: who may publish, their channels, reconnect grace, the end.

`LiveHub` is the `PublishGate` both ingest protocols call: an RTMP stream key or a WHIP
bearer token is checked against the stored hash, a second publisher on a stream that is live
is refused, and a publisher that drops leaves the channel waiting `reconnect_grace` seconds
for it to come back (same lecture, after a discontinuity). When the stream ends (DELETE, or
no publisher within the grace), the last segment is closed, the recording is made and
registered in the library, and the keys stop working.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from ..ingest.frames import Frame, PublishRefused, PublishSink, TrackConfig
from .channel import ChannelSettings, LiveChannel
from .recording import NothingRecorded, make_recording
from .repository import LiveRepository, LiveStream

log = logging.getLogger(__name__)

# (media title, recording file) -> media id of the registered recording
RegisterRecording = Callable[[str, Path], Awaitable[str]]
Emit = Callable[[str, dict], None]


class _Publisher:
    """The sink one publisher connection feeds; inert once replaced or closed."""

    def __init__(self, hub: LiveHub, stream: LiveStream, channel: LiveChannel,
                 protocol: str) -> None:
        self.hub, self.stream, self.channel, self.protocol = hub, stream, channel, protocol
        self.active = True

    def on_track(self, track: TrackConfig) -> None:
        if self.active:
            self.channel.on_track(track)

    def on_frame(self, frame: Frame) -> None:
        if self.active:
            self.channel.on_frame(frame)

    def close(self) -> None:
        if self.active:
            self.active = False
            self.hub._publisher_closed(self)


class LiveHub:
    def __init__(self, repo: LiveRepository, directory: Path, *, target: float,
                 part_target: float, window: int, memory_segments: int,
                 reconnect_grace: float, blocking_timeout: float,
                 register_recording: RegisterRecording, emit: Emit) -> None:
        self.repo = repo
        self.directory = directory
        self.target, self.part_target = target, part_target
        self.window, self.memory_segments = window, memory_segments
        self.reconnect_grace = reconnect_grace
        self.blocking_timeout = blocking_timeout
        self.register_recording = register_recording
        self.emit = emit
        self.channels: dict[str, LiveChannel] = {}
        self.streams: dict[str, LiveStream] = {}  # records of the channels, for playback rules
        self._publishers: dict[str, _Publisher] = {}
        self._grace: dict[str, asyncio.Task[None]] = {}
        self._ending: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    # --- PublishGate -------------------------------------------------------------------------

    async def open_publisher(self, protocol: Literal["rtmp", "whip"], app: str, key: str,
                             remote: str) -> PublishSink:
        if self._closed:
            raise PublishRefused("shutting_down", "the server is shutting down")
        stream = await self._authorize(protocol, app, key)
        if stream.state == "ended" or stream.id in self._ending:
            raise PublishRefused("stream_ended", "this live stream has ended")
        current = self._publishers.get(stream.id)
        if current is not None and current.active:
            raise PublishRefused("already_live", "another publisher is live on this stream")
        grace = self._grace.pop(stream.id, None)
        if grace is not None:
            grace.cancel()
        channel = self.channels.get(stream.id)
        if channel is None:
            channel = LiveChannel(stream.id, self._settings(stream), self.directory / stream.id)
            channel.keep_files = stream.record
            self.channels[stream.id] = channel
        self.streams[stream.id] = stream
        await channel.settle()
        channel.stats.publisher_reset()
        channel.begin_epoch()
        publisher = _Publisher(self, stream, channel, protocol)
        self._publishers[stream.id] = publisher
        if stream.state == "idle":
            await self.repo.set_state(stream.id, "live", started_at=time.time())
            self.emit("live.started", {"id": stream.id, "title": stream.title,
                                       "protocol": protocol})
        log.info("live %s: %s publisher from %s", stream.id, protocol, remote)
        return publisher

    async def _authorize(self, protocol: str, app: str, key: str) -> LiveStream:
        if protocol == "rtmp":
            stream = await self.repo.by_stream_key(key) if app == "live" and key else None
        else:
            stream = await self.repo.get(app)
            if stream is not None and not await self.repo.whip_token_matches(app, key):
                stream = None
        if stream is None:
            raise PublishRefused("invalid_stream_key", "unknown stream key or token")
        return stream

    def _settings(self, stream: LiveStream) -> ChannelSettings:
        low = stream.latency_mode == "low"
        return ChannelSettings(
            target=self.target if low else max(self.target, 4.0),
            part_target=self.part_target if low else 0.0,
            window=self.window, dvr_window=stream.dvr_window,
            memory_segments=self.memory_segments, blocking_timeout=self.blocking_timeout,
            ladder=tuple(stream.ladder))

    def _publisher_closed(self, publisher: _Publisher) -> None:
        live_id = publisher.stream.id
        if self._publishers.get(live_id) is not publisher:
            return
        publisher.channel.publisher_gone()
        if self._closed:
            return
        log.info("live %s: publisher gone; waiting %.0f s for it to return", live_id,
                 self.reconnect_grace)
        self._grace[live_id] = asyncio.get_running_loop().create_task(self._expire(live_id))

    async def _expire(self, live_id: str) -> None:
        await asyncio.sleep(self.reconnect_grace)
        self._grace.pop(live_id, None)
        await self.end(live_id)

    # --- ending ------------------------------------------------------------------------------

    async def end(self, live_id: str) -> None:
        """End the stream (idempotent): close its channel, record it, revoke its keys."""
        task = self._ending.get(live_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._end(live_id))
            self._ending[live_id] = task
        await asyncio.shield(task)

    async def _end(self, live_id: str) -> None:
        grace = self._grace.pop(live_id, None)
        if grace is not None and grace is not asyncio.current_task():
            grace.cancel()
        publisher = self._publishers.pop(live_id, None)
        if publisher is not None:
            publisher.active = False
        stream = await self.repo.get(live_id)
        channel = self.channels.get(live_id)
        if channel is not None:
            await channel.end()
        await self.repo.revoke_keys(live_id)
        if stream is None or stream.state == "ended":
            return
        await self.repo.set_state(live_id, "ended", ended_at=time.time())
        self.emit("live.ended", {"id": live_id, "title": stream.title})
        if stream.record and stream.state == "live":
            await self._record(stream)
        elif not stream.record:
            await asyncio.to_thread(shutil.rmtree, self.directory / live_id, True)

    async def _record(self, stream: LiveStream) -> None:
        directory = self.directory / stream.id
        work = directory / "recording"
        try:
            path = await asyncio.to_thread(make_recording, directory, work)
        except NothingRecorded:
            log.info("live %s: nothing to record", stream.id)
            return
        except Exception:
            log.exception("live %s: the recording could not be made", stream.id)
            return
        media_id = await self.register_recording(stream.title, path)
        await self.repo.set_state(stream.id, "ended", recording_media_id=media_id)
        self.emit("recording.ready", {"id": stream.id, "mediaId": media_id,
                                      "title": stream.title})
        log.info("live %s: recording is media %s", stream.id, media_id)

    async def recover(self) -> None:
        """At start: streams left live by a stopped process are ended and recorded from disk."""
        for stream in await self.repo.list(None, all_organizations=True, state="live",
                                           limit=1000):
            await self.end(stream.id)

    async def close(self) -> None:
        """Clean stop: every live stream ends now, and nothing ingested is lost."""
        self._closed = True
        for task in self._grace.values():
            task.cancel()
        live = list(self._publishers) + list(self._grace)
        self._grace.clear()
        for live_id in dict.fromkeys(live):
            with contextlib.suppress(Exception):
                await self.end(live_id)
        for task in list(self._ending.values()):
            with contextlib.suppress(Exception):
                await task

    def publisher_protocol(self, live_id: str) -> str | None:
        p = self._publishers.get(live_id)
        return p.protocol if p is not None and p.active else None
