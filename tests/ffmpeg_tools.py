"""ffmpeg/ffprobe as an independent reference decoder for tests.

The origin's output is judged by what a mature, unrelated demuxer makes of it: `framemd5`
decodes a file or URL (MP4, HLS .m3u8, DASH .mpd over http://127.0.0.1) and returns one md5
per decoded frame, so "the origin serves the same pictures and sound as the source" is a list
comparison.

Picking streams (the `selector` after `-map 0:`), all standard ffmpeg stream specifiers:
- `v:0`, `a:0`, `a:1`: the n-th video/audio stream of the whole input.
- `a:m:language:deu`: the audio stream whose language tag is deu (MP4 tracks; HLS renditions
  from EXT-X-MEDIA LANGUAGE; DASH AdaptationSet@lang).
- `p:N:v` / `p:N:a`: HLS master playlists become one *program per variant* (in playlist
  order, N from 0) and DASH manifests one program with every representation, so `v:0` on a
  master is just "the first variant listed". Use `p:N:v` for variant N of a master, or pass
  the variant's media playlist URL directly: that is the least ambiguous and only fetches
  that rendition. Alternate-audio renditions are attached to each program that references
  their GROUP-ID, so `p:N:a:m:language:deu` also works on a master.
ffmpeg only downloads segments of playlists whose streams are mapped.

These run ffmpeg synchronously. In an async test whose event loop also runs the server being
read (aiohttp_server, the origin), a blocking call would deadlock: use `aframemd5` /
`aprobe`, which run in a worker thread.

Audio: ffmpeg's MP4 demuxer applies the edit list and drops the AAC priming frame, and
ffmpeg's own fMP4 HLS/DASH output does not carry that edit, so their audio decodes to one
extra leading frame (282 vs 283 frames here). Compare audio with that in mind; video frames
match exactly.

Local .m3u8 files whose segments have unusual extensions need
`extra_input_args=LOCAL_HLS_ARGS` (`-allowed_extensions ALL`); http(s) URLs need nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
FFPROBE = shutil.which("ffprobe") or "/usr/bin/ffprobe"

LOCAL_HLS_ARGS = ("-allowed_extensions", "ALL", "-protocol_whitelist", "file,http,tcp,crypto")
TIMEOUT = 120.0

Source = str | os.PathLike[str]


class FFmpegError(RuntimeError):
    """ffmpeg or ffprobe exited non-zero or printed an error; the message holds its stderr."""


def _run(cmd: list[str], timeout: float) -> str:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        raise FFmpegError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr.strip()}")
    return proc.stdout


def framemd5(
    url_or_path: Source,
    selector: str = "v:0",
    extra_input_args: Sequence[str] = (),
    *,
    strict: bool = True,
    timeout: float = TIMEOUT,
) -> list[str]:
    """md5 of every decoded frame of one stream, in output order.

    strict: also fail when ffmpeg logged errors but still exited 0 (it does that for e.g. a
    corrupt packet or a segment that 404s), since a test comparing frames wants to know.
    Frames are passed through as decoded (`-fps_mode passthrough`), never duplicated or
    dropped to make a constant rate."""
    cmd = [
        FFMPEG, "-nostdin", "-hide_banner", "-v", "error",
        *extra_input_args, "-i", os.fspath(url_or_path),
        "-map", f"0:{selector}", "-fps_mode", "passthrough", "-f", "framemd5", "-",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0 or (strict and proc.stderr.strip()):
        raise FFmpegError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr.strip()}")
    # Lines: "stream_index, dts, pts, duration, size, hash"; '#' lines are the header.
    return [
        line.rsplit(",", 1)[1].strip()
        for line in proc.stdout.splitlines()
        if line and not line.startswith("#")
    ]


def probe(
    url_or_path: Source, extra_input_args: Sequence[str] = (), timeout: float = TIMEOUT
) -> dict[str, Any]:
    """ffprobe's -show_streams -show_format as parsed JSON ({'streams': [...], 'format': {}})."""
    cmd = [
        FFPROBE, "-hide_banner", "-v", "error", *extra_input_args,
        "-show_streams", "-show_format", "-of", "json", os.fspath(url_or_path),
    ]  # fmt: skip
    return json.loads(_run(cmd, timeout))


def streams(url_or_path: Source, codec_type: str | None = None) -> list[dict[str, Any]]:
    """probe()'s streams, optionally only 'video' / 'audio' / 'subtitle' ones."""
    found = probe(url_or_path)["streams"]
    return [s for s in found if codec_type is None or s.get("codec_type") == codec_type]


def duration_of(url_or_path: Source, selector: str | None = None) -> float:
    """Duration in seconds: the container's, or with selector (e.g. 'v:0', 'a:0') that
    stream's as ffprobe reports it."""
    if selector is None:
        return float(probe(url_or_path)["format"]["duration"])
    cmd = [
        FFPROBE, "-hide_banner", "-v", "error", "-select_streams", selector,
        "-show_entries", "stream=duration", "-of", "json", os.fspath(url_or_path),
    ]  # fmt: skip
    found = json.loads(_run(cmd, TIMEOUT))["streams"]
    if not found or "duration" not in found[0]:
        raise FFmpegError(f"no duration for stream {selector} of {url_or_path}")
    return float(found[0]["duration"])


def packets(url_or_path: Source, selector: str = "v:0") -> list[dict[str, Any]]:
    """Demuxed packets of one stream (pts_time, dts_time, flags with 'K' for keyframes...),
    without decoding: for GOP alignment and B-frame (pts != dts order) checks."""
    cmd = [
        FFPROBE, "-hide_banner", "-v", "error", "-select_streams", selector,
        "-show_entries", "packet=pts,dts,pts_time,dts_time,duration_time,size,flags",
        "-of", "json", os.fspath(url_or_path),
    ]  # fmt: skip
    return json.loads(_run(cmd, TIMEOUT)).get("packets", [])


def keyframe_times(url_or_path: Source, selector: str = "v:0") -> list[float]:
    """Presentation times (s) of the keyframe packets of one stream."""
    return [
        float(p["pts_time"]) for p in packets(url_or_path, selector) if "K" in p.get("flags", "")
    ]


async def aframemd5(
    url_or_path: Source,
    selector: str = "v:0",
    extra_input_args: Sequence[str] = (),
    *,
    strict: bool = True,
    timeout: float = TIMEOUT,
) -> list[str]:
    """framemd5() off the event loop, for async tests that also serve the URL."""
    return await asyncio.to_thread(
        framemd5, url_or_path, selector, extra_input_args, strict=strict, timeout=timeout
    )


async def aprobe(url_or_path: Source, extra_input_args: Sequence[str] = ()) -> dict[str, Any]:
    """probe() off the event loop, for async tests that also serve the URL."""
    return await asyncio.to_thread(probe, url_or_path, extra_input_args)
