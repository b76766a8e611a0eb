"""Can an upload be served as it is, without transcoding?

The origin packages stored MP4 just in time (HLS/DASH cut at keyframes), so an H.264/AAC MP4
with regular keyframes plays everywhere as uploaded. The check reads only the moov through our
own index (a one-hour file in ~180 ms) instead of demuxing with PyAV.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..packaging.model import MediaError, MediaIndex, Track
from ..packaging.mp4.index import index_file

VIDEO_FOURCCS = {"avc1", "avc3"}


@dataclass(frozen=True)
class PassthroughCheck:
    """The verdict and, when refused, why (for logs and the job record)."""

    ok: bool
    reason: str = ""


def passthrough_ok(path: Path, max_keyframe_interval: float = 10.0) -> bool:
    """True when `path` can be packaged as uploaded (see `check_passthrough`)."""
    return check_passthrough(path, max_keyframe_interval).ok


def check_passthrough(path: Path, max_keyframe_interval: float = 10.0) -> PassthroughCheck:
    """MP4/MOV with at most one H.264 video track, AAC audio (if any), the first video sample
    a keyframe and no stretch without a keyframe longer than `max_keyframe_interval` seconds
    (that stretch would become one segment). Audio-only AAC qualifies."""
    try:
        index = index_path(Path(path))
    except MediaError as e:
        return PassthroughCheck(False, f"not an indexable MP4: {e}")
    videos = index.by_kind("video")
    audios = index.by_kind("audio")
    if len(videos) > 1:
        return PassthroughCheck(False, f"{len(videos)} video tracks")
    if not videos and not audios:
        return PassthroughCheck(False, "no audio or video track")
    for track in audios:
        # mp4a also carries MP3 (mp4a.6B) and others; only object type 0x40 is AAC.
        if track.codec.fourcc != "mp4a" or not track.codec.codec.startswith("mp4a.40."):
            return PassthroughCheck(False, f"audio codec {track.codec.codec} is not AAC")
    if videos:
        video = videos[0]
        if video.codec.fourcc not in VIDEO_FOURCCS:
            return PassthroughCheck(False, f"video codec {video.codec.codec} is not H.264")
        gap = longest_keyframe_gap(video)
        if gap is None:
            return PassthroughCheck(False, "the first video sample is not a keyframe")
        if gap > max_keyframe_interval:
            return PassthroughCheck(
                False, f"{gap:.1f} s without a keyframe (limit {max_keyframe_interval:.1f} s)"
            )
    return PassthroughCheck(True)


def longest_keyframe_gap(track: Track) -> float | None:
    """Seconds of the longest run from a keyframe to the next one (or to the track's end, which
    bounds the last segment); None when the track does not start with a keyframe."""
    if track.sample_count == 0:
        return None
    sync = track.sync_indices()
    if len(sync) == 0 or sync[0] != 0:
        return None
    dts = track.dts
    times = [dts[i] for i in sync]
    times.append(dts[-1])
    longest = max(b - a for a, b in zip(times, times[1:], strict=False))
    return longest / track.timescale


def keyframe_times(path: Path) -> list[float] | None:
    """Presentation times (s, edit lists applied) of the video keyframes, from the moov alone;
    None when our index cannot read the file or it has no single video track."""
    try:
        index = index_path(Path(path))
    except MediaError:
        return None
    videos = index.by_kind("video")
    if len(videos) != 1:
        return None
    track = videos[0]
    cts = track.cts
    times = sorted(
        (track.dts[i] + (cts[i] if cts is not None else 0) + track.edit_shift) / track.timescale
        for i in track.sync_indices()
    )
    return times or None


def index_path(path: Path) -> MediaIndex:
    """Our MP4 index of a file on disk; MediaError for anything it cannot index."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise MediaError(f"cannot open: {e}") from None
    try:
        return index_file(lambda off, n: os.pread(fd, n, off), os.fstat(fd).st_size)
    finally:
        os.close(fd)
