"""HLS playlists (RFC 8216) for a planned `Presentation`: master, media, I-frame, subtitles.

Every URI is relative (`v0/media.m3u8` from the master, `seg-1.m4s` from a media playlist) so
that the same text works behind any CDN host and path, and carries the master's query (a token)
because players do not propagate it themselves.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left
from collections.abc import Iterable
from fractions import Fraction

from ..segmenter import Presentation, Rendition
from ..stats import (
    Container,
    RenditionStats,
    bcp47,
    language_name,
    rendition_stats,
    sample_wire_bytes,
    unique_names,
)
from ..urls import (
    INIT,
    child_path,
    iframe_name,
    iframes_playlist_name,
    playlist_name,
    segment_name,
    vtt_segment_name,
    with_query,
)
from ..webvtt import SubtitleTrack

AUDIO_GROUP = "aud"
SUBTITLE_GROUP = "subs"
# Master versions: fMP4 masters say 7 like their media playlists; TS needs 4 (I-frame streams).
_MASTER_VERSION = {"fmp4": 7, "ts": 4}


# --- master ----------------------------------------------------------------------------------


def master_playlist(
    p: Presentation, subtitles: list[SubtitleTrack], container: Container, query: str
) -> str:
    """The multivariant playlist: one variant per video rendition (or one audio-only variant),
    alternative audio and subtitle renditions, and an I-frame stream per video rendition."""
    videos, audios = p.of_kind("video"), p.of_kind("audio")
    stats = {r.id: rendition_stats(r, container, target=p.target) for r in p.renditions}
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{_MASTER_VERSION[container]}",
             "#EXT-X-INDEPENDENT-SEGMENTS", ""]
    lines += _audio_media(audios, container, query, muxed_default=bool(videos))
    lines += _subtitle_media(subtitles, container, query)
    if lines[-1]:
        lines.append("")
    audio_peak, audio_avg = _audio_budget([stats[a.id] for a in audios], container, bool(videos))
    audio_codecs = _distinct(a.track.codec.codec for a in audios)
    groups = _groups(bool(audios), bool(subtitles))
    for v in videos:
        s = stats[v.id]
        attrs = [
            ("BANDWIDTH", str(s.peak_bps + audio_peak)),
            ("AVERAGE-BANDWIDTH", str(s.average_bps + audio_avg)),
            ("CODECS", _q(",".join([v.track.codec.codec, *audio_codecs]))),
            *_resolution(v),
            *([("FRAME-RATE", f"{s.frame_rate:.3f}")] if s.frame_rate else []),
            *groups,
        ]
        uri = with_query(child_path(v.id, playlist_name(container)), query)
        lines += [f"#EXT-X-STREAM-INF:{_attrs(attrs)}", uri]
    if not videos and audios:
        lines += _audio_only_variant(audios[0], audio_peak, audio_avg, audio_codecs, groups,
                                     container, query)
    if videos:
        lines.append("")
    for v in videos:
        lines.append(_iframe_stream_inf(v, container, query))
    return "\n".join(lines).rstrip("\n") + "\n"


def _audio_media(
    audios: list[Rendition], container: Container, query: str, muxed_default: bool
) -> list[str]:
    """EXT-X-MEDIA per audio rendition. In a TS master with video, the default audio travels
    inside the video's TS segments, so its tag has no URI (RFC 8216 §4.3.4.1)."""
    names = unique_names([language_name(a.track.language) for a in audios])
    lines = []
    for i, (a, name) in enumerate(zip(audios, names, strict=True)):
        attrs = [
            ("TYPE", "AUDIO"),
            ("GROUP-ID", _q(AUDIO_GROUP)),
            ("LANGUAGE", _q(bcp47(a.track.language))),
            ("NAME", _q(name)),
            ("DEFAULT", "YES" if i == 0 else "NO"),
            ("AUTOSELECT", "YES"),
            ("CHANNELS", _q(str(a.track.codec.channels or 2))),
        ]
        if not (container == "ts" and muxed_default and i == 0):
            attrs.append(("URI", _q(with_query(child_path(a.id, playlist_name(container)),
                                               query))))
        lines.append(f"#EXT-X-MEDIA:{_attrs(attrs)}")
    return lines


def _subtitle_media(subtitles: list[SubtitleTrack], container: Container,
                    query: str) -> list[str]:
    names = unique_names([s.name or language_name(s.language) for s in subtitles])
    lines = []
    for s, name in zip(subtitles, names, strict=True):
        attrs = [
            ("TYPE", "SUBTITLES"),
            ("GROUP-ID", _q(SUBTITLE_GROUP)),
            ("LANGUAGE", _q(bcp47(s.language))),
            ("NAME", _q(name)),
            ("DEFAULT", "NO"),
            ("AUTOSELECT", "YES"),
            ("URI", _q(with_query(child_path(s.id, playlist_name(container)), query))),
        ]
        lines.append(f"#EXT-X-MEDIA:{_attrs(attrs)}")
    return lines


def _audio_budget(
    audio: list[RenditionStats], container: Container, has_video: bool
) -> tuple[int, int]:
    """Peak and average bits/s a variant must add for its audio group.

    fMP4: the largest audio rendition (one is fetched beside the video). TS with video: the
    default audio is muxed into every video segment, and choosing another one adds it on top.
    """
    if not audio:
        return 0, 0
    if container == "ts" and has_video:
        rest = audio[1:]
        return (audio[0].peak_bps + max((s.peak_bps for s in rest), default=0),
                audio[0].average_bps + max((s.average_bps for s in rest), default=0))
    return max(s.peak_bps for s in audio), max(s.average_bps for s in audio)


def _audio_only_variant(
    default: Rendition,
    peak: int,
    average: int,
    codecs: list[str],
    groups: list[tuple[str, str]],
    container: Container,
    query: str,
) -> list[str]:
    """Players need one EXT-X-STREAM-INF even without video: it points at the default audio."""
    attrs = [("BANDWIDTH", str(peak)), ("AVERAGE-BANDWIDTH", str(average)),
             ("CODECS", _q(",".join(codecs))), *groups]
    uri = with_query(child_path(default.id, playlist_name(container)), query)
    return [f"#EXT-X-STREAM-INF:{_attrs(attrs)}", uri]


def _iframe_stream_inf(v: Rendition, container: Container, query: str) -> str:
    attrs = [
        ("BANDWIDTH", str(iframe_bandwidth(v, container))),
        ("CODECS", _q(v.track.codec.codec)),
        *_resolution(v),
        ("URI", _q(with_query(child_path(v.id, iframes_playlist_name(container)), query))),
    ]
    return f"#EXT-X-I-FRAME-STREAM-INF:{_attrs(attrs)}"


def _groups(has_audio: bool, has_subtitles: bool) -> list[tuple[str, str]]:
    return ([("AUDIO", _q(AUDIO_GROUP))] if has_audio else []) + (
        [("SUBTITLES", _q(SUBTITLE_GROUP))] if has_subtitles else []
    )


def _resolution(v: Rendition) -> list[tuple[str, str]]:
    c = v.track.codec
    return [("RESOLUTION", f"{c.width}x{c.height}")] if c.width and c.height else []


# --- media -----------------------------------------------------------------------------------


def media_playlist(r: Rendition, container: Container, query: str, *, map_uri: bool = True) -> str:
    """VOD media playlist of one rendition; segment n is `seg-{n}` (MEDIA-SEQUENCE 1).

    `map_uri=False` leaves out EXT-X-MAP (for a caller that signals the init segment some other
    way); the version then drops to 3.
    """
    ts = r.track.timescale
    entries = [(_extinf(s.duration / ts), segment_name(s.number, container)) for s in r.segments]
    with_map = container == "fmp4" and map_uri
    head = _media_head(6 if with_map else 3, entries)
    head.append("#EXT-X-INDEPENDENT-SEGMENTS")
    if with_map:
        head.append(f'#EXT-X-MAP:URI="{with_query(INIT, query)}"')
    return _media_text(head, entries, query)


def iframe_playlist(r: Rendition, container: Container, query: str) -> str:
    """I-frame playlist: one entry per keyframe inside the segments (trick play, thumbnails).

    Entry k is `iframe-{k}`; `iframe_samples(r)[k - 1]` is its sample. An entry lasts until the
    next keyframe, the last one until the end of the last segment.
    """
    ts = r.track.timescale
    keys = iframe_samples(r)
    bounds = [r.out_time(i) for i in keys] + [_end_time(r)] if keys else []
    entries = [(_extinf((b - a) / ts), iframe_name(k, container))
               for k, (a, b) in enumerate(itertools.pairwise(bounds), start=1)]
    head = _media_head(7 if container == "fmp4" else 4, entries)
    head.append("#EXT-X-I-FRAMES-ONLY")
    if container == "fmp4":
        head.append(f'#EXT-X-MAP:URI="{with_query(INIT, query)}"')
    return _media_text(head, entries, query)


def iframe_samples(r: Rendition) -> list[int]:
    """Sample indices of the keyframes inside the rendition's segments, in order: the origin
    maps I-frame number k to sample `iframe_samples(r)[k - 1]`."""
    sync = r.track.sync_indices()
    out: list[int] = []
    for s in r.segments:
        out.extend(sync[bisect_left(sync, s.first) : bisect_left(sync, s.end)])
    return out


def iframe_bandwidth(v: Rendition, container: Container) -> int:
    """Average keyframe size * 8 / average keyframe interval, wire overhead included."""
    keys = iframe_samples(v)
    if not keys:
        return 0
    span = (_end_time(v) - v.out_time(keys[0])) / v.track.timescale
    total = sum(sample_wire_bytes(v.track, k, container) for k in keys)
    return math.ceil(total * 8 / span) if span > 0 else total * 8


def subtitle_playlist(ref: Rendition, query: str, container: Container = "fmp4") -> str:
    """WebVTT playlist whose segments line up with the reference rendition's segments, so that
    subtitle segment n covers the same time as media segment n (see `subtitle_window`)."""
    ts = ref.track.timescale
    entries = [(_extinf(s.duration / ts), vtt_segment_name(s.number, container))
               for s in ref.segments]
    return _media_text(_media_head(3, entries), entries, query)


def subtitle_window(ref: Rendition, number: int, offset: Fraction) -> tuple[float, float] | None:
    """Presentation seconds [t0, t1) that subtitle segment `number` covers, for `vtt_segment`.

    `offset` is `Presentation.offset` (where presentation time zero is on the output timeline).
    """
    s = ref.segment(number)
    if s is None:
        return None
    ts = ref.track.timescale
    return (float(Fraction(s.start, ts) - offset),
            float(Fraction(s.start + s.duration, ts) - offset))


def _end_time(r: Rendition) -> int:
    last = r.segments[-1]
    return last.start + last.duration


def _extinf(seconds: float) -> str:
    return f"{seconds:.5f}"


def _media_head(version: int, entries: list[tuple[str, str]]) -> list[str]:
    # Ceil of the durations as written, so every EXTINF rounded stays <= the target.
    target = max((math.ceil(float(d)) for d, _ in entries), default=1)
    return [
        "#EXTM3U",
        f"#EXT-X-VERSION:{version}",
        f"#EXT-X-TARGETDURATION:{max(1, target)}",
        "#EXT-X-MEDIA-SEQUENCE:1",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]


def _media_text(head: list[str], entries: list[tuple[str, str]], query: str) -> str:
    body = [f"#EXTINF:{d},\n{with_query(uri, query)}" for d, uri in entries]
    return "\n".join([*head, *body, "#EXT-X-ENDLIST"]) + "\n"


# --- attribute lists -------------------------------------------------------------------------


def _q(value: str) -> str:
    """A quoted-string attribute value; RFC 8216 forbids `"` and line breaks inside it."""
    return '"' + value.replace('"', "'").replace("\n", " ").replace("\r", " ") + '"'


def _attrs(pairs: list[tuple[str, str]]) -> str:
    return ",".join(f"{k}={v}" for k, v in pairs)


def _distinct(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out
