"""Dynamic DASH MPD for a live stream (isoff-live, SegmentTimeline, one Period per epoch).

Each publisher connection (epoch) is a Period starting at its wall-clock time after
availabilityStartTime, with presentationTimeOffset mapping the channel timeline (tfdt) onto it,
so a reconnect after a pause neither stretches nor shifts the clock players compute the live
edge from. Segment URLs are the HLS fMP4 ones ($Number$ = media sequence number).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from ..live.window import LiveRendition, LiveSegment, LiveWindow

MPD_NS = "urn:mpeg:dash:schema:mpd:2011"
PROFILE = "urn:mpeg:dash:profile:isoff-live:2011"
UTC_DIRECT = "urn:mpeg:dash:utc:direct:2014"


def live_mpd(w: LiveWindow, query: str, now: float) -> str:
    segments = [s for s in w.segments if s.complete]
    attrs = {
        "xmlns": MPD_NS,
        "profiles": PROFILE,
        "type": "static" if w.ended else "dynamic",
        "availabilityStartTime": _iso(w.availability_start),
        "publishTime": _iso(now),
        "minBufferTime": _duration(max(1.0, float(w.target_duration))),
    }
    if w.ended:
        attrs["mediaPresentationDuration"] = _duration(_end(w, segments))
    else:
        attrs["minimumUpdatePeriod"] = _duration(float(w.target_duration))
        attrs["timeShiftBufferDepth"] = _duration(w.dvr_depth)
        attrs["suggestedPresentationDelay"] = _duration(3.0 * w.target_duration)
        attrs["maxSegmentDuration"] = _duration(float(w.target_duration))
    root = ET.Element("MPD", attrs)
    q = query.replace("$", "$$")
    for epoch, group in _by_epoch(segments):
        period = ET.SubElement(root, "Period", {"id": f"e{epoch}",
                                                "start": _duration(_period_start(w, group[0]))})
        videos = [r for r in w.renditions if r.kind == "video"]
        audios = [r for r in w.renditions if r.kind == "audio"]
        for n, members in enumerate(m for m in (videos, audios) if m):
            _adaptation_set(period, n, members, epoch, group, w, q)
    if not w.ended:
        ET.SubElement(root, "UTCTiming", {"schemeIdUri": UTC_DIRECT, "value": _iso(now)})
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _adaptation_set(period: ET.Element, n: int, members: list[LiveRendition], epoch: int,
                    segments: list[LiveSegment], w: LiveWindow, q: str) -> None:
    kind = members[0].kind
    aset = ET.SubElement(period, "AdaptationSet", {
        "id": str(n), "contentType": kind, "mimeType": f"{kind}/mp4",
        "segmentAlignment": "true", "startWithSAP": "1"})
    for r in members:
        _representation(aset, r, epoch, segments, w, q)


def _representation(aset: ET.Element, r: LiveRendition, epoch: int,
                    segments: list[LiveSegment], w: LiveWindow, q: str) -> None:
    video = r.kind == "video"
    rep_attrs = {"id": r.name, "bandwidth": str(max(1, r.bandwidth)), "codecs": r.codec.codec}
    if video and r.codec.width:
        rep_attrs |= {"width": str(r.codec.width), "height": str(r.codec.height)}
    if not video and r.codec.sample_rate:
        rep_attrs["audioSamplingRate"] = str(r.codec.sample_rate)
    rep = ET.SubElement(aset, "Representation", rep_attrs)
    if not video:
        ET.SubElement(rep, "AudioChannelConfiguration", {
            "schemeIdUri": "urn:mpeg:dash:23003:3:audio_channel_configuration:2011",
            "value": str(r.codec.channels or 2)})
    epoch_start_channel = w.epoch_starts[epoch][0]
    tmpl = ET.SubElement(rep, "SegmentTemplate", {
        "timescale": str(r.timescale),
        "presentationTimeOffset": str(round(epoch_start_channel * r.timescale)),
        "initialization": f"{r.name}/init-{epoch}.mp4" + (f"?{q}" if q else ""),
        "media": f"{r.name}/$Number$.m4s" + (f"?{q}" if q else ""),
        "startNumber": str(segments[0].msn),
    })
    timeline = ET.SubElement(tmpl, "SegmentTimeline")
    expected: int | None = None
    last: ET.Element | None = None
    last_d = -1
    for s in segments:
        t, d = s.ticks.get(r.name, (round(s.start * r.timescale),
                                    round(s.duration * r.timescale)))
        if last is not None and t == expected and d == last_d:
            last.set("r", str(int(last.get("r", "0")) + 1))
        else:
            attrs = {"d": str(d)} if t == expected else {"t": str(t), "d": str(d)}
            last = ET.SubElement(timeline, "S", attrs)
            last_d = d
        expected = t + d


def _end(w: LiveWindow, segments: list[LiveSegment]) -> float:
    """Seconds after availabilityStartTime at which the last segment ends."""
    if not segments:
        return 0.0
    last = segments[-1]
    return _period_start(w, last) + last.start + last.duration - w.epoch_starts[last.epoch][0]


def _by_epoch(segments: list[LiveSegment]) -> list[tuple[int, list[LiveSegment]]]:
    groups: list[tuple[int, list[LiveSegment]]] = []
    for s in segments:
        if not groups or groups[-1][0] != s.epoch:
            groups.append((s.epoch, []))
        groups[-1][1].append(s)
    return groups


def _period_start(w: LiveWindow, first: LiveSegment) -> float:
    """Seconds after availabilityStartTime at which the segment's epoch starts."""
    _channel, unix = w.epoch_starts[first.epoch]
    return max(0.0, unix - w.availability_start)


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _duration(seconds: float) -> str:
    return f"PT{seconds:.3f}S"
