"""Playback: from a media id and a request path to manifest text or segment bytes.

A media item is "prepared" once (indexes of its files, planned segments, captions) and kept
for a couple of seconds before its files are checked again, so the warm path is a dict
lookup. Packaging runs in a thread pool; concurrent requests for the same cold segment share
one packaging job (a CDN miss storm costs one packaging run).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TypeVar

from ..auth.keystore import ContentKey, KeySource
from ..errors import ClientError
from ..library.records import PlayableItem
from ..packaging import urls
from ..packaging.crypto.progressive import CHUNK, Progressive
from ..packaging.dash.mpd import mpd, subtitle_shift
from ..packaging.fmp4.writer import init_segment, media_segment
from ..packaging.hls.playlists import (
    iframe_playlist,
    iframe_samples,
    master_playlist,
    media_playlist,
    subtitle_playlist,
    subtitle_window,
)
from ..packaging.model import MediaError, SampleRun
from ..packaging.runs import assemble, read_plan, sample_run
from ..packaging.segmenter import Presentation, Rendition, build_presentation
from ..packaging.ts.writer import write_ts_iframe, write_ts_segment
from ..packaging.webvtt import SubtitleTrack, parse_webvtt, vtt_document, vtt_segment
from ..storage.local import LocalStorage, StorageError
from . import protection
from .cache import LRU, CachedBody, IndexCache, SegmentCache
from .growing import Growing, grow

T = TypeVar("T")
Data = bytes | memoryview  # a packaged body (memoryview: an encrypted segment's buffer)
PACKAGER_VERSION = "3"  # 3: CENC sample IVs count up from one hash per segment
REVALIDATE_SECONDS = 2.0

MIME = {
    "m3u8": "application/vnd.apple.mpegurl",
    "mpd": "application/dash+xml",
    "mp4": "video/mp4",
    "m4s": "video/iso.segment",
    "ts": "video/mp2t",
    "vtt": "text/vtt; charset=utf-8",
}


class PlaybackError(ClientError):
    """A playback request refused: unknown media, bad URL, unplayable file."""


@dataclass
class Prepared:
    item: PlayableItem
    presentation: Presentation
    subtitles: list[SubtitleTrack]
    version: str  # identifies content + packaging settings; same on every replica
    fingerprints: tuple[str, ...]
    last_modified: float
    checked_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Body:
    """A response body with what the HTTP layer needs to serve it well."""

    content: CachedBody
    content_type: str
    etag: str
    last_modified: float
    immutable: bool  # segments never change under the same URL; manifests may
    growing: Growing | None = None  # a cold encrypted segment still being made


Clip = tuple[float, float] | None


class Playback:
    def __init__(self, lookup: Callable[[str], Awaitable[PlayableItem | None]],
                 storage: LocalStorage, indexes: IndexCache,
                 segments: SegmentCache, target: float, threads: int = 4,
                 keys: KeySource | None = None, key_rotation: int = 0) -> None:
        self.keys = keys  # content keys for encrypted playback (?drm=)
        self.key_rotation = key_rotation  # HLS: segments per key (0: one key per media)
        self.lookup = lookup  # the library: which files and captions make up a media item
        self.storage = storage
        self.indexes = indexes
        self.segments = segments
        self.target = target
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="packager")
        self._prepared: LRU[tuple[str, Clip], Prepared] = LRU(1024)
        self._manifests: LRU[str, bytes] = LRU(32 * 1024 * 1024, len)
        self._inflight: dict[str, asyncio.Future[Data]] = {}
        self._growing: dict[str, Growing] = {}
        self._preparing: dict[tuple[str, Clip], asyncio.Task[Prepared]] = {}

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    # -- preparing a media item ------------------------------------------------------------

    async def prepare(self, media_id: str, clip: Clip) -> Prepared:
        key = (media_id, clip)
        prep = self._prepared.get(key)
        if prep is not None and time.monotonic() - prep.checked_at < REVALIDATE_SECONDS:
            return prep
        # One look at the library per item at a time; the requests that arrive meanwhile
        # wait for it. (Each used to look on its own: under load, every REVALIDATE_SECONDS a
        # stampede of lookups, ~12% of a busy origin's CPU.) A task of its own, so that a
        # client that goes away does not fail the others.
        task = self._preparing.get(key)
        if task is None:
            task = self._preparing[key] = asyncio.ensure_future(
                self._prepare_now(key, prep))
            task.add_done_callback(lambda t: self._prepare_done(key, t))
        return await asyncio.shield(task)

    def _prepare_done(self, key: tuple[str, Clip], task: asyncio.Task[Prepared]) -> None:
        if self._preparing.get(key) is task:
            del self._preparing[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter raises it itself

    async def _prepare_now(self, key: tuple[str, Clip], prep: Prepared | None) -> Prepared:
        media_id, clip = key
        item = await self.lookup(media_id)
        if item is None:
            self._prepared.discard(lambda k: k[0] != media_id)
            raise PlaybackError(404, "media_not_found", f"no playable media {media_id!r}")
        fresh = await self._run(lambda: self._prepare_blocking(item, clip, prep))
        self._prepared.put(key, fresh)
        return fresh

    def revalidate(self, media_id: str) -> None:
        """The library published something new for this item: look again at the next
        request instead of up to REVALIDATE_SECONDS later (other processes still wait)."""
        self._prepared.discard(lambda k: k[0] != media_id)
        for key in [k for k in self._preparing if k[0] == media_id]:
            del self._preparing[key]  # a look begun before this change: not to be joined

    def forget(self, media_id: str, storage_keys: list[str]) -> None:
        """Drop everything cached for a media item (it was deleted or replaced)."""
        self.revalidate(media_id)
        self._manifests.discard(lambda k: not k.startswith(media_id + "/"))
        self.segments.forget(media_id)
        for key in storage_keys:
            self.indexes.forget(key)

    def _prepare_blocking(self, item: PlayableItem, clip: Clip, old: Prepared | None
                          ) -> Prepared:
        try:
            stats = [self.storage.stat(k) for k in (*item.files, *(c.storage_key
                                                                  for c in item.captions))]
        except StorageError:
            raise PlaybackError(404, "media_not_found", "the media's files are missing") from None
        fps = tuple(s.fingerprint for s in stats)
        if old is not None and old.fingerprints == fps and old.item == item:
            old.checked_at = time.monotonic()
            return old
        try:
            indexes = [self.indexes.get(k, s) for k, s in zip(item.files, stats, strict=False)]
        except MediaError as e:
            raise PlaybackError(422, "media_unplayable", str(e)) from None
        tracks = [(src, t) for src, idx in enumerate(indexes) for t in idx.tracks]
        if clip is not None:
            total = max((t.duration / t.timescale for _, t in tracks), default=0.0)
            if clip[0] >= total:
                raise PlaybackError(400, "invalid_clip",
                                    f"clip starts at {clip[0]} s, after the end ({total:.3f} s)")
        try:
            presentation = build_presentation(tracks, self.target, clip)
        except MediaError as e:
            raise PlaybackError(422, "media_unplayable", str(e)) from None
        if not presentation.renditions[0].segments:
            raise PlaybackError(400, "invalid_clip", "the clip contains no media")
        digest = hashlib.blake2b(digest_size=12)
        digest.update(f"{PACKAGER_VERSION}|{self.target}|{clip}".encode())
        for idx in indexes:
            digest.update(idx.content_id.encode())
        subtitles = []
        for n, caption in enumerate(item.captions):
            try:
                text = self.storage.read_text(caption.storage_key)
                cues = parse_webvtt(text)
            except (MediaError, StorageError, UnicodeDecodeError) as e:
                raise PlaybackError(422, "captions_unreadable",
                                    f"captions {caption.language}: {e}") from None
            digest.update(hashlib.blake2b(text.encode()).digest())
            subtitles.append(SubtitleTrack(f"s{n}", caption.language, "", cues))
        return Prepared(item, presentation, subtitles, digest.hexdigest(), fps,
                        max(s.mtime_ns for s in stats) / 1e9)

    # -- responses -------------------------------------------------------------------------

    def _etag(self, key: str) -> str:
        """From the cache key minus its media id: the same content has the same ETag on every
        replica, whatever id it was imported under."""
        content = key.split("/", 1)[1]
        return '"' + hashlib.blake2b(content.encode(), digest_size=10).hexdigest() + '"'

    async def entry_manifest(self, prep: Prepared, name: str, query: str) -> Body:
        """master.m3u8, master-ts.m3u8 or manifest.mpd."""
        p = prep.presentation
        makers: dict[str, Callable[[], str]] = {
            "master.m3u8": lambda: master_playlist(p, prep.subtitles, "fmp4", query),
            "master-ts.m3u8": lambda: master_playlist(p, prep.subtitles, "ts", query),
            "manifest.mpd": lambda: mpd(p, prep.subtitles, query),
        }
        if name not in makers:
            raise PlaybackError(404, "not_found", "no such manifest")
        make = makers[name]
        drm = protection.drm_mode(query)
        if drm is not None:
            protection.check_protocol(drm, name)
            content = await self.content_key(prep.item.id)
            plain = make
            if name.endswith(".m3u8"):
                def make() -> str:
                    return protection.protect_master(plain())
            else:
                def make() -> str:
                    return protection.protect_mpd(plain(), drm, content)
        return await self._text_body(prep, f"{prep.item.id}/{prep.version}/{name}?{query}", name,
                                     make, immutable=False)

    async def content_key(self, media_id: str) -> ContentKey:
        if self.keys is None:
            raise PlaybackError(501, "drm_not_configured", "encrypted playback is not set up")
        return await self.keys.key_for(media_id)

    async def _text_body(self, prep: Prepared, key: str, name: str, make: Callable[[], str],
                         immutable: bool) -> Body:
        """A manifest, playlist or caption body: memory-cached, made off the event loop
        (bitrate statistics walk every sample of a long lecture)."""
        data = self._manifests.get(key)
        if data is None:
            data = await self._once(key, lambda: self._remember(self._manifests, key,
                                                                make().encode()))
        ext = name.rsplit(".", 1)[1]
        return Body(CachedBody(data, None, len(data)), MIME[ext], self._etag(key),
                    prep.last_modified, immutable)

    async def child(self, prep: Prepared, rid: str, name: str, query: str) -> Body:
        """Anything under /vod/{id}/{rid}/: playlists, init and media segments, captions."""
        child = urls.parse_child(name)
        if child is None:
            raise PlaybackError(404, "not_found", "unknown playback URL")
        drm = protection.drm_mode(query)
        content = await self.content_key(prep.item.id) if drm is not None else None
        if drm is not None and (child.kind in ("iframes_playlist", "iframe")
                                or (child.kind == "playlist" and drm not in
                                    protection.HLS_MODES and not rid.startswith("s"))):
            raise PlaybackError(400, "drm_not_for_protocol", f"not served with drm={drm}")
        if child.kind in ("playlist", "iframes_playlist", "vtt_segment", "vtt_full"):
            def small() -> str:
                text = self._small_child(prep, rid, child, query)
                if drm in protection.HLS_MODES and child.kind == "playlist" and \
                        not rid.startswith("s") and content is not None:
                    if drm == "cbcs":
                        if child.container == "ts":
                            raise PlaybackError(400, "drm_not_for_protocol",
                                                "cbcs is served with fMP4")
                        return protection.fairplay_playlist(text, content)
                    text = protection.protect_media_playlist(text, query, drm,
                                                             self.key_rotation)
                return text

            return await self._text_body(
                prep, f"{prep.item.id}/{prep.version}/{rid}/{name}?{query}", name, small,
                immutable=child.kind == "vtt_segment")
        rendition = prep.presentation.rendition(rid)
        if rendition is None:
            raise PlaybackError(404, "not_found", f"no rendition {rid!r}")
        key = f"{prep.item.id}/{prep.version}/{rid}/{name}"

        def package() -> bytes:
            if drm == "sample-aes" and content is not None:
                if child.container != "ts":
                    raise PlaybackError(400, "drm_not_for_protocol",
                                        "SAMPLE-AES is served with MPEG-TS segments")
                n = child.number or 0
                key = protection.hls_key(content, protection.key_period(n, self.key_rotation),
                                         self.key_rotation)
                return self._package(prep, rendition, child,
                                     (key, protection.aes128.segment_iv(n)))
            if drm is None or content is None:
                return self._package(prep, rendition, child)
            # (encrypted media segments are made by encrypt(), below)
            return protection.protect_init(self._package(prep, rendition, child), drm,
                                           content)

        def encrypt() -> Progressive:
            """An encrypted media segment (not SAMPLE-AES: TS writes that itself), made
            step by step (sent while made, or whole: see below). fMP4 is handed over
            unjoined (head, samples): the encrypted output is then the only copy of the
            whole segment that is made."""
            assert drm is not None and content is not None
            if drm in protection.DASH_MODES and child.container == "ts":
                raise PlaybackError(400, "drm_not_for_protocol",
                                    f"{drm} is served with fMP4 segments")
            clear = self._package(prep, rendition, child, parts=child.container == "fmp4")
            return protection.protect_segment(clear, drm, content, rendition.track,
                                              child.number or 0, f"{rid}|{prep.version}",
                                              self.key_rotation)

        def encrypted_whole() -> memoryview:
            return encrypt().complete()

        if drm is not None and content is not None:
            key += f"|{drm}|{content.kid.hex()}"
        ext = name.rsplit(".", 1)[1]
        body = self.segments.get(key)
        make: Callable[[], Data] = package
        if body is None and drm not in (None, "sample-aes") and child.kind == "segment":
            # A large AES-128 segment is sent while it is encrypted: whole-segment CBC is
            # serial and as slow as the transfer. The CENC schemes cost a fraction of it, in
            # a cipher call per sample; sent progressively, each call would hand the GIL
            # to and from the loop writing the chunks, which costs more than the overlap
            # gains (cold 2.5 MB segments measured 1.44-1.49x clear that way, 1.37-1.38x
            # whole). Small segments (audio) go whole too: no chunk hand-offs.
            if drm == "aes-128" and self._payload(rendition, child.number or 0) > 2 * CHUNK:
                growing = await self._grow(key, encrypt)
                size = await growing.started()
                return Body(CachedBody(None, None, size), MIME[ext], self._etag(key),
                            prep.last_modified, immutable=True, growing=growing)
            make = encrypted_whole
        if body is None:
            data = await self._once(key, lambda: self._remember(self.segments, key, make()))
            body = CachedBody(data, None, len(data))
        return Body(body, MIME[ext], self._etag(key), prep.last_modified, immutable=True)

    @staticmethod
    def _payload(r: Rendition, number: int) -> int:
        """Bytes of samples in segment `number` of `r` (0 when there is no such segment)."""
        seg = r.segment(number)
        return sum(r.track.sizes[seg.first : seg.end]) if seg is not None else 0

    def _small_child(self, prep: Prepared, rid: str, child: urls.Child, query: str) -> str:
        p = prep.presentation
        if rid.startswith("s"):
            sub = next((s for s in prep.subtitles if s.id == rid), None)
            if sub is None:
                raise PlaybackError(404, "not_found", f"no subtitles {rid!r}")
            ref = p.renditions[0]
            if child.kind == "playlist":
                return subtitle_playlist(ref, query, child.container)
            if child.kind == "vtt_segment":
                window = subtitle_window(ref, child.number or 0, p.offset)
                if window is None:
                    raise PlaybackError(404, "not_found", "segment number out of range")
                # fMP4 presents at presentation time; TS adds the presentation offset.
                mpegts = round(p.offset * 90000) if child.container == "ts" else 0
                return vtt_segment(sub.cues, *window, mpegts)
            if child.kind == "vtt_full":
                start = subtitle_shift(p)  # the MPD's time zero, in presentation seconds
                end = start + p.duration
                return vtt_document(sub.cues, start, start, end)
            raise PlaybackError(404, "not_found", "unknown subtitles URL")
        r = p.rendition(rid)
        if r is None:
            raise PlaybackError(404, "not_found", f"no rendition {rid!r}")
        if child.kind == "playlist":
            if child.container == "ts" and r.kind == "audio" and r is self._muxed_audio(p):
                raise PlaybackError(404, "not_found", "this audio is muxed into the video")
            return media_playlist(r, child.container, query)
        if child.kind == "iframes_playlist" and r.kind == "video":
            return iframe_playlist(r, child.container, query)
        raise PlaybackError(404, "not_found", "unknown playlist")

    async def _once(self, key: str, work: Callable[[], Data]) -> Data:
        """Run `work` in the pool; concurrent callers with the same key share one run."""
        future = self._inflight.get(key)
        if future is not None:
            return await asyncio.shield(future)
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            data = await self._run(work)
            future.set_result(data)
            return data
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[key]

    @staticmethod
    def _remember(cache: LRU[str, bytes] | SegmentCache, key: str, data: Data) -> Data:
        cache.put(key, data)
        return data

    async def _grow(self, key: str, make: Callable[[], Progressive]) -> Growing:
        """Start making a segment progressively in the pool, or follow the run already
        making it; once whole it goes to the segment cache."""
        growing = self._growing.get(key)
        if growing is not None:
            return growing
        loop = asyncio.get_running_loop()

        def keep(data: memoryview) -> None:
            self.segments.put(key, data)
            loop.call_soon_threadsafe(self._growing.pop, key, None)

        growing, work = grow(loop, make, keep)
        self._growing[key] = growing
        done = loop.run_in_executor(self.pool, work)

        def finished(f: asyncio.Future[None]) -> None:
            if f.cancelled() or f.exception() is not None:  # the Growing tells followers
                self._growing.pop(key, None)
        done.add_done_callback(finished)
        return growing

    # -- packaging (worker threads) ---------------------------------------------------------

    def _muxed_audio(self, p: Presentation) -> Rendition | None:
        """The audio carried inside video TS segments: the first audio track, if video exists."""
        audio = p.of_kind("audio")
        return audio[0] if audio and p.of_kind("video") else None

    def _package(self, prep: Prepared, r: Rendition, child: urls.Child,
                 sample_aes: tuple[bytes, bytes] | None = None,
                 parts: bool = False) -> bytes | tuple[bytes, bytes]:
        try:
            return self._package_unchecked(prep, r, child, sample_aes, parts)
        except StorageError:
            raise PlaybackError(404, "media_not_found", "the media's files are missing") from None
        except MediaError as e:
            raise PlaybackError(422, "media_unplayable", str(e)) from None

    def _package_unchecked(self, prep: Prepared, r: Rendition, child: urls.Child,
                           sample_aes: tuple[bytes, bytes] | None = None,
                           parts: bool = False) -> bytes | tuple[bytes, bytes]:
        """The packaged bytes; with `parts`, an fMP4 media segment unjoined, as
        protection.segment_parts gives it (head, samples), for protect_segment."""
        if child.kind == "init":
            return init_segment(r.track)
        number = child.number or 0
        if child.kind == "iframe":
            if r.kind != "video":
                raise PlaybackError(404, "not_found", "no I-frames in an audio rendition")
            frames = iframe_samples(r)
            if not 1 <= number <= len(frames):
                raise PlaybackError(404, "not_found", "I-frame number out of range")
            i = frames[number - 1]
            run = self._run_of(prep, r, i, i + 1, child.container)
            return media_segment(run, number) if child.container == "fmp4" \
                else write_ts_iframe(run)
        seg = r.segment(number)
        if seg is None:
            raise PlaybackError(404, "not_found", "segment number out of range")
        run = self._run_of(prep, r, seg.first, seg.end, child.container)
        if child.container == "fmp4":
            return protection.segment_parts(run, number) if parts \
                else media_segment(run, number)
        if r.kind == "video":
            audio = self._muxed_audio(prep.presentation)
            audio_run = None
            if audio is not None:
                ts = r.track.timescale
                t0 = Fraction(seg.start, ts)
                t1 = Fraction(seg.start + seg.duration, ts)
                a, b = audio.samples_between(t0, t1)
                if number == 1:
                    a = audio.segments[0].first if audio.segments else a
                if number == len(r.segments):
                    b = audio.segments[-1].end if audio.segments else b
                audio_run = self._run_of(prep, audio, a, b, "ts") if b > a else None
            return write_ts_segment(run, audio_run, sequence=number, sample_aes=sample_aes)
        return write_ts_segment(None, run, sequence=number, sample_aes=sample_aes)

    def _run_of(self, prep: Prepared, r: Rendition, first: int, end: int,
                timeline: str) -> SampleRun:
        spans = read_plan(r, first, end)
        key = prep.item.files[r.source]
        blobs = self.storage.read_spans(key, [(s.offset, s.size) for s in spans])
        return sample_run(r, first, end, assemble(spans, blobs), timeline)


def parse_clip(start: str | None, end: str | None) -> Clip:
    """`?start=S&end=E` in seconds; either may be omitted."""
    if start is None and end is None:
        return None
    try:
        s = float(start) if start is not None else 0.0
        e = float(end) if end is not None else math.inf
    except ValueError:
        raise PlaybackError(400, "invalid_clip",
                            "start and end must be numbers of seconds") from None
    if not (math.isfinite(s) and s >= 0 and (math.isfinite(e) or e == math.inf) and e > s):
        raise PlaybackError(400, "invalid_clip", "need 0 <= start < end")
    return (round(s, 3), round(e, 3) if math.isfinite(e) else 1e9)
