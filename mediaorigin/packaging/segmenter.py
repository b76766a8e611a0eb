"""Segment boundaries as a pure function of the media.

The reference track (the first video track, else the first audio track) is cut at the first
sync sample at least `target` seconds after the previous cut. Every other track is cut at the
same instants: video at its first sync sample at or after the instant, audio at its first
sample at or after it. The same files and target therefore give the same segments in every
process, restart and replica, and renditions whose keyframes are aligned get aligned segments.

Times: `out = dts + edit_shift + offset`. `offset` is one shift for the whole presentation
(`Presentation.offset`, seconds) so that no track starts before zero; it keeps A/V sync as
the edit lists describe it, and presentation time zero sits at `offset` on the output timeline.
MPEG-TS uses this timeline as is; fMP4 moves it back by `offset` (see `runs.sample_run`).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from fractions import Fraction

from .model import MediaError, Track


@dataclass(frozen=True)
class Segment:
    number: int  # 1-based
    first: int  # first sample index
    end: int  # one past the last sample index
    start: int  # output decode time of the first sample, track ticks
    duration: int  # ticks


@dataclass
class Rendition:
    """One track of a presentation, with its segments."""

    id: str  # "v0", "a1": stable, derived from order
    track: Track
    source: int  # index of the file this track comes from
    offset: int  # ticks added to dts + edit_shift (see module docstring)
    segments: list[Segment]

    @property
    def kind(self) -> str:
        return self.track.kind

    def out_time(self, i: int) -> int:
        t = self.track
        return t.dts[i] + t.edit_shift + self.offset

    def segment(self, number: int) -> Segment | None:
        if 1 <= number <= len(self.segments):
            return self.segments[number - 1]
        return None

    def samples_between(self, t0: Fraction, t1: Fraction) -> tuple[int, int]:
        """Sample index range of samples whose output time is in [t0, t1) seconds."""
        return _index_at(self, t0, sync_only=False), _index_at(self, t1, sync_only=False)


@dataclass
class Presentation:
    offset: Fraction  # seconds on the output timeline where presentation time zero is
    target: float
    renditions: list[Rendition]
    clip: tuple[float, float] | None = None

    def rendition(self, rid: str) -> Rendition | None:
        for r in self.renditions:
            if r.id == rid:
                return r
        return None

    def of_kind(self, kind: str) -> list[Rendition]:
        return [r for r in self.renditions if r.kind == kind]

    @property
    def duration(self) -> float:
        ref = self.renditions[0]
        if not ref.segments:
            return 0.0
        return sum(s.duration for s in ref.segments) / ref.track.timescale


def build_presentation(
    tracks: list[tuple[int, Track]],
    target: float,
    clip: tuple[float, float] | None = None,
) -> Presentation:
    """Plan the segments of every track. `tracks` pairs each track with its file's index."""
    if target <= 0:
        raise ValueError("target duration must be positive")
    usable = _without_ladder_duplicates([(src, t) for src, t in tracks if t.sample_count > 0])
    if not usable:
        raise MediaError("no playable video or audio track")
    ordered = sorted(usable, key=lambda p: (p[1].kind != "video", p[0], p[1].track_id))
    offset = _common_offset([t for _, t in ordered])
    renditions: list[Rendition] = []
    counters = {"video": 0, "audio": 0}
    for src, t in ordered:
        rid = f"{t.kind[0]}{counters[t.kind]}"
        counters[t.kind] += 1
        ticks = math.ceil(offset * t.timescale)
        renditions.append(Rendition(rid, t, src, ticks, []))

    ref = renditions[0]
    cuts_idx, end_idx = _reference_cuts(ref, Fraction(target), clip, offset)
    ts = ref.track.timescale
    cuts = [Fraction(ref.out_time(i), ts) for i in (*cuts_idx, end_idx)]
    for r in renditions:
        if r is ref:  # exact indices: no rounding between timescales on the track itself
            r.segments = _segments_from(r, cuts_idx, end_idx, clipped=clip is not None)
        else:
            r.segments = _segments_at(r, cuts, clipped=clip is not None)
    return Presentation(offset, target, renditions, clip)


def _without_ladder_duplicates(tracks: list[tuple[int, Track]]) -> list[tuple[int, Track]]:
    """Each file of an ABR ladder carries the same audio: list such audio once.

    Audio is a duplicate when it sits beside video in another file and has the same language,
    codec, channels and rate as one already kept, and a duration within 0.1 s of it (lower
    rungs encoded beside an uploaded top rung differ by an AAC frame or two). Audio-only files
    (extra languages) are always kept.
    """
    with_video = {src for src, t in tracks if t.kind == "video"}
    first: dict[tuple[str, str, int, int], tuple[int, float]] = {}
    kept = []
    for src, t in tracks:
        if t.kind == "audio" and src in with_video:
            c = t.codec
            key = (t.language, c.codec, c.channels, c.sample_rate)
            duration = t.duration / t.timescale
            kept_src, kept_duration = first.setdefault(key, (src, duration))
            if kept_src != src and abs(kept_duration - duration) <= 0.1:
                continue
        kept.append((src, t))
    return kept


def _common_offset(tracks: list[Track]) -> Fraction:
    """The smallest shift (seconds) that puts the earliest sample of every track at >= 0."""
    shift = Fraction(0)
    for t in tracks:
        first = Fraction(t.dts[0] + t.edit_shift, t.timescale)
        shift = max(shift, -first)
    return shift


def _reference_cuts(
    ref: Rendition, target: Fraction, clip: tuple[float, float] | None, offset: Fraction
) -> tuple[list[int], int]:
    """Sample indices where the reference track is cut, and the index where it ends."""
    t = ref.track
    ts = t.timescale
    cuts_idx: list[int] = []
    first, last = 0, t.sample_count
    if clip is not None:
        first, last = _clip_range(ref, clip, offset)
    step = target * ts
    candidates = t.sync if (t.kind == "video" and t.sync is not None) else None
    if candidates is not None and clip is None:
        # Leading samples before the first keyframe cannot start a segment of their own;
        # they ride in segment 1 and the cutting counts from that keyframe.
        first = candidates[0]
    cuts_idx.append(first)
    last_time = ref.out_time(first)
    if candidates is None:
        # Audio reference (or all-sync video): cut at the first sample past each target.
        i = first
        while True:
            i = _first_at_or_after(ref, last_time + step, i + 1, last)
            if i >= last:
                break
            cuts_idx.append(i)
            last_time = ref.out_time(i)
    else:
        j = bisect_left(candidates, first + 1)
        while j < len(candidates) and candidates[j] < last:
            k = candidates[j]
            if ref.out_time(k) - last_time >= step:
                cuts_idx.append(k)
                last_time = ref.out_time(k)
            j += 1
    return cuts_idx, last


def _clip_range(ref: Rendition, clip: tuple[float, float], offset: Fraction) -> tuple[int, int]:
    """Sample range of a clip on the reference track, cut at decodable points.

    Video starts at the last keyframe presented at or before `start` (so the first frame
    decodes) and ends before the first keyframe presented at or after `end` (so B-frames near
    the end keep their references). Audio is cut sample-exactly.
    """
    t = ref.track
    ts = t.timescale
    start, end = (math.ceil((Fraction(c).limit_denominator(1000) + offset) * ts) for c in clip)
    points = t.sync if t.sync is not None else range(t.sample_count)

    def presented(i: int) -> int:
        return ref.out_time(i) + (t.cts[i] if t.cts is not None else 0)

    j = bisect_right(points, start, key=presented) - 1
    first = points[max(j, 0)]
    k = bisect_left(points, end, key=presented)
    last = points[k] if k < len(points) else t.sample_count
    return first, max(last, first + 1)


def _first_at_or_after(r: Rendition, ticks: Fraction, lo: int, hi: int) -> int:
    """Smallest i in [lo, hi) with out_time(i) >= ticks, else hi."""
    t = r.track
    target = ticks - t.edit_shift - r.offset
    i = bisect_left(t.dts, math.ceil(target), lo, hi)
    return i


def _index_at(r: Rendition, seconds: Fraction, sync_only: bool) -> int:
    """First sample (or sync sample) whose output time is at or after `seconds`, allowing half
    a sample of slack so that tracks with other timescales land on the same instant."""
    t = r.track
    n = t.sample_count
    if n == 0:
        return 0
    typical = max(1, (t.dts[-1] - t.dts[0]) // n)
    ticks = seconds * t.timescale - t.edit_shift - r.offset - Fraction(typical, 2)
    i = bisect_left(t.dts, math.ceil(ticks), 0, n)
    if sync_only and t.sync is not None and i < n:
        j = bisect_left(t.sync, i)
        i = t.sync[j] if j < len(t.sync) else n
    return i


def _segments_at(r: Rendition, cuts: list[Fraction], clipped: bool) -> list[Segment]:
    """Split a track at the cut instants. Unclipped, every sample belongs to some segment."""
    t = r.track
    n = t.sample_count
    sync_only = t.kind == "video" and t.sync is not None
    bounds: list[int] = []
    for c in cuts[:-1]:
        i = _index_at(r, c, sync_only=sync_only)
        if i < n and (not bounds or i > bounds[-1]):
            bounds.append(i)
    end = _index_at(r, cuts[-1], sync_only=False) if clipped else n
    return _segments_from(r, bounds, end, clipped)


def _segments_from(r: Rendition, bounds: list[int], end: int, clipped: bool) -> list[Segment]:
    """Segments starting at `bounds`; unclipped, segment 1 starts at sample 0 and the last
    ends at the last sample, so that every sample is served."""
    if clipped:
        bounds = [b for b in bounds if b < end]
    else:
        end = r.track.sample_count
        bounds = [b for b in bounds if b < end] or [0]
        bounds[0] = 0
    segments: list[Segment] = []
    for number, first in enumerate(bounds, start=1):
        stop = bounds[number] if number < len(bounds) else end
        start = r.out_time(first)
        segments.append(Segment(number, first, stop, start, r.out_time(stop) - start))
    return segments
