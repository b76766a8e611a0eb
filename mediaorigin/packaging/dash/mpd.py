"""Static DASH MPD (ISO/IEC 23009-1, isoff-live profile) for a planned `Presentation`.

Segments are addressed with `$Number$` (equal to `Segment.number`, so HLS and DASH share the
same segment URLs and cache entries) and timed with a SegmentTimeline, because segment durations
vary (keyframe cuts, AAC frames of 1024 samples).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from fractions import Fraction

from ..segmenter import Presentation, Rendition
from ..stats import bcp47, frame_rate, rendition_stats
from ..urls import INIT, VTT_FULL, child_path, segment_template, with_query
from ..webvtt import SubtitleTrack

MPD_NS = "urn:mpeg:dash:schema:mpd:2011"
PROFILE = "urn:mpeg:dash:profile:isoff-live:2011"
ROLE_SCHEME = "urn:mpeg:dash:role:2011"
CHANNELS_SCHEME = "urn:mpeg:mpegB:cicp:ChannelConfiguration"
SUBTITLE_BANDWIDTH = 256


def mpd(p: Presentation, subtitles: list[SubtitleTrack], query: str) -> str:
    """The MPD text. `query` (already URL-encoded) is carried onto every URL, XML-escaped."""
    root = ET.Element("MPD", {
        "xmlns": MPD_NS,
        "profiles": PROFILE,
        "type": "static",
        "mediaPresentationDuration": _duration(p.duration),
        "minBufferTime": _duration(_min_buffer(p)),
    })
    period = ET.SubElement(root, "Period", {"id": "0", "start": "PT0S"})
    zero = presentation_zero(p)
    sets = 0
    videos = p.of_kind("video")
    if videos:
        _video_set(period, sets, videos, p, zero, query)
        sets += 1
    for i, (lang, audios) in enumerate(_by_language(p.of_kind("audio"))):
        _audio_set(period, sets, lang, audios, "main" if i == 0 else "alternate", p, zero, query)
        sets += 1
    for s in subtitles:
        _text_set(period, sets, s, query)
        sets += 1
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def presentation_zero(p: Presentation) -> Fraction:
    """Presentation time (seconds) shown at the MPD's time zero.

    Unclipped: 0. Clipped: the earliest presentation time of the reference rendition's first
    segment, so the clip starts at 0 in the player.
    """
    ref = p.renditions[0]
    if p.clip is None or not ref.segments:
        return Fraction(0)
    # Never below 0: a clip from the very start of a track with primed audio (edit list).
    return max(Fraction(0), Fraction(_earliest(ref, 0), ref.track.timescale))


def time_zero(p: Presentation) -> Fraction:
    """Where the MPD's time zero sits on the segmenter's output timeline, in seconds."""
    return p.offset + presentation_zero(p)


def subtitle_shift(p: Presentation) -> float:
    """The `shift` to pass to `vtt_document` so that cues line up with this MPD's time zero."""
    return float(presentation_zero(p))


def _video_set(
    period: ET.Element, n: int, videos: list[Rendition], p: Presentation, zero: Fraction,
    query: str,
) -> None:
    codecs = [v.track.codec for v in videos]
    aset = ET.SubElement(period, "AdaptationSet", {
        "id": str(n),
        "contentType": "video",
        "mimeType": "video/mp4",
        "segmentAlignment": "true",
        "startWithSAP": "1",
        "maxWidth": str(max(c.width for c in codecs)),
        "maxHeight": str(max(c.height for c in codecs)),
    })
    for v in videos:
        attrs = _representation_attrs(v, p)
        c = v.track.codec
        attrs.update({"width": str(c.width), "height": str(c.height)})
        rate = frame_rate(v.track)
        if rate:
            attrs["frameRate"] = _fraction(rate)
        attrs["sar"] = "1:1"
        rep = ET.SubElement(aset, "Representation", attrs)
        _segment_template(rep, v, zero, query)


def _audio_set(
    period: ET.Element, n: int, lang: str, audios: list[Rendition], role: str,
    p: Presentation, zero: Fraction, query: str,
) -> None:
    aset = ET.SubElement(period, "AdaptationSet", {
        "id": str(n),
        "contentType": "audio",
        "mimeType": "audio/mp4",
        "lang": lang,
        "segmentAlignment": "true",
        "startWithSAP": "1",
    })
    ET.SubElement(aset, "Role", {"schemeIdUri": ROLE_SCHEME, "value": role})
    for a in audios:
        attrs = _representation_attrs(a, p)
        attrs["audioSamplingRate"] = str(a.track.codec.sample_rate or a.track.timescale)
        rep = ET.SubElement(aset, "Representation", attrs)
        ET.SubElement(rep, "AudioChannelConfiguration", {
            "schemeIdUri": CHANNELS_SCHEME, "value": str(a.track.codec.channels or 2)})
        _segment_template(rep, a, zero, query)


def _text_set(period: ET.Element, n: int, s: SubtitleTrack, query: str) -> None:
    aset = ET.SubElement(period, "AdaptationSet", {
        "id": str(n), "contentType": "text", "mimeType": "text/vtt", "lang": bcp47(s.language)})
    ET.SubElement(aset, "Role", {"schemeIdUri": ROLE_SCHEME, "value": "subtitle"})
    rep = ET.SubElement(aset, "Representation", {"id": s.id, "bandwidth": str(SUBTITLE_BANDWIDTH)})
    ET.SubElement(rep, "BaseURL").text = with_query(child_path(s.id, VTT_FULL), query)


def _representation_attrs(r: Rendition, p: Presentation) -> dict[str, str]:
    stats = rendition_stats(r, "fmp4", target=p.target)
    return {"id": r.id, "bandwidth": str(max(1, stats.peak_bps)), "codecs": r.track.codec.codec}


def _segment_template(rep: ET.Element, r: Rendition, zero: Fraction, query: str) -> None:
    ts = r.track.timescale
    # `$` starts a template identifier; a literal one in the query must be written `$$`.
    q = query.replace("$", "$$")
    tmpl = ET.SubElement(rep, "SegmentTemplate", {
        "timescale": str(ts),
        "presentationTimeOffset": str(_pto(r, zero)),
        "initialization": with_query(child_path(r.id, INIT), q),
        "media": with_query(child_path(r.id, segment_template("fmp4")), q),
        "startNumber": "1",
    })
    timeline = ET.SubElement(tmpl, "SegmentTimeline")
    for t, d, repeat in timeline_runs(r):
        attrs = {"t": str(t)} if t is not None else {}
        attrs["d"] = str(d)
        if repeat:
            attrs["r"] = str(repeat)
        ET.SubElement(timeline, "S", attrs)


def _pto(r: Rendition, zero: Fraction) -> int:
    """Media time (track ticks) shown at period time 0. fMP4 segments present samples at
    their presentation time (edit list applied), so this is `zero` in this timescale: 0 when
    unclipped."""
    return round(zero * r.track.timescale)


def timeline_runs(r: Rendition) -> list[tuple[int | None, int, int]]:
    """SegmentTimeline entries (t or None, d, r): t on the first and after a discontinuity,
    runs of equal durations folded into r. t is the segment's earliest presentation time."""
    runs: list[tuple[int | None, int, int]] = []
    expected: int | None = None
    for i, s in enumerate(r.segments):
        t, d = _earliest(r, i), s.duration
        if t < 0:
            # S@t is unsigned: samples an edit list puts before zero (AAC priming) are not
            # presented anyway, so the segment is announced from 0 with what remains of it.
            t, d = 0, max(0, t + d)
        if runs and t == expected and runs[-1][1] == d:
            prev_t, prev_d, rep = runs[-1]
            runs[-1] = (prev_t, prev_d, rep + 1)
        else:
            runs.append((t if t != expected else None, d, 0))
        expected = t + d
    return runs


def _earliest(r: Rendition, i: int) -> int:
    """Earliest presentation time of segment i on the fMP4 timeline: decode time plus
    composition offset plus the edit list shift, which is what tfdt + trun present."""
    s = r.segments[i]
    t = r.track
    return t.dts[s.first] + (t.cts[s.first] if t.cts is not None else 0) + t.edit_shift


def _by_language(audios: list[Rendition]) -> list[tuple[str, list[Rendition]]]:
    groups: dict[str, list[Rendition]] = {}
    for a in audios:
        groups.setdefault(bcp47(a.track.language), []).append(a)
    return list(groups.items())


def _min_buffer(p: Presentation) -> float:
    longest = max((s.duration / r.track.timescale for r in p.renditions for s in r.segments),
                  default=p.target)
    return max(longest, 1.0)


def _duration(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


def _fraction(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"
