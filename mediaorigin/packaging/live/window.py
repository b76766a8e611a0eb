"""What live playlists are written from: segments and parts on the channel timeline (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import CodecInfo


@dataclass(slots=True)
class LivePart:
    duration: float  # of the video (the driving track)
    independent: bool
    # Rendition -> its own duration where it differs (audio ends on a whole AAC frame).
    durations: dict[str, float] = field(default_factory=dict)
    # Renditions with no media in this part (a rung whose transcoder fell behind, audio that
    # stopped without a silent frame to fill it): listed as GAP, never served.
    missing: frozenset[str] = frozenset()

    def of(self, rendition: str) -> float:
        return self.durations.get(rendition, self.duration)


@dataclass(slots=True)
class LiveSegment:
    msn: int  # media sequence number, never reused within a stream
    epoch: int  # publisher connection: a new one starts with a discontinuity
    start: float  # seconds on the channel timeline
    wallclock: float  # unix time of `start` (EXT-X-PROGRAM-DATE-TIME)
    parts: list[LivePart] = field(default_factory=list)
    complete: bool = False
    # Per rendition: (earliest presentation time, duration) in its timescale, once complete.
    ticks: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return sum(p.duration for p in self.parts)

    def gap(self, rendition: str) -> bool:
        """Whether the rendition has no media in any part of this segment."""
        return bool(self.parts) and all(rendition in p.missing for p in self.parts)

    def duration_of(self, rendition: str, timescale: int) -> float:
        if rendition in self.ticks:
            return self.ticks[rendition][1] / timescale
        return sum(p.of(rendition) for p in self.parts)


@dataclass(frozen=True, slots=True)
class LiveRendition:
    name: str  # URL path element: "video", "audio", "720p", "av"
    kind: str  # "video", "audio", "muxed" (video and audio in one fMP4), "ts" (MPEG-TS)
    codec: CodecInfo  # of the newest epoch (muxed, ts: of its video, else its audio)
    timescale: int
    bandwidth: int  # bits/s, peak as measured (or estimated before the first segments)
    average_bandwidth: int
    carries: tuple[str, ...] = ()  # muxed, ts: the renditions it carries, video first


@dataclass(slots=True)
class LiveWindow:
    """A consistent view of a live stream for one playlist rendering."""

    segments: list[LiveSegment]  # listed ones, oldest first; the last may be incomplete
    renditions: list[LiveRendition]
    target_duration: int  # whole seconds, >= every segment's duration
    part_target: float  # 0: no LL-HLS parts
    ended: bool
    discontinuity_sequence: int  # discontinuities before the first listed segment
    availability_start: float  # unix time of channel time 0 (DASH)
    epoch_starts: dict[int, tuple[float, float]]  # epoch -> (channel time, unix time)
    dvr_depth: float  # seconds a player may rewind
