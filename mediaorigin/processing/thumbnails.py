"""Still frames from a video: thumbnails at chosen times, a poster, a scrubbing sprite sheet
with its WebVTT track, and a short silent preview clip.

Frames are exact: `_FrameSource` seeks to the keyframe before a time and decodes forward to the
last frame shown at that time. Times ascend, so between two close times it keeps decoding
forward instead of seeking back to the same keyframe; for MP4 the keyframe times come from our
own index (moov only), so it seeks exactly when a keyframe lies between the current frame and
the target, else it guesses from the keyframe gaps it has seen.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image

from ..packaging.webvtt import timestamp
from .errors import ProcessingError
from .passthrough import keyframe_times

Progress = Callable[[float], None] | None

MAX_THUMBNAILS = 1000
MAX_SPRITE_TILES = 1000
JPEG_QUALITY = 82
EPS = 1e-3  # seconds: float slack when comparing frame times
DEFAULT_SEEK_DISTANCE = 5.0  # seconds decoded forward before a seek is preferred (unknown GOP)


@dataclass(frozen=True)
class Thumbnail:
    time: float  # seconds from the start of the video
    path: Path
    width: int
    height: int


@dataclass(frozen=True)
class Sprite:
    """Sprite sheets plus the WebVTT track that maps each time range to a tile of a sheet."""

    images: tuple[Path, ...]
    vtt: Path
    tile_width: int
    tile_height: int
    interval: float
    tiles: int


def thumbnail_times(
    duration: float, count: int | None = None, interval: float | None = None
) -> list[float]:
    """`count` times evenly spaced strictly inside the video (the first and last frames are
    often black), or one every `interval` seconds from 0; at most MAX_THUMBNAILS."""
    if duration <= 0:
        return []
    if count is not None:
        count = max(0, min(count, MAX_THUMBNAILS))
        return [duration * (i + 1) / (count + 1) for i in range(count)]
    if interval is not None and interval > 0:
        n = min(MAX_THUMBNAILS, max(1, math.ceil(duration / interval - 1e-9)))
        return [i * interval for i in range(n)]
    raise ValueError("give count or a positive interval")


def make_thumbnails(
    src: Path,
    out_dir: Path,
    times: list[float],
    size: tuple[int, int] = (640, 360),
    progress: Progress = None,
) -> list[Thumbnail]:
    """One JPEG per time (`thumb-0000.jpg`, ...), fitted within `size`, never upscaled."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _report(progress, 0)
    result: list[Thumbnail] = []
    with _FrameSource(Path(src)) as frames:
        w, h = frames.fit(size)
        order = sorted(range(len(times)), key=lambda i: times[i])
        for done, i in enumerate(order, 1):
            t = max(0.0, times[i])
            image = frames.image_at(t, w, h)
            path = out_dir / f"thumb-{i:04d}.jpg"
            image.save(path, "JPEG", quality=JPEG_QUALITY)
            result.append(Thumbnail(t, path, w, h))
            _report(progress, 100 * done / len(order))
    result.sort(key=lambda th: th.path.name)
    return result


def make_poster(
    src: Path,
    out_path: Path,
    size: tuple[int, int] = (1280, 720),
    time: float | None = None,
    progress: Progress = None,
) -> Thumbnail:
    """A poster JPEG; by default at a quarter of the video, at most 10 s in (past fade-ins,
    still representative of short clips)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _report(progress, 0)
    with _FrameSource(Path(src)) as frames:
        t = time if time is not None else min(frames.duration * 0.25, 10.0)
        w, h = frames.fit(size)
        frames.image_at(max(0.0, t), w, h).save(out_path, "JPEG", quality=JPEG_QUALITY)
    _report(progress, 100)
    return Thumbnail(t, out_path, w, h)


def make_sprite(
    src: Path,
    out_dir: Path,
    interval: float = 5.0,
    tile: tuple[int, int] = (160, 90),
    columns: int = 10,
    rows: int = 10,
    progress: Progress = None,
) -> Sprite:
    """Sprite sheets `sprite-N.jpg` (at most columns x rows tiles each) and `sprite.vtt`.

    Tile i shows the frame at i * interval and its cue covers [i * interval, (i + 1) *
    interval), the last cue ending at the duration, so cues tile the timeline without gaps.
    The interval grows when needed to stay within MAX_SPRITE_TILES. Cue payloads are
    `sprite-N.jpg#xywh=x,y,w,h`, relative to the VTT so both are served from one directory.
    """
    if interval <= 0 or columns <= 0 or rows <= 0:
        raise ValueError("interval, columns and rows must be positive")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _report(progress, 0)
    with _FrameSource(Path(src)) as frames:
        duration = frames.duration
        if duration <= 0:
            raise ProcessingError("corrupt", "the video has no duration")
        interval = max(interval, duration / MAX_SPRITE_TILES)
        count = max(1, math.ceil(duration / interval - 1e-9))
        tw, th = frames.fit(tile)
        per_sheet = columns * rows
        images: list[Path] = []
        cues: list[str] = []
        sheet: Image.Image | None = None
        for i in range(count):
            slot = i % per_sheet
            if slot == 0:
                in_sheet = min(per_sheet, count - i)
                sheet_cols = min(columns, in_sheet)
                sheet_rows = math.ceil(in_sheet / columns)
                sheet = Image.new("RGB", (sheet_cols * tw, sheet_rows * th))
                images.append(out_dir / f"sprite-{len(images)}.jpg")
            assert sheet is not None
            x, y = (slot % columns) * tw, (slot // columns) * th
            sheet.paste(frames.image_at(i * interval, tw, th), (x, y))
            start, end = i * interval, min((i + 1) * interval, duration)
            cues.append(
                f"{timestamp(round(start * 1000))} --> {timestamp(round(end * 1000))}\n"
                f"{images[-1].name}#xywh={x},{y},{tw},{th}\n"
            )
            if slot == per_sheet - 1 or i == count - 1:
                sheet.save(images[-1], "JPEG", quality=JPEG_QUALITY)
            _report(progress, 100 * (i + 1) / count)
    vtt = out_dir / "sprite.vtt"
    vtt.write_text("WEBVTT\n\n" + "\n".join(cues), encoding="utf-8")
    return Sprite(tuple(images), vtt, tw, th, interval, count)


def make_preview(
    src: Path,
    out_path: Path,
    seconds: float = 6.0,
    height: int = 240,
    start: float | None = None,
    progress: Progress = None,
) -> Path:
    """A silent H.264 MP4 of `seconds` at most `height` lines (never upscaled, fps <= 30).

    By default it starts at 0 for clips shorter than three previews, else at 10% in (titles
    are over by then), and always ends inside the video.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _report(progress, 0)
    try:
        with _FrameSource(Path(src)) as frames:
            _encode_preview(frames, out_path, seconds, height, start, progress)
    except BaseException:
        out_path.unlink(missing_ok=True)  # no half-written preview after an error or cancel
        raise
    _report(progress, 100)
    return out_path


def _encode_preview(
    frames: _FrameSource,
    out_path: Path,
    seconds: float,
    height: int,
    start: float | None,
    progress: Progress,
) -> None:
    duration = frames.duration
    if start is None:
        start = 0.0 if duration < 3 * seconds else min(duration * 0.1, duration - seconds)
    start = max(0.0, start)
    w, h = frames.fit((1 << 16, height))
    w, h = max(2, w - w % 2), max(2, h - h % 2)  # yuv420p needs even sizes
    fps = frames.rate if frames.rate and frames.rate <= 30 else Fraction(30)
    with av.open(str(out_path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        ostream = out.add_stream("libx264", rate=fps)
        ostream.width, ostream.height, ostream.pix_fmt = w, h, "yuv420p"
        ostream.options = {"preset": "veryfast", "crf": "28"}
        last = -1
        for t, frame in frames.frames_from(start):
            if t >= start + seconds - EPS:
                break
            pts = round((t - start) * fps)
            if pts <= last:
                continue  # VFR input: keep one frame per output slot
            last = pts
            scaled = frame.reformat(width=w, height=h, format="yuv420p", interpolation="AREA")
            scaled.pts, scaled.time_base = pts, Fraction(1) / fps
            out.mux(ostream.encode(scaled))
            _report(progress, min(99.0, 100 * (t - start) / seconds))
        out.mux(ostream.encode(None))
        if last < 0:
            raise ProcessingError("corrupt", f"no video frame after {start:.1f} s")


def _report(progress: Progress, value: float) -> None:
    if progress is not None:
        progress(value)  # may raise Cancelled: let it propagate


class _FrameSource:
    """Exact frames at ascending times from the first video stream of a file."""

    def __init__(self, src: Path) -> None:
        try:
            self.container: InputContainer = av.open(str(src), metadata_errors="ignore")
        except av.FFmpegError as e:
            raise ProcessingError("not_media", f"cannot open video: {e}") from None
        videos = list(self.container.streams.video)
        if not videos:
            self.container.close()
            raise ProcessingError("no_streams", "no video stream")
        self.stream: VideoStream = videos[0]
        self.stream.thread_type = "AUTO"
        tb = self.stream.time_base or Fraction(1, 90000)
        self.tb = tb
        self.offset = float(self.stream.start_time * tb) if self.stream.start_time else 0.0
        if self.stream.duration:
            self.duration = float(self.stream.duration * tb)
        elif self.container.duration:
            self.duration = self.container.duration / av.time_base
        else:
            self.duration = 0.0
        self.rate: Fraction | None = self.stream.average_rate or self.stream.guessed_rate
        self.keyframes = keyframe_times(src)
        self._gop = DEFAULT_SEEK_DISTANCE
        self._last_key: float | None = None
        self._frames: Iterator[VideoFrame] | None = None
        self._prev: tuple[float, VideoFrame] | None = None  # last frame at or before a target
        self._next: tuple[float, VideoFrame] | None = None  # first frame past it, not yet used

    def __enter__(self) -> _FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()

    def fit(self, box: tuple[int, int]) -> tuple[int, int]:
        """Display size (sample aspect ratio applied) fitted within `box`, never upscaled."""
        cc = self.stream.codec_context
        w, h = cc.width, cc.height
        sar = self.stream.sample_aspect_ratio
        if sar and sar > 0 and sar != 1:
            w = round(w * sar)
        if w <= 0 or h <= 0:
            raise ProcessingError("bad_dimensions", "the video has no picture size")
        scale = min(box[0] / w, box[1] / h, 1.0)
        return max(1, round(w * scale)), max(1, round(h * scale))

    def image_at(self, t: float, w: int, h: int) -> Image.Image:
        return self.frame_at(t).to_image(width=w, height=h, interpolation="AREA")

    def frame_at(self, t: float) -> VideoFrame:
        """The frame on screen at `t` s: the last one starting at or before it."""
        position = self._position()
        if position is None or t < position - EPS or self._should_seek(position, t):
            self._seek(t)
        while True:
            item = self._take()
            if item is None:  # end of stream: the last frame stays on screen
                if self._prev is None:
                    raise ProcessingError("corrupt", f"no video frame decodes near {t:.2f} s")
                return self._prev[1]
            if item[0] > t + EPS:
                self._next = item
                return (self._prev or item)[1]
            self._prev = item

    def frames_from(self, t: float) -> Iterator[tuple[float, VideoFrame]]:
        """Every frame from the one on screen at `t` on, with its time."""
        yield t, self.frame_at(t)
        while (item := self._take()) is not None:
            yield item

    def _position(self) -> float | None:
        if self._frames is None:
            return None
        current = self._prev or self._next
        return current[0] if current else None

    def _should_seek(self, position: float, t: float) -> bool:
        if self.keyframes:  # seek only when a keyframe lies between here and there
            j = bisect_right(self.keyframes, t + EPS) - 1
            return j >= 0 and self.keyframes[j] > position + EPS
        return t - position > self._gop

    def _seek(self, t: float) -> None:
        """Seek so that decoding starts at or before `t`; MP4 seeks by decode time, so with
        B-frames the keyframe found can present after `t`: step back until it does not."""
        back = 0.0
        while True:
            target = max(0.0, t - back)
            self.container.seek(
                int((target + self.offset) / self.tb), stream=self.stream, backward=True
            )
            self._frames = self.container.decode(self.stream)
            self._prev = self._next = None
            self._last_key = None  # gaps are measured between consecutive keyframes only
            self._next = self._take()
            if self._next is None or self._next[0] <= t + EPS or target == 0.0:
                return
            back = back * 2 if back else 1.0

    def _take(self) -> tuple[float, VideoFrame] | None:
        if self._next is not None:
            item, self._next = self._next, None
            return item
        assert self._frames is not None
        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        except av.FFmpegError as e:
            raise ProcessingError("corrupt", f"video does not decode: {e}") from None
        if frame.pts is not None:
            t = float(frame.pts * self.tb) - self.offset
        elif self._prev is not None:
            t = self._prev[0] + (1 / float(self.rate) if self.rate else 0.04)
        else:
            t = 0.0
        if frame.key_frame:
            if self._last_key is not None and t > self._last_key:
                self._gop = max(self._gop, t - self._last_key)
            self._last_key = t
        return t, frame
