"""Transcode an upload into the ABR ladder: one decode, N scaled H.264 encodes, shared AAC.

The packager cuts segments at the top rendition's keyframes and expects the same cut points in
every rendition, so keyframes are forced here (IDR at every `keyframe_interval` seconds of
output presentation time, x264's own scene-cut keyframes off) rather than left to the encoder.

Each rung runs in its own thread (scale, watermark, encode, mux): PyAV releases the GIL in
swscale, libx264 and the muxer, so on 2 cores this overlaps the rungs with the decoder.
Outputs are written as `<name>.mp4.partial` and renamed only when all of them are complete.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
from av.audio.frame import AudioFrame
from av.video.frame import PictureType, VideoFrame
from av.video.reformatter import Interpolation, VideoReformatter

from mediaorigin.processing.errors import Cancelled, ProcessingError
from mediaorigin.processing.ladder import Rung
from mediaorigin.processing.watermark import Overlay, Watermark

Progress = Callable[[float], None]
PROGRESS_PERIOD = 0.25  # seconds between progress callbacks
QUEUE_DEPTH = 8  # frames buffered per rung thread: bounds memory, absorbs encoder jitter
AAC_FRAME = 1024


@dataclass(frozen=True)
class VideoSettings:
    """Video encoding for every rung. framerate None keeps the source timing (CFR or VFR)."""

    codec: str = "h264"
    framerate: float | None = None
    keyframe_interval: float = 2.0
    preset: str = "veryfast"
    profile: str = "high"
    pixel_format: str = "yuv420p"
    # IDRs at these presentation times (s) instead of every keyframe_interval: lower rungs
    # made beside a passthrough top rendition cut where the upload has its keyframes.
    keyframe_times: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.codec != "h264":
            raise ProcessingError("bad_config", f"unsupported video codec {self.codec!r}")
        if self.pixel_format != "yuv420p":
            raise ProcessingError("bad_config", "only yuv420p is supported")
        if self.framerate is not None and not 0 < self.framerate <= 240:
            raise ProcessingError("bad_config", f"bad framerate {self.framerate!r}")
        if not 0 < self.keyframe_interval <= 20:
            raise ProcessingError("bad_config", f"bad keyframe interval {self.keyframe_interval}")
        presets = {"ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                   "slower", "veryslow", "placebo"}  # fmt: skip
        if self.preset not in presets:
            raise ProcessingError("bad_config", f"unknown x264 preset {self.preset!r}")
        if self.profile not in {"baseline", "main", "high"}:
            raise ProcessingError("bad_config", f"unsupported H.264 profile {self.profile!r}")


@dataclass(frozen=True)
class AudioSettings:
    """AAC-LC output; the source is resampled to this layout and rate."""

    codec: str = "aac"
    bitrate: int = 128_000
    channels: int = 2
    sample_rate: int = 48_000

    def __post_init__(self) -> None:
        if self.codec != "aac":
            raise ProcessingError("bad_config", f"unsupported audio codec {self.codec!r}")
        if self.channels not in (1, 2) or self.bitrate <= 0:
            raise ProcessingError("bad_config", "audio needs 1 or 2 channels, bitrate > 0")
        if self.sample_rate not in (22_050, 24_000, 32_000, 44_100, 48_000):
            raise ProcessingError("bad_config", f"unsupported sample rate {self.sample_rate}")

    @property
    def layout(self) -> str:
        return "stereo" if self.channels == 2 else "mono"


@dataclass(frozen=True)
class Rendition:
    """One finished output file."""

    name: str
    path: Path
    width: int
    height: int
    video_bitrate: int
    size_bytes: int
    audio_bitrate: int = 0


# --- source ---------------------------------------------------------------------------------


def _open_source(src: Path) -> Any:
    try:
        return av.open(str(src))
    except av.error.FileNotFoundError as exc:
        raise ProcessingError("not_found", f"{src.name}: no such file") from exc
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__  # str(exc) has the path
        raise ProcessingError("corrupt", f"{src.name}: cannot open: {reason}") from exc


def _decoded(container: Any, streams: list[Any]) -> Iterator[Any]:
    """All frames of `streams` in demux order; decoder failures become ProcessingError."""
    try:
        for packet in container.demux(streams):
            yield from packet.decode()
    except av.error.FFmpegError as exc:
        raise ProcessingError("corrupt", f"undecodable source: {exc}") from exc


class _Ticker:
    """Calls `progress` with 0..100 at most every PROGRESS_PERIOD seconds."""

    def __init__(self, progress: Progress | None, duration: float | None) -> None:
        self.progress, self.duration, self.last = progress, duration, -math.inf

    def at(self, seconds: float) -> None:
        now = time.monotonic()
        if self.progress and self.duration and now - self.last >= PROGRESS_PERIOD:
            self.last = now
            self.progress(max(0.0, min(99.9, 100.0 * seconds / self.duration)))

    def done(self) -> None:
        if self.progress:
            self.progress(100.0)


def _duration(container: Any) -> float | None:
    if container.duration:
        return float(container.duration) / 1_000_000
    return None


def _check_complete(name: str, decoded_until: float, duration: float | None) -> None:
    """A truncated file often demuxes without error and just ends early: compare with the
    duration its header promised."""
    if duration and duration - decoded_until > max(1.0, 0.05 * duration):
        raise ProcessingError(
            "corrupt", f"{name}: truncated, decoded {decoded_until:.2f} s of {duration:.2f} s"
        )


# --- video timeline --------------------------------------------------------------------------


class _Timeline:
    """Decoded frames -> (frame, output pts, force IDR), starting at pts 0.

    rate None: source timestamps pass through (VFR kept; non-increasing ones dropped).
    rate set: constant-rate output in 1/rate, each slot showing the latest frame whose rounded
    time falls in it, repeating the previous frame across gaps (like ffmpeg's fps filter).
    """

    def __init__(self, src_tb: Fraction, rate: Fraction | None, interval: Fraction,
                 keyframe_times: tuple[float, ...] | None = None) -> None:
        self.src_tb, self.rate, self.interval = src_tb, rate, interval
        self.keyframe_times = keyframe_times
        self.next_index = 0
        self.time_base = 1 / rate if rate else src_tb
        self.start: int | None = None
        self.last_pts = -1
        self.pending: tuple[VideoFrame, int] | None = None
        self.next_key = Fraction(0)
        self.frame_step = 1
        self.last_raw: int | None = None

    def _key(self, pts: int) -> bool:
        t = pts * self.time_base
        if self.keyframe_times is not None:
            # Half a millisecond of slack: the times come from another file's timescale.
            times, key = self.keyframe_times, False
            while self.next_index < len(times) and t >= times[self.next_index] - 0.0005:
                self.next_index += 1
                key = True
            return key or pts == 0
        if t < self.next_key:
            return False
        self.next_key = (t // self.interval + 1) * self.interval
        return True

    def _emit(self, frame: VideoFrame, pts: int) -> tuple[VideoFrame, int, bool]:
        self.last_pts = pts
        return frame, pts, self._key(pts)

    def push(self, frame: VideoFrame) -> Iterator[tuple[VideoFrame, int, bool]]:
        raw = frame.pts
        if raw is None:  # no timestamp: one nominal frame after the previous one
            raw = self.last_raw + self.frame_step if self.last_raw is not None else 0
        if self.last_raw is not None and raw > self.last_raw:
            self.frame_step = raw - self.last_raw
        self.last_raw = raw
        if self.start is None:
            self.start = raw
        rel = raw - self.start
        if self.rate is None:
            if rel > self.last_pts:
                yield self._emit(frame, rel)
            return
        slot = round(rel * self.src_tb * self.rate)
        if self.pending is not None:
            pframe, pslot = self.pending
            if slot <= pslot:  # same output slot: the later frame wins
                self.pending = (frame, pslot)
                return
            for s in range(pslot, slot):
                yield self._emit(pframe, s)
        self.pending = (frame, max(slot, self.last_pts + 1))

    def flush(self) -> Iterator[tuple[VideoFrame, int, bool]]:
        if self.pending is not None:
            frame, slot = self.pending
            self.pending = None
            yield self._emit(frame, slot)


# --- audio -----------------------------------------------------------------------------------


class _Audio:
    """Decoded audio -> resampled, 1024-sample frames with pts counted from the video start."""

    def __init__(self, settings: AudioSettings, start_time: float | None) -> None:
        self.settings = settings
        self.start_time = start_time  # video start, seconds; None = audio's own start
        self.resampler = av.AudioResampler(
            format="fltp", layout=settings.layout, rate=settings.sample_rate,
            frame_size=AAC_FRAME,
        )  # fmt: skip
        self.samples = 0
        self.begun = False

    def push(self, frame: AudioFrame | None) -> list[AudioFrame]:
        inputs: list[AudioFrame | None] = [frame]
        if frame is not None and not self.begun:
            inputs = list(self._align(frame))
            self.begun = bool(inputs)
        out = []
        for f in (r for i in inputs for r in self.resampler.resample(i)):
            f.pts = self.samples
            f.time_base = Fraction(1, self.settings.sample_rate)
            self.samples += f.samples
            out.append(f)
        return out

    def _align(self, frame: AudioFrame) -> list[AudioFrame]:
        """Make the first sample coincide with the first video frame: pad or trim the head."""
        if self.start_time is None or frame.pts is None or frame.time_base is None:
            return [frame]
        lead = round((float(frame.pts * frame.time_base) - self.start_time) * frame.sample_rate)
        if abs(lead) < 2:
            return [frame]
        if lead > 0:  # audio starts late: prepend silence of that length
            silence = AudioFrame(format=frame.format.name, layout=frame.layout.name, samples=lead)
            for plane in silence.planes:
                plane.update(bytes(plane.buffer_size))
            silence.sample_rate = frame.sample_rate
            return [silence, frame]
        if -lead >= frame.samples:  # entirely before the first video frame
            return []
        return [_trim_head(frame, -lead)]


def _trim_head(frame: AudioFrame, skip: int) -> AudioFrame:
    """A copy of `frame` without its first `skip` samples."""
    fmt = frame.format
    keep = frame.samples - skip
    out = AudioFrame(format=fmt.name, layout=frame.layout.name, samples=keep)
    out.sample_rate = frame.sample_rate
    per_sample = fmt.bytes * (1 if fmt.is_planar else len(frame.layout.channels))
    for src, dst in zip(frame.planes, out.planes, strict=False):
        data = bytes(src)[skip * per_sample : frame.samples * per_sample]
        dst.update(data + bytes(dst.buffer_size - len(data)))
    return out


def _aac_encoder(settings: AudioSettings, bitrate: int) -> Any:
    enc = av.CodecContext.create("aac", "w")
    enc.sample_rate = settings.sample_rate
    enc.layout = settings.layout
    enc.format = "fltp"
    enc.bit_rate = bitrate
    enc.time_base = Fraction(1, settings.sample_rate)
    enc.open()
    return enc


def _add_aac_stream(container: Any, settings: AudioSettings, bitrate: int) -> Any:
    """An AAC stream whose header matches the shared encoder's packets (same parameters)."""
    stream = container.add_stream("aac", rate=settings.sample_rate)
    stream.codec_context.layout = settings.layout
    stream.codec_context.format = "fltp"
    stream.codec_context.bit_rate = bitrate
    stream.time_base = Fraction(1, settings.sample_rate)
    return stream


def _copy_packet(packet: Any, stream: Any) -> Any:
    """Each container rebases and takes its own reference, so it gets its own packet."""
    copy = av.Packet(bytes(packet))
    copy.pts, copy.dts, copy.time_base = packet.pts, packet.dts, packet.time_base
    copy.duration = packet.duration
    copy.is_keyframe = True
    copy.stream = stream
    return copy


# --- one rung ----------------------------------------------------------------------------------


def _writable_copy(frame: VideoFrame) -> VideoFrame:
    """A private copy of a decoded frame (the decoder may still reference its buffers)."""
    copy = VideoFrame(frame.width, frame.height, "yuv420p")
    for i, (src, dst) in enumerate(zip(frame.planes, copy.planes, strict=True)):
        rows = frame.height >> (1 if i else 0)
        if src.line_size == dst.line_size:
            dst.update(bytes(src)[: dst.buffer_size])
        else:
            data, width = bytes(src), src.width
            out = bytearray(dst.buffer_size)
            for y in range(rows):
                out[y * dst.line_size : y * dst.line_size + width] = (
                    data[y * src.line_size : y * src.line_size + width]
                )
            dst.update(bytes(out))
    return copy


class _Output:
    """One rendition: a scaler, an x264 encoder and its own MP4 container."""

    def __init__(self, rung: Rung, width: int, out_dir: Path, video: VideoSettings,
                 rate: Fraction, time_base: Fraction, audio: AudioSettings | None,
                 watermark: Watermark | None) -> None:
        self.rung, self.width, self.height = rung, width, rung.height
        self.final = out_dir / f"{rung.name}.mp4"
        self.partial = out_dir / f"{rung.name}.mp4.partial"
        self.container = av.open(str(self.partial), "w", format="mp4",
                                 options={"movflags": "+faststart"})
        self.vstream = self.container.add_stream("libx264", rate=rate)
        cc = self.vstream.codec_context
        cc.width, cc.height, cc.pix_fmt = width, rung.height, "yuv420p"
        cc.time_base = time_base
        cc.bit_rate = rung.video_bitrate
        cc.sample_aspect_ratio = Fraction(1)
        # Frame threads, as the ffmpeg CLI uses: PyAV's default (slices) costs x264 ~10% here.
        cc.thread_type = "FRAME"
        cc.thread_count = 0
        gop = max(1, round(video.keyframe_interval * rate))
        # The forced IDRs make the GOPs. x264's own limit sits beyond them so that a burst of
        # VFR frames can never make it add a keyframe the other rungs do not have.
        cc.options = {
            "preset": video.preset,
            "profile": video.profile,
            "forced-idr": "1",
            "maxrate": str(2 * rung.video_bitrate),
            "bufsize": str(2 * rung.video_bitrate),
            "x264-params": f"keyint={2 * gop}:min-keyint={gop}:scenecut=0",
        }
        self.vstream.time_base = time_base
        self.astream = _add_aac_stream(self.container, audio, rung.audio_bitrate) if audio else None
        self.scaler = VideoReformatter()
        self.overlay = Overlay(watermark, width, rung.height) if watermark else None
        self.time_base = time_base

    def video(self, frame: VideoFrame, pts: int, key: bool) -> None:
        out = self.scaler.reformat(frame, self.width, self.height, "yuv420p",
                                   interpolation=Interpolation.BICUBIC)
        if self.overlay is not None:
            if out is frame:
                out = _writable_copy(frame)
            self.overlay.apply(out)
        out.pts, out.time_base = pts, self.time_base
        out.pict_type = PictureType.I if key else PictureType.NONE
        self.container.mux(self.vstream.encode(out))

    def audio(self, packets: list[Any]) -> None:
        for packet in packets:
            self.container.mux(_copy_packet(packet, self.astream))

    def flush(self) -> None:
        self.container.mux(self.vstream.encode(None))

    def handle(self, item: tuple[Any, ...]) -> None:
        if item[0] == "v":
            self.video(item[1], item[2], item[3])
        else:
            self.audio(item[1])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()

    def discard(self) -> None:
        self.close()
        self.partial.unlink(missing_ok=True)


class _Lane:
    """A worker thread feeding one _Output from a bounded queue."""

    def __init__(self, output: _Output) -> None:
        self.output = output
        self.queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(QUEUE_DEPTH)
        self.error: BaseException | None = None
        self.aborted = False
        self.thread = threading.Thread(target=self._run, name=f"rung-{output.rung.name}",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                if not self.aborted:
                    self.output.handle(item)
            if not self.aborted:
                self.output.flush()
        except BaseException as exc:  # handed to the main thread by send()/finish()
            self.error = exc
            while self.queue.get() is not None:  # unblock the producer until it stops
                pass

    def send(self, item: tuple[Any, ...] | None) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        self.send(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Stop without flushing; works whether the thread is busy, idle or failed."""
        self.aborted = True
        while self.thread.is_alive():
            with contextlib.suppress(queue.Full):
                self.queue.put(None, timeout=0.1)
        self.thread.join()


# --- entry points -----------------------------------------------------------------------------


def _rung_width(rung: Rung, width: int, height: int, sar: Fraction) -> int:
    if rung.width:
        return rung.width
    return max(2, round(rung.height * width * sar / height / 2) * 2)


def _encoder_error(exc: BaseException) -> BaseException:
    if isinstance(exc, ProcessingError | Cancelled):
        return exc
    return ProcessingError("transcode_failed", f"encoding failed: {exc}")


def transcode_ladder(
    src: Path,
    out_dir: Path,
    rungs: list[Rung],
    video: VideoSettings,
    audio: AudioSettings,
    progress: Progress | None = None,
    watermark: Watermark | None = None,
) -> list[Rendition]:
    """Write `out_dir/<rung>.mp4` for every rung from one decode of `src`.

    Raises ProcessingError ("corrupt", "no_video", "bad_config", ...) or the callback's
    Cancelled; either way no output file (partial or final) is left behind.
    """
    if not rungs:
        raise ProcessingError("bad_config", "no rungs to encode")
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs: list[_Output] = []
    lanes: list[_Lane] = []
    try:
        with _open_source(src) as container:
            if not container.streams.video:
                raise ProcessingError("no_video", f"{src.name} has no video stream")
            vin = container.streams.video[0]
            vin.thread_type = "AUTO"
            ain = container.streams.audio[0] if container.streams.audio else None
            src_rate = Fraction(vin.average_rate or vin.guessed_rate or 25)
            rate = (Fraction(video.framerate).limit_denominator(1001) if video.framerate
                    else None)  # fmt: skip
            interval = Fraction(video.keyframe_interval).limit_denominator(1000)
            timeline = _Timeline(Fraction(vin.time_base), rate, interval, video.keyframe_times)
            sar = Fraction(vin.sample_aspect_ratio or 1)
            for rung in rungs:
                width = _rung_width(rung, vin.width, vin.height, sar)
                outputs.append(_Output(rung, width, out_dir, video, rate or src_rate,
                                       timeline.time_base, audio if ain else None, watermark))
            lanes = [_Lane(o) for o in outputs]
            aenc = _aac_encoder(audio, rungs[0].audio_bitrate) if ain else None
            apipe: _Audio | None = None
            ticker = _Ticker(progress, _duration(container))
            video_start: float | None = None
            decoded_until = 0.0

            def send_audio(frame: AudioFrame | None) -> None:
                assert apipe is not None and aenc is not None
                packets = [p for f in apipe.push(frame) for p in aenc.encode(f)]
                if frame is None:
                    packets += aenc.encode(None)
                if packets:
                    for lane in lanes:
                        lane.send(("a", packets))

            pending_audio: list[AudioFrame] = []
            for frame in _decoded(container, [vin] + ([ain] if ain else [])):
                if isinstance(frame, VideoFrame):
                    if video_start is None:
                        video_start = float(frame.time or 0)
                        if ain is not None:
                            apipe = _Audio(audio, video_start)
                            for held in pending_audio:
                                send_audio(held)
                            pending_audio.clear()
                    for item in timeline.push(frame):
                        for lane in lanes:
                            lane.send(("v", *item))
                    decoded_until = float(frame.time or 0) - video_start
                    ticker.at(decoded_until)
                elif apipe is None:  # hold audio until the video start is known
                    pending_audio.append(frame)
                else:
                    send_audio(frame)
            if video_start is None:
                raise ProcessingError("corrupt", f"{src.name}: no decodable video frame")
            _check_complete(src.name, decoded_until, ticker.duration)
            for item in timeline.flush():
                for lane in lanes:
                    lane.send(("v", *item))
            if apipe is not None:
                send_audio(None)
        for lane in lanes:
            try:
                lane.finish()
            except BaseException as exc:
                raise _encoder_error(exc) from exc
        for out in outputs:
            out.container.close()
        ticker.done()
    except BaseException:
        for lane in lanes:
            lane.abort()
        for out in outputs:
            out.discard()
        raise
    renditions = []
    for out in outputs:
        out.partial.replace(out.final)
        renditions.append(Rendition(out.rung.name, out.final, out.width, out.height,
                                    out.rung.video_bitrate, out.final.stat().st_size,
                                    out.rung.audio_bitrate if audio else 0))
    return renditions


def transcode_audio_ladder(
    src: Path,
    out_dir: Path,
    bitrates: list[int],
    audio: AudioSettings,
    progress: Progress | None = None,
) -> list[Rendition]:
    """AAC renditions `out_dir/audio-<kbps>k.m4a` of audio-only media (podcasts, music)."""
    if not bitrates or any(b <= 0 for b in bitrates):
        raise ProcessingError("bad_config", f"bad audio bitrates {bitrates!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    made: list[tuple[str, Path, Path, Any, Any, Any, int]] = []
    try:
        with _open_source(src) as container:
            if not container.streams.audio:
                raise ProcessingError("no_audio", f"{src.name} has no audio stream")
            ain = container.streams.audio[0]
            for bitrate in sorted(set(bitrates), reverse=True):
                name = f"audio-{bitrate // 1000}k"
                final, partial = out_dir / f"{name}.m4a", out_dir / f"{name}.m4a.partial"
                out = av.open(str(partial), "w", format="mp4", options={"movflags": "+faststart"})
                made.append((name, final, partial, out, _add_aac_stream(out, audio, bitrate),
                             _aac_encoder(audio, bitrate), bitrate))
            pipe = _Audio(audio, None)
            ticker = _Ticker(progress, _duration(container))

            def encode(frame: AudioFrame | None) -> None:
                for f in pipe.push(frame):
                    for _, _, _, out, stream, enc, _ in made:
                        for p in enc.encode(f):
                            out.mux(_copy_packet(p, stream))

            decoded_any, decoded_until = False, 0.0
            for frame in _decoded(container, [ain]):
                decoded_any = True
                encode(frame)
                decoded_until = float(frame.time or 0)
                ticker.at(decoded_until)
            if not decoded_any:
                raise ProcessingError("corrupt", f"{src.name}: no decodable audio")
            _check_complete(src.name, decoded_until, ticker.duration)
            encode(None)
            for _, _, _, out, stream, enc, _ in made:
                for p in enc.encode(None):
                    out.mux(_copy_packet(p, stream))
                out.close()
        ticker.done()
    except BaseException:
        for _, _, partial, out, *_ in made:
            with contextlib.suppress(Exception):
                out.close()
            partial.unlink(missing_ok=True)
        raise
    result = []
    for name, final, partial, *_, bitrate in made:
        partial.replace(final)
        result.append(Rendition(name, final, 0, 0, 0, final.stat().st_size, bitrate))
    return result
