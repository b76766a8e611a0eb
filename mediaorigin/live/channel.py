"""One live stream's packager: publishers' frames in, LL-HLS/HLS/DASH segments and parts out.

A channel lives as long as the lecture. Each publisher connection is an `Epoch`; frames are
cut into parts of every rendition at once (fMP4, the VOD writer), parts are joined into
segments, completed segments go to disk (DVR beyond the memory window, and the recording),
and playlist requests may wait for a part that does not exist yet (blocking reload,
preload hints). Everything here runs on the event loop and never blocks it: disk writes go
through one writer task in a thread.

Each video rendition also has a muxed twin carrying the audio too ("av", "av-720p"): what
the LL-HLS master offers, so that a player makes one blocking reload and one part request
per part instead of two of each (half the requests of a crowd of viewers), and an
MPEG-TS one ("ts", "ts-720p") for master-ts.m3u8. Muxed parts are made with the others;
muxed and TS whole segments are made from the video and audio ones when asked for, so
nothing but the tracks themselves is written to disk.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av

from ..ingest.frames import Frame, TrackConfig
from ..packaging.fmp4.reader import read_fragments
from ..packaging.fmp4.writer import init_segment, media_segment, muxed_segment
from ..packaging.live.cutter import CutPart
from ..packaging.live.window import LivePart, LiveRendition, LiveSegment, LiveWindow
from ..packaging.model import MediaError, SampleRun, Track
from ..packaging.mp4.sample_entries import avc_sample_entry
from ..packaging.ts.writer import write_ts_segment
from .epoch import Epoch, EpochConfigChanged
from .ladder import LiveLadder
from .silence import silent_aac_frame
from .slate import SLATE_WAIT, SlateClock, slates_for
from .stats import IngestStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChannelSettings:
    target: float = 2.0
    part_target: float = 0.5  # 0: no LL-HLS parts
    window: int = 6  # segments listed without DVR
    dvr_window: float = 0.0  # seconds; 0: sliding window of `window` segments
    memory_segments: int = 12
    blocking_timeout: float = 6.0
    ladder: tuple[str, ...] = ()  # transcoded rungs, e.g. ("720p", "360p")


def twin_name(video: str, prefix: str = "av") -> str:
    """A video rendition's twin that carries the audio too: "video" -> "av", "720p" ->
    "av-720p" (fMP4); with prefix "ts", "ts" and "ts-720p" (MPEG-TS)."""
    return prefix if video == "video" else f"{prefix}-{video}"


@dataclass
class EpochInfo:
    number: int
    channel_start: float
    unix_start: float
    tracks: dict[str, Track]  # rendition name -> track
    inits: dict[str, bytes]  # of every fMP4 rendition, muxed ones too
    # Muxed fMP4 and MPEG-TS renditions -> the (video, audio) renditions they carry (a name
    # that is not in `tracks`: that track is left out).
    muxed: dict[str, tuple[str, str]] = field(default_factory=dict)
    ts: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class _Segment:
    meta: LiveSegment
    parts: list[dict[str, bytes]] = field(default_factory=list)  # rendition -> part bytes
    runs: list[dict[str, SampleRun]] = field(default_factory=list)  # per part, by rendition
    data: dict[str, bytes] | None = None  # joined segment bytes, while in memory
    # TS and muxed whole segments, made when first asked for (one run for every request that
    # comes meanwhile), kept while `data` is
    derived: dict[str, asyncio.Future[bytes | None]] = field(default_factory=dict)


class LiveChannel:
    def __init__(self, live_id: str, settings: ChannelSettings, directory: Path) -> None:
        self.id = live_id
        self.settings = settings
        self.directory = directory
        self.state = "idle"  # idle, live, reconnecting, ended
        self.stats = IngestStats()
        self.epochs: dict[int, EpochInfo] = {}
        self.renditions: dict[str, LiveRendition] = {}
        self._epoch: Epoch | None = None
        self._configs: dict[str, TrackConfig] = {}
        self._segments: deque[_Segment] = deque()
        self._by_msn: dict[int, _Segment] = {}
        self._next_msn = 0
        self._discontinuities = 0  # before the first listed segment
        self._fragment = 0
        self._media_end = 0.0  # seconds: the latest sample end of any track
        self._target_seen = math.ceil(settings.target)
        self._part_target_seen = settings.part_target  # PART-TARGET: the longest part made
        self._changed = asyncio.Event()
        self._writes: asyncio.Queue[tuple[Path, bytes] | None] = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        self.keep_files = True  # recording: segments leaving the window stay on disk
        self.availability_start: float | None = None
        self._segment_bits: dict[str, deque[tuple[float, int]]] = {}
        self._rendered: dict[tuple, bytes] = {}
        self._viewers: dict[str, float] = {}
        self._ladder: LiveLadder | None = None
        self._rung_configs: dict[str, TrackConfig | None] = {}
        self._loop = asyncio.get_running_loop()
        self._settling: asyncio.Task[None] | None = None
        self._waiting = 0  # requests blocked in wait_for
        self._changed_at = self._loop.time()
        self._tick: asyncio.TimerHandle | None = None
        self._tick_period = min(1.0, settings.blocking_timeout / 4)
        self._audio_only_since: Fraction | None = None  # publisher clock, this epoch
        self._slate: SlateClock | None = None  # this epoch carries the slate

    # --- ingest ----------------------------------------------------------------------------

    def begin_epoch(self) -> None:
        """A publisher (re)connected: what it sends starts after a discontinuity."""
        self._end_epoch()
        self._audio_only_since, self._slate = None, None
        number = max([*self.epochs, -1]) + 1
        offset = self._timeline_end()
        self._epoch = Epoch(number, offset, self.settings.target, self.settings.part_target,
                            self._configs, self._rung_configs)
        self.state = "live"

    def on_track(self, config: TrackConfig) -> None:
        self.stats.track(config)
        if self._epoch is None:
            return
        try:
            self._epoch.on_track(config)
        except EpochConfigChanged:
            self._configs[config.kind] = config
            self.begin_epoch()
            return
        except MediaError as e:
            log.warning("live %s: unusable %s configuration: %s", self.id, config.kind, e)
            return
        self._configs[config.kind] = config
        self._warm(config)
        if config.kind == "video" and config.codec == "h264" and self.settings.ladder:
            self._start_ladder(config)

    def on_frame(self, frame: Frame) -> None:
        self.stats.frame(frame)
        if self._epoch is None or self.state == "ended":
            return
        if frame.kind == "video" and self._slate is not None:
            # The publisher's video after all: a new epoch, with the video it had.
            video = self._slate.replaced
            self.begin_epoch()
            self.on_track(video)
        audio = self._epoch.configs.get("audio")
        if frame.kind == "audio" and audio is not None:
            at = Fraction(frame.dts, audio.timescale)
            if self._slate is None and self._needs_slate(self._epoch, at):
                self._begin_slate(self._epoch)
            if self._slate is not None:
                epoch = self._epoch
                for name, still in self._slate.until(at):
                    self._take(epoch, epoch.on_frame(still) if name == "video"
                               else epoch.on_rung_frame(name, still))
        if frame.kind == "video" and self._ladder is not None:
            self._ladder.on_frame(frame)
        self._take(self._epoch, self._epoch.on_frame(frame))

    def _needs_slate(self, epoch: Epoch, at: Fraction) -> bool:
        """Whether a lecture with video has had SLATE_WAIT seconds of this publisher's audio
        and no video frame (a lecturer back without a camera)."""
        if epoch.started or epoch.video_frames or "video" not in epoch.configs:
            return False
        if self._audio_only_since is None:
            self._audio_only_since = at
        return at - self._audio_only_since >= SLATE_WAIT

    def _warm(self, config: TrackConfig) -> None:
        """Make in a thread now what PyAV makes for a track when its publisher stops sending
        it: the slates for a video (~0.1 s of libx264 at 1080p), the silent frame for an
        audio track (~2 ms). The epoch then finds them cached, and the event loop never
        encodes."""
        if config.kind == "video":
            made = self._loop.run_in_executor(None, slates_for, config, self.settings.ladder,
                                              self.settings.target)
        else:
            made = self._loop.run_in_executor(None, silent_aac_frame, config.config)
        made.add_done_callback(lambda f: f.cancelled() or f.exception())  # raised again if used

    def _begin_slate(self, epoch: Epoch) -> None:
        """The epoch carries the slate, in the size of the lecture's video and of each rung,
        from the first audio frame on: its configurations replace theirs before the epoch
        starts, and its frames go straight to the epoch (the ladder has nothing to do)."""
        assert self._audio_only_since is not None
        video = epoch.configs["video"]
        try:
            slates = slates_for(video, epoch.rung_configs, self.settings.target)
        except (MediaError, av.FFmpegError) as e:
            log.warning("live %s: no slate (%s); waiting for video", self.id, e)
            self._audio_only_since = None  # tried again after SLATE_WAIT more seconds
            return
        log.info("live %s: audio without video; the video carries a slate", self.id)
        self._slate = SlateClock(slates, self._audio_only_since, video)
        self._configs["video"] = slates["video"].config
        epoch.on_track(slates["video"].config)
        for name, slate in slates.items():
            if name != "video":
                epoch.on_rung_track(name, slate.config)

    def _take(self, epoch: Epoch, parts: list[CutPart]) -> None:
        if epoch.number not in self.epochs and epoch.started:
            self._start_epoch_info(epoch)
        for part in parts:
            self._add_part(part)

    # --- ABR ladder --------------------------------------------------------------------------

    def _start_ladder(self, config: TrackConfig) -> None:
        if self._ladder is None:
            try:
                height = avc_sample_entry(config.config).height
            except MediaError:
                return
            rungs = LiveLadder.rungs_for(height, list(self.settings.ladder))
            if not rungs:
                return
            self._ladder = LiveLadder(rungs, self._from_ladder_thread)
            self._rung_configs.update({r.name: None for r in rungs})
            if self._epoch is not None and not self._epoch.started:
                self._epoch.rung_configs.update({r.name: None for r in rungs})
        self._ladder.on_track(config)

    def _from_ladder_thread(self, name: str, item: TrackConfig | Frame) -> None:
        self._loop.call_soon_threadsafe(self._on_rung, name, item)

    def _on_rung(self, name: str, item: TrackConfig | Frame) -> None:
        if isinstance(item, TrackConfig):
            self._rung_configs[name] = item
            if self._epoch is not None:
                self._epoch.on_rung_track(name, item)
            return
        if self._epoch is not None and self.state != "ended":
            self._take(self._epoch, self._epoch.on_rung_frame(name, item))


    def publisher_gone(self) -> None:
        """Cut what the publisher sent so far; the channel waits (reconnect grace).

        With a ladder, the epoch ends once the transcoder has delivered its last frames
        (`settle` waits for that)."""
        if self.state == "live":
            self.state = "reconnecting"
        if self._ladder is None:
            self._end_epoch()
            self._notify()
            return
        ladder, self._ladder = self._ladder, None
        self._settling = self._loop.create_task(self._end_after(ladder))

    async def _end_after(self, ladder: LiveLadder) -> None:
        await asyncio.to_thread(ladder.close)
        await asyncio.sleep(0)  # the rung frames it emitted while closing land first
        self._end_epoch()
        self._notify()

    async def settle(self) -> None:
        """Wait until the previous publisher's media is all in (before a new epoch)."""
        if self._settling is not None:
            await self._settling
            self._settling = None

    async def end(self) -> None:
        """No more publishers: close the last segment and flush every file to disk."""
        await self.settle()
        if self._ladder is not None:
            ladder, self._ladder = self._ladder, None
            await self._end_after(ladder)
        self._end_epoch()
        self.state = "ended"
        self._notify()
        await self._writes.put(None)
        await self._writer

    # --- building --------------------------------------------------------------------------

    def _end_epoch(self) -> None:
        if self._epoch is None:
            return
        epoch, self._epoch = self._epoch, None
        parts = epoch.finish()
        if parts:
            self._take(epoch, parts)
        self._complete_current()

    def _timeline_end(self) -> float:
        """Where the next epoch starts: after every track's last sample (audio may run a
        few frames past the video), so timestamps never go back across a reconnect."""
        if not self._segments:
            return self._media_end
        last = self._segments[-1].meta
        return max(last.start + last.duration, self._media_end)

    def _start_epoch_info(self, epoch: Epoch) -> None:
        tracks: dict[str, Track] = {}
        assert epoch.tracks is not None
        if epoch.tracks.video is not None:
            tracks["video"] = epoch.tracks.video
        tracks.update(epoch.tracks.rungs)
        if epoch.tracks.audio is not None:
            tracks["audio"] = epoch.tracks.audio
        now = time.time()
        start = float(epoch.offset)
        info = EpochInfo(epoch.number, start, now, tracks,
                         {name: init_segment(t) for name, t in tracks.items()})
        for name, t in tracks.items():
            if t.kind != "video":
                continue
            info.ts[twin_name(name, "ts")] = (name, "audio")
            if "audio" in tracks:
                info.muxed[twin_name(name)] = (name, "audio")
                info.inits[twin_name(name)] = init_segment(t, tracks["audio"])
        if not info.ts:
            info.ts["ts"] = ("video", "audio")  # audio only
        self.epochs[epoch.number] = info
        if self.availability_start is None:
            self.availability_start = now - start
        for name, t in tracks.items():
            self._save(self._epoch_dir(epoch.number) / name / "init.mp4", info.inits[name])
            self._list(name, t.kind, t, 4_000_000 if t.kind == "video" else 160_000)
        for kind, derived in (("muxed", info.muxed), ("ts", info.ts)):
            for name, carries in derived.items():
                present = tuple(n for n in carries if n in tracks)
                self._list(name, kind, tracks[present[0]], 4_160_000, present)

    def _list(self, name: str, kind: str, track: Track, estimate: int,
              carries: tuple[str, ...] = ()) -> None:
        """Offer a rendition, keeping the bandwidth measured in earlier epochs."""
        old = self.renditions.get(name)
        self.renditions[name] = LiveRendition(
            name, kind, track.codec, track.timescale,
            bandwidth=old.bandwidth if old else estimate,
            average_bandwidth=old.average_bandwidth if old else 0, carries=carries)

    def _add_part(self, part: CutPart) -> None:
        epoch = self._current_epoch()
        runs = {name: run for name, run in (("video", part.video), ("audio", part.audio),
                                            *part.rungs.items())
                if run is not None and run.sizes and name in epoch.tracks}
        current = self._segments[-1] if self._segments else None
        if current is None or current.meta.complete or part.new_segment or \
                current.meta.epoch != epoch.number:
            self._complete_current()
            meta = LiveSegment(self._next_msn, epoch.number, part.start,
                               epoch.unix_start + part.start - epoch.channel_start)
            self._next_msn += 1
            current = _Segment(meta)
            self._segments.append(current)
            self._by_msn[meta.msn] = current
        data: dict[str, bytes] = {}
        for name, run in runs.items():
            self._fragment += 1
            data[name] = media_segment(run, self._fragment)
            end = (run.base_time + sum(run.durations)) / run.track.timescale
            self._media_end = max(self._media_end, end)
        # A muxed or TS twin is missing where the first track it carries is (its video).
        missing = {name for name in epoch.tracks if name not in runs}
        missing.update(name for name, carries in (*epoch.muxed.items(), *epoch.ts.items())
                       if next((n for n in carries if n in epoch.tracks), None) not in runs)
        for name, (video, audio) in epoch.muxed.items():
            if name not in missing:
                self._fragment += 1
                data[name] = muxed_segment([runs.get(video), runs.get(audio)], self._fragment)
        current.parts.append(data)
        current.runs.append(runs)
        own = {name: sum(run.durations) / run.track.timescale for name, run in runs.items()}
        current.meta.parts.append(LivePart(part.duration, part.independent, {
            name: d for name, d in own.items() if abs(d - part.duration) > 1e-6},
            frozenset(missing)))
        if self.settings.part_target:
            self._part_target_seen = max(self._part_target_seen,
                                         math.ceil(part.duration * 1000 - 1e-6) / 1000)
        if part.ends_segment:
            self._complete_current()  # listed now, not when the next part arrives
        self._notify()

    def _current_epoch(self) -> EpochInfo:
        number = self._epoch.number if self._epoch is not None else max(self.epochs)
        return self.epochs[number]

    def _complete_current(self) -> None:
        if not self._segments or self._segments[-1].meta.complete:
            return
        seg = self._segments[-1]
        seg.meta.complete = True
        info = self.epochs[seg.meta.epoch]
        seg.data = {name: b"".join(p[name] for p in seg.parts if name in p)
                    for name in info.tracks if not seg.meta.gap(name)}
        for name in seg.data:
            runs = [part[name] for part in seg.runs if name in part]
            if runs:
                seg.meta.ticks[name] = (runs[0].base_time, sum(sum(r.durations) for r in runs))
            self._save(self._segment_path(seg.meta.epoch, name, seg.meta.msn), seg.data[name])
            self._measure(name, seg.meta.duration, len(seg.data[name]))
        for name, (video, audio) in (*info.muxed.items(), *info.ts.items()):
            if video in seg.meta.ticks:
                seg.meta.ticks[name] = seg.meta.ticks[video]
            self._measure(name, seg.meta.duration,
                          len(seg.data.get(video, b"")) + len(seg.data.get(audio, b"")))
        # EXTINF rounded to the nearest second must not exceed it (RFC 8216 4.3.3.1).
        self._target_seen = max(self._target_seen, int(seg.meta.duration + 0.5))
        self._trim()
        self._notify()

    def _measure(self, name: str, duration: float, size: int) -> None:
        """Bandwidth for the master playlist: peak and average over the last segments."""
        if duration <= 0:
            return
        window = self._segment_bits.setdefault(name, deque(maxlen=10))
        window.append((duration, size * 8))
        peak = max(bits / d for d, bits in window)
        average = sum(bits for _, bits in window) / sum(d for d, _ in window)
        self.renditions[name] = replace(self.renditions[name], bandwidth=int(peak * 1.1) + 1,
                                        average_bandwidth=int(average) + 1)

    def _trim(self) -> None:
        s = self.settings
        complete = [seg for seg in self._segments if seg.meta.complete]
        if s.dvr_window > 0:
            end = self._timeline_end()
            drop = sum(1 for seg in complete
                       if end - (seg.meta.start + seg.meta.duration) > s.dvr_window)
        else:
            drop = max(0, len(complete) - max(s.window, 3))
        for _ in range(drop):
            old = self._segments.popleft()
            del self._by_msn[old.meta.msn]
            if self._segments and self._segments[0].meta.epoch != old.meta.epoch:
                self._discontinuities += 1
            if not self.keep_files:
                for name in self.epochs[old.meta.epoch].tracks:
                    self._unlink(self._segment_path(old.meta.epoch, name, old.meta.msn))
        # Memory: recent segments keep their bytes; parts only while they can be listed.
        in_memory = [seg for seg in self._segments if seg.meta.complete]
        for seg in in_memory[: max(0, len(in_memory) - s.memory_segments)]:
            seg.data = None
            seg.derived = {}
            seg.runs = []
        for seg in in_memory[: max(0, len(in_memory) - 4 * math.ceil(s.target / max(
                s.part_target, 0.1)))]:
            seg.parts = []

    def _notify(self) -> None:
        self._rendered.clear()
        self._wake()

    def _wake(self) -> None:
        self._changed_at = self._loop.time()
        self._changed.set()
        self._changed = asyncio.Event()

    # --- disk --------------------------------------------------------------------------------

    def _epoch_dir(self, epoch: int) -> Path:
        return self.directory / f"e{epoch}"

    def _segment_path(self, epoch: int, name: str, msn: int) -> Path:
        return self._epoch_dir(epoch) / name / f"{msn}.m4s"

    def _save(self, path: Path, data: bytes) -> None:
        self._writes.put_nowait((path, data))

    def _unlink(self, path: Path) -> None:
        self._writes.put_nowait((path, b""))

    async def _write_loop(self) -> None:
        while True:
            item = await self._writes.get()
            if item is None:
                return
            path, data = item
            try:
                await asyncio.to_thread(_write_file, path, data)
            except OSError as e:
                log.error("live %s: cannot write %s: %s", self.id, path.name, e)

    # --- playback ----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Players need one whole segment to start (hls.js and the MPD's Period)."""
        # segments complete in order, so the newest complete one is last or next to last
        segs = self._segments
        return bool(segs) and (segs[-1].meta.complete
                               or (len(segs) > 1 and segs[-2].meta.complete))

    def window(self) -> LiveWindow:
        return LiveWindow(
            segments=[seg.meta for seg in self._segments if seg.meta.parts],
            renditions=list(self.renditions.values()),
            target_duration=self._target_seen,
            part_target=self._part_target_seen if self.settings.part_target else 0.0,
            ended=self.state == "ended",
            discontinuity_sequence=self._discontinuities,
            availability_start=self.availability_start or time.time(),
            epoch_starts={n: (e.channel_start, e.unix_start) for n, e in self.epochs.items()},
            dvr_depth=self.settings.dvr_window or self.settings.window * self.settings.target,
        )

    def rendered(self, key: tuple, render: Callable[[LiveWindow], str]) -> bytes:
        """A playlist rendered (and encoded) once per channel state and key (rendition,
        query...): a crowd blocked on the same part is answered with the same bytes."""
        body = self._rendered.get(key)
        if body is None:
            if len(self._rendered) > 4096:
                self._rendered.clear()
            body = self._rendered[key] = render(self.window()).encode()
        return body

    def viewer(self, who: str) -> None:
        if len(self._viewers) > 100_000:
            self.viewers()  # drop the ones gone quiet before the map grows further
        self._viewers[who] = time.monotonic()

    def viewers(self, within: float = 15.0) -> int:
        """Distinct viewers (token, else address) that fetched something lately."""
        now = time.monotonic()
        for who in [w for w, t in self._viewers.items() if now - t > within]:
            del self._viewers[who]
        return len(self._viewers)

    def has(self, msn: int, part: int | None) -> bool:
        """Does the playlist already hold segment `msn` (complete) or its part `part`?"""
        last = self._segments[-1].meta if self._segments else None
        if last is None:
            return False
        if msn < last.msn:
            return True
        if msn > last.msn:
            return False
        return last.complete if part is None else (len(last.parts) > part or last.complete)

    def too_far(self, msn: int) -> bool:
        """A blocking request more than two segments ahead is refused (400)."""
        last = self._segments[-1].meta.msn if self._segments else -1
        return msn > last + 2

    async def wait_for(self, msn: int, part: int | None, timeout: float) -> bool:
        """Wait until `has(msn, part)`; False about `timeout` seconds on (up to one tick
        late) or when the stream ends. A crowd of players blocks at once at every part, so
        a blocked request has no timer of its own: each wake (a change, or the channel's
        tick while nothing changes) checks its deadline."""
        if self.has(msn, part):
            return True
        deadline = self._loop.time() + timeout
        self._waiting += 1
        try:
            while not self.has(msn, part):
                if self.state == "ended" or self._loop.time() >= deadline:
                    return False
                if self._tick is None:
                    self._tick = self._loop.call_later(self._tick_period, self._on_tick)
                await self._changed.wait()
        finally:
            self._waiting -= 1
        return True

    def _on_tick(self) -> None:
        """Wake blocked requests to check their deadlines, if nothing else did lately; runs
        every tick for as long as requests are blocked."""
        self._tick = None
        if not self._waiting:
            return
        if self._loop.time() - self._changed_at >= self._tick_period:
            self._wake()
        self._tick = self._loop.call_later(self._tick_period, self._on_tick)

    def init(self, name: str, epoch: int) -> bytes | None:
        info = self.epochs.get(epoch)
        return info.inits.get(name) if info is not None else None

    def part(self, name: str, msn: int, index: int) -> bytes | None:
        seg = self._by_msn.get(msn)
        if seg is None or index >= len(seg.parts):
            return None
        return seg.parts[index].get(name)

    async def segment(self, name: str, msn: int) -> bytes | None:
        seg = self._by_msn.get(msn)
        if seg is None or not seg.meta.complete or seg.meta.gap(name):
            return None
        info = self.epochs[seg.meta.epoch]
        if name in info.muxed:
            return await self._made_from_tracks(seg, name, info.muxed[name], lambda runs:
                                                muxed_segment(runs, msn + 1))
        if name not in info.tracks:
            return None
        if seg.data is not None:
            return seg.data.get(name)
        path = self._segment_path(seg.meta.epoch, name, msn)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except OSError:
            return None

    async def ts_segment(self, name: str, msn: int) -> bytes | None:
        """Segment `msn` of MPEG-TS rendition `name` ("ts", "ts-720p")."""
        seg = self._by_msn.get(msn)
        if seg is None or not seg.meta.complete or seg.meta.gap(name):
            return None
        carries = self.epochs[seg.meta.epoch].ts.get(name)
        if carries is None:
            return None
        return await self._made_from_tracks(seg, name, carries, lambda runs:
                                            write_ts_segment(*runs, sequence=msn))

    async def _made_from_tracks(self, seg: _Segment, name: str, tracks: tuple[str, str],
                                make: Callable[[list[SampleRun | None]], bytes]) -> bytes | None:
        """A whole segment written from the runs of its tracks (from the parts while in
        memory, else read back from disk), in a thread. Requests that come while it is made
        wait for the same run (a crowd asks for a new segment at once); the result is kept
        while the segment's bytes are."""
        made = seg.derived.get(name)
        if made is None:
            made = seg.derived[name] = asyncio.ensure_future(
                self._write_from_tracks(seg, tracks, make))

            def forget(done: asyncio.Future[bytes | None]) -> None:
                failed = done.cancelled() or done.exception() is not None
                if (failed or done.result() is None or seg.data is None) and \
                        seg.derived.get(name) is done:
                    del seg.derived[name]

            made.add_done_callback(forget)
        return await asyncio.shield(made)

    async def _write_from_tracks(self, seg: _Segment, tracks: tuple[str, str],
                                 make: Callable[[list[SampleRun | None]], bytes]
                                 ) -> bytes | None:
        epoch_tracks = self.epochs[seg.meta.epoch].tracks
        runs: list[SampleRun | None] = []
        for track in tracks:
            if track not in epoch_tracks:
                runs.append(None)
            elif seg.runs:
                runs.append(_merge([part[track] for part in seg.runs if track in part]))
            else:
                raw = await self.segment(track, seg.meta.msn)
                if raw is None:
                    return None
                runs.append(await asyncio.to_thread(read_fragments, raw, epoch_tracks[track]))
        return await asyncio.to_thread(make, [r if r and r.sizes else None for r in runs])


def _merge(runs: list[SampleRun]) -> SampleRun | None:
    if not runs:
        return None
    first = runs[0]
    cts: list[int] | None = None
    if any(r.cts_offsets for r in runs):
        cts = [c for r in runs for c in (r.cts_offsets or [0] * len(r.sizes))]
    return SampleRun(first.track, first.base_time, [d for r in runs for d in r.durations],
                     [s for r in runs for s in r.sizes], cts,
                     [s for r in runs for s in r.sync], b"".join(r.data for r in runs))


def _write_file(path: Path, data: bytes) -> None:
    if not data:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
