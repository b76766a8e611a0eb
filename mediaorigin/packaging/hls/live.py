"""Live HLS playlists: Low-Latency HLS media playlists with parts, TS playlists, masters.

Pure text from a `LiveWindow`. Parts are listed for the segments of the last three target
durations (older parts are no longer addressable in the playlist), a PRELOAD-HINT names the
next part, RENDITION-REPORTs the other renditions' newest part, and `skip` replaces old
segments by EXT-X-SKIP for delta updates (CAN-SKIP-UNTIL = 6 target durations).
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..live.window import LiveSegment, LiveWindow

# Which renditions a master lists together: the muxed ones, or (without audio to mux) the
# video and audio ones. TS renditions have no parts, so nothing reports them.
_MASTER_OF = {"muxed": "muxed", "video": "demuxed", "audio": "demuxed"}
PART_HOLD_BACK_PARTS = 3.0  # PART-HOLD-BACK in part targets (the spec's recommendation)
SKIP_TARGETS = 6  # CAN-SKIP-UNTIL in target durations


def master(w: LiveWindow, query: str, *, ts: bool) -> str:
    q = f"?{query}" if query else ""
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-INDEPENDENT-SEGMENTS"]
    # TS, and fMP4 with video and audio: renditions that carry both (one request per part
    # for LL-HLS players, not two)
    variants = [r for r in w.renditions if r.kind == ("ts" if ts else "muxed")]
    if variants:
        codecs = {r.name: r.codec.codec for r in w.renditions}
        for v in sorted(variants, key=lambda r: -r.codec.height):
            attrs = [f"BANDWIDTH={v.bandwidth}", f"AVERAGE-BANDWIDTH={v.average_bandwidth}",
                     'CODECS="' + ",".join(codecs[n] for n in v.carries if n in codecs) + '"']
            if v.codec.width:
                attrs.append(f"RESOLUTION={v.codec.width}x{v.codec.height}")
            lines += [f"#EXT-X-STREAM-INF:{','.join(attrs)}", f"{v.name}/index.m3u8{q}"]
        return "\n".join(lines) + "\n"
    video = next((r for r in w.renditions if r.kind == "video"), None)
    audio = next((r for r in w.renditions if r.kind == "audio"), None)
    if video is None:
        assert audio is not None
        lines += [f'#EXT-X-STREAM-INF:BANDWIDTH={audio.bandwidth},CODECS="{audio.codec.codec}"',
                  f"{audio.name}/index.m3u8{q}"]
        return "\n".join(lines) + "\n"
    if audio is not None:
        lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="{audio.name}",'
                     f'DEFAULT=YES,AUTOSELECT=YES,URI="{audio.name}/index.m3u8{q}"')
    for v in sorted((r for r in w.renditions if r.kind == "video"),
                    key=lambda r: -r.codec.height):
        audio_peak, audio_average = (audio.bandwidth, audio.average_bandwidth) if audio \
            else (0, 0)
        attrs = [f"BANDWIDTH={v.bandwidth + audio_peak}",
                 f"AVERAGE-BANDWIDTH={v.average_bandwidth + audio_average}",
                 'CODECS="' + ",".join(r.codec.codec for r in (v, audio) if r is not None) + '"']
        if v.codec.width:
            attrs.append(f"RESOLUTION={v.codec.width}x{v.codec.height}")
        if audio is not None:
            attrs.append('AUDIO="audio"')
        lines += [f"#EXT-X-STREAM-INF:{','.join(attrs)}", f"{v.name}/index.m3u8{q}"]
    return "\n".join(lines) + "\n"


def media(w: LiveWindow, rendition: str, query: str, *, ts: bool = False,
          skip: bool = False) -> str:
    """One rendition's playlist; `ts` lists muxed MPEG-TS segments (no parts)."""
    q = f"?{query}" if query else ""
    parts_on = w.part_target > 0 and not ts
    timescale = next((r.timescale for r in w.renditions if r.name == rendition), 0)
    version = 9 if parts_on else (3 if ts else 6)
    head = ["#EXTM3U", f"#EXT-X-VERSION:{version}", f"#EXT-X-TARGETDURATION:{w.target_duration}"]
    control = ["CAN-BLOCK-RELOAD=YES"]
    if parts_on:
        control += [f"PART-HOLD-BACK={_num(w.part_target * PART_HOLD_BACK_PARTS)}",
                    f"CAN-SKIP-UNTIL={_num(w.target_duration * SKIP_TARGETS)}"]
    head.append("#EXT-X-SERVER-CONTROL:" + ",".join(control))
    if parts_on:
        head.append(f"#EXT-X-PART-INF:PART-TARGET={_num(w.part_target)}")
    segments = [s for s in w.segments if s.complete] if ts else w.segments
    first = segments[0].msn if segments else 0
    head += [f"#EXT-X-MEDIA-SEQUENCE:{first}",
             f"#EXT-X-DISCONTINUITY-SEQUENCE:{w.discontinuity_sequence}",
             "#EXT-X-INDEPENDENT-SEGMENTS"]
    body: list[str] = []
    skipped = 0
    if skip and parts_on and not w.ended:
        limit = w.target_duration * SKIP_TARGETS
        end = segments[-1].start + segments[-1].duration if segments else 0.0
        # Epoch changes must stay visible (MAP, DISCONTINUITY), so only skip within the
        # newest epoch.
        last_epoch = segments[-1].epoch if segments else 0
        while skipped < len(segments) and segments[skipped].complete and \
                segments[skipped].epoch == last_epoch and \
                end - segments[skipped].start > limit:
            skipped += 1
        if skipped:
            body.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
    newest = segments[-1].start + segments[-1].duration if segments else 0.0
    parts_from = newest - 3 * w.target_duration
    previous_epoch: int | None = segments[skipped - 1].epoch if skipped else None
    ext = "ts" if ts else "m4s"
    for s in segments[skipped:]:
        if s.epoch != previous_epoch:
            if previous_epoch is not None:
                body.append("#EXT-X-DISCONTINUITY")
            if not ts:
                body.append(f'#EXT-X-MAP:URI="init-{s.epoch}.mp4{q}"')
            previous_epoch = s.epoch
        body.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(s.wallclock)}")
        if parts_on and s.start + s.duration > parts_from:
            for i, p in enumerate(s.parts):
                independent = ",INDEPENDENT=YES" if p.independent else ""
                gap = ",GAP=YES" if rendition in p.missing else ""
                body.append(f'#EXT-X-PART:DURATION={p.of(rendition):.5f},'
                            f'URI="{s.msn}.{i}.{ext}{q}"{independent}{gap}')
        if s.complete:
            seconds = s.duration_of(rendition, timescale) if timescale else s.duration
            if s.gap(rendition):  # nothing to fetch: players skip it or switch renditions
                body.append("#EXT-X-GAP")
                version = max(version, 8)
            body += [f"#EXTINF:{seconds:.5f},", f"{s.msn}.{ext}{q}"]
    head[1] = f"#EXT-X-VERSION:{version}"  # 8 for EXT-X-GAP
    if w.ended:
        body.append("#EXT-X-ENDLIST")
    elif parts_on and segments:
        nxt_msn, nxt_part = next_part(segments[-1])
        body.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{nxt_msn}.{nxt_part}.{ext}{q}"')
        group = _MASTER_OF.get(next((r.kind for r in w.renditions if r.name == rendition), ""))
        for other in w.renditions:  # the others a player may switch to: of the same master
            if other.name != rendition and _MASTER_OF.get(other.kind) == group:
                msn, part = last_part(segments[-1])
                body.append(f'#EXT-X-RENDITION-REPORT:URI="../{other.name}/index.m3u8{q}",'
                            f"LAST-MSN={msn},LAST-PART={part}")
    return "\n".join(head + body) + "\n"


def next_part(last: LiveSegment) -> tuple[int, int]:
    return (last.msn + 1, 0) if last.complete else (last.msn, len(last.parts))


def last_part(last: LiveSegment) -> tuple[int, int]:
    if last.parts:
        return last.msn, len(last.parts) - 1
    return last.msn - 1, 0


def _pdt(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _num(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".")
