"""Manifest writers: HLS playlists, DASH MPD, WebVTT, child URL names, bitrate statistics.

Tracks are built by hand as sample tables, so every expectation can be worked out on paper.
"""

from __future__ import annotations

import math
import re
import time
import xml.etree.ElementTree as ET
from array import array
from fractions import Fraction
from itertools import accumulate

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediaorigin.packaging.dash.mpd import mpd, subtitle_shift, time_zero, timeline_runs
from mediaorigin.packaging.hls.playlists import (
    iframe_playlist,
    iframe_samples,
    master_playlist,
    media_playlist,
    subtitle_playlist,
    subtitle_window,
)
from mediaorigin.packaging.model import CodecInfo, MediaError, Track
from mediaorigin.packaging.segmenter import Presentation, build_presentation
from mediaorigin.packaging.stats import bcp47, frame_rate, rendition_stats, unique_names
from mediaorigin.packaging.urls import Child, parse_child, parse_rendition_id, with_query
from mediaorigin.packaging.webvtt import (
    Cue,
    SubtitleTrack,
    parse_webvtt,
    vtt_document,
    vtt_segment,
)

NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
H264 = CodecInfo("avc1", "avc1.64001f", b"", width=640, height=360)
H264_HI = CodecInfo("avc1", "avc1.640028", b"", width=1280, height=720)
AAC = CodecInfo("mp4a", "mp4a.40.2", b"", channels=2, sample_rate=48000)


def make_track(
    kind: str,
    track_id: int,
    timescale: int,
    durations: list[int],
    sizes: list[int],
    sync: list[int] | None,
    codec: CodecInfo,
    language: str = "und",
    cts: list[int] | None = None,
    edit_shift: int = 0,
) -> Track:
    return Track(
        track_id=track_id,
        kind=kind,  # type: ignore[arg-type]
        timescale=timescale,
        language=language,
        codec=codec,
        sizes=array("I", sizes),
        offsets=array("Q", accumulate(sizes, initial=0))[:-1],
        dts=array("q", accumulate(durations, initial=0)),
        cts=array("i", cts) if cts is not None else None,
        sync=array("I", sync) if sync is not None else None,
        edit_shift=edit_shift,
    )


def video(
    n: int = 125,
    gop: int = 50,
    track_id: int = 1,
    codec: CodecInfo = H264,
    scale: int = 1,
    **kw: object,
) -> Track:
    """25 fps at timescale 12800; keyframes every `gop` samples are 5x larger."""
    sizes = [5000 * scale if i % gop == 0 else (1000 + (i * 37) % 300) * scale for i in range(n)]
    return make_track("video", track_id, 12800, [512] * n, sizes, list(range(0, n, gop)), codec,
                      **kw)  # type: ignore[arg-type]


def audio(n: int = 235, track_id: int = 2, language: str = "eng", **kw: object) -> Track:
    """AAC at 48 kHz: 1024 ticks per frame."""
    return make_track("audio", track_id, 48000, [1024] * n, [400 + i % 7 for i in range(n)],
                      None, AAC, language, **kw)  # type: ignore[arg-type]


def presentation(*tracks: Track, target: float = 2.0, clip: tuple[float, float] | None = None
                 ) -> Presentation:
    return build_presentation([(0, t) for t in tracks], target, clip)


def extinfs(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"^#EXTINF:([0-9.]+),", text, re.M)]


def target_duration(text: str) -> int:
    m = re.search(r"^#EXT-X-TARGETDURATION:(\d+)$", text, re.M)
    assert m
    return int(m.group(1))


def uris(text: str) -> list[str]:
    """Every URI in a playlist: URI lines and URI="..." attributes."""
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    return lines + re.findall(r'URI="([^"]*)"', text)


def subs() -> list[SubtitleTrack]:
    cues = [Cue(500, 1500, "one"), Cue(2500, 4200, "two")]
    return [SubtitleTrack("s0", "eng", "", cues), SubtitleTrack("s1", "ger", "Deutsch", cues)]


# --- golden text -----------------------------------------------------------------------------


def test_media_playlist_golden_fmp4() -> None:
    p = presentation(video(), audio())
    assert media_playlist(p.renditions[0], "fmp4", "token=abc") == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:6\n"
        "#EXT-X-TARGETDURATION:2\n"
        "#EXT-X-MEDIA-SEQUENCE:1\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-MAP:URI="init.mp4?token=abc"\n'
        "#EXTINF:2.00000,\n"
        "seg-1.m4s?token=abc\n"
        "#EXTINF:2.00000,\n"
        "seg-2.m4s?token=abc\n"
        "#EXTINF:1.00000,\n"
        "seg-3.m4s?token=abc\n"
        "#EXT-X-ENDLIST\n"
    )


def test_media_playlist_golden_ts_audio() -> None:
    p = presentation(video(), audio())
    # AAC frames do not fall on the 2 s cuts: 94 + 93 + 48 frames.
    assert media_playlist(p.renditions[1], "ts", "") == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-TARGETDURATION:3\n"
        "#EXT-X-MEDIA-SEQUENCE:1\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXTINF:2.00533,\n"
        "seg-1.ts\n"
        "#EXTINF:1.98400,\n"
        "seg-2.ts\n"
        "#EXTINF:1.02400,\n"
        "seg-3.ts\n"
        "#EXT-X-ENDLIST\n"
    )


def test_master_golden_fmp4() -> None:
    p = presentation(video(), audio())
    v, a = (rendition_stats(r, "fmp4", target=2.0) for r in p.renditions)
    iframe = (
        '#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=24596,CODECS="avc1.64001f",RESOLUTION=640x360,'
        'URI="v0/iframes.m3u8?t=1"'
    )
    assert master_playlist(p, [], "fmp4", "t=1") == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:7\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "\n"
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",LANGUAGE="en",NAME="English",DEFAULT=YES,'
        'AUTOSELECT=YES,CHANNELS="2",URI="a0/media.m3u8?t=1"\n'
        "\n"
        f"#EXT-X-STREAM-INF:BANDWIDTH={v.peak_bps + a.peak_bps},"
        f"AVERAGE-BANDWIDTH={v.average_bps + a.average_bps},"
        'CODECS="avc1.64001f,mp4a.40.2",RESOLUTION=640x360,FRAME-RATE=25.000,AUDIO="aud"\n'
        "v0/media.m3u8?t=1\n"
        "\n"
        f"{iframe}\n"
    )


def test_master_ts_default_audio_is_muxed() -> None:
    p = presentation(video(), audio(), audio(track_id=3, language="fra"))
    text = master_playlist(p, [], "ts", "")
    media = [ln for ln in text.splitlines() if ln.startswith("#EXT-X-MEDIA:TYPE=AUDIO")]
    assert "URI=" not in media[0] and "DEFAULT=YES" in media[0]
    assert media[1].endswith('URI="a1/media-ts.m3u8"') and "DEFAULT=NO" in media[1]
    assert "\nv0/media-ts.m3u8\n" in text
    assert 'URI="v0/iframes-ts.m3u8"' in text
    assert "#EXT-X-VERSION:4\n" in text
    # The variant carries the muxed default audio and may add the alternative one on top.
    v, a0, a1 = (rendition_stats(r, "ts", target=2.0) for r in p.renditions)
    assert f"BANDWIDTH={v.peak_bps + a0.peak_bps + a1.peak_bps}," in text


# --- master variations -----------------------------------------------------------------------


def test_audio_only_master() -> None:
    p = presentation(audio(), audio(track_id=3, language="spa"))
    for container, name in (("fmp4", "media.m3u8"), ("ts", "media-ts.m3u8")):
        text = master_playlist(p, [], container, "")  # type: ignore[arg-type]
        assert text.count("#EXT-X-STREAM-INF:") == 1
        assert "I-FRAME" not in text
        assert f"\na0/{name}\n" in text
        assert f'URI="a0/{name}"' in text and f'URI="a1/{name}"' in text
        inf = next(ln for ln in text.splitlines() if ln.startswith("#EXT-X-STREAM-INF:"))
        assert 'CODECS="mp4a.40.2"' in inf and 'AUDIO="aud"' in inf and "RESOLUTION" not in inf


def test_two_videos_two_languages_and_subtitles() -> None:
    # The second English track comes from an audio-only file (src 1): the segmenter lists
    # identical audio beside video only once (ABR ladder files all carry the same audio).
    p = build_presentation([(0, video()), (0, video(track_id=5, codec=H264_HI, scale=3)),
                            (0, audio()), (0, audio(track_id=3, language="ger")),
                            (1, audio(track_id=4, language="eng"))], 2.0)
    text = master_playlist(p, subs(), "fmp4", "")
    assert text.count("#EXT-X-STREAM-INF:") == 2
    assert text.count("#EXT-X-I-FRAME-STREAM-INF:") == 2
    assert 'RESOLUTION=1280x720' in text
    names = re.findall(r'TYPE=AUDIO,.*?NAME="([^"]*)"', text)
    assert names == ["English", "German", "English 2"]
    assert text.count("DEFAULT=YES") == 1
    assert re.findall(r'TYPE=SUBTITLES,GROUP-ID="subs",LANGUAGE="(\w+)",NAME="([^"]*)"', text) == [
        ("en", "English"), ("de", "Deutsch")]
    assert 'URI="s1/media.m3u8"' in text
    for inf in (ln for ln in text.splitlines() if ln.startswith("#EXT-X-STREAM-INF:")):
        assert 'AUDIO="aud"' in inf and 'SUBTITLES="subs"' in inf


def test_language_table() -> None:
    assert [bcp47(c) for c in ("eng", "ger", "deu", "fre", "chi", "und", "xyz", "", "en-US")] == [
        "en", "de", "de", "fr", "zh", "und", "xyz", "und", "en-us"]
    assert unique_names(["A", "A", "A 2", "B"]) == ["A", "A 2", "A 2 2", "B"]


# --- playlist invariants ---------------------------------------------------------------------

CASES = {
    "plain": lambda: presentation(video(), audio()),
    "cts_and_edit": lambda: presentation(
        video(n=300, cts=[1024 if i % 3 == 0 else 512 for i in range(300)], edit_shift=-1024),
        audio(n=560, edit_shift=-2048), target=4.0),
    "two_videos": lambda: presentation(video(n=260, gop=25), video(n=260, gop=50, track_id=9),
                                       audio(n=490), target=3.0),
    "audio_only": lambda: presentation(audio(n=1000), target=6.0),
    "odd_target": lambda: presentation(video(n=401, gop=13), audio(n=751), target=1.7),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("container", ["fmp4", "ts"])
def test_media_playlist_durations(case: str, container: str) -> None:
    p = CASES[case]()
    for r in p.renditions:
        text = media_playlist(r, container, "")  # type: ignore[arg-type]
        durations = extinfs(text)
        assert len(durations) == len(r.segments)
        assert all(round(d) <= target_duration(text) for d in durations)
        assert target_duration(text) == math.ceil(max(durations))
        assert math.isclose(sum(durations), r.track.duration / r.track.timescale,
                            abs_tol=5e-6 * len(durations))


@pytest.mark.parametrize("case", sorted(CASES))
def test_query_on_every_uri(case: str) -> None:
    p, q = CASES[case](), "token=a%20b&exp=99"
    texts = [master_playlist(p, subs(), c, q) for c in ("fmp4", "ts")]
    for r in p.renditions:
        for c in ("fmp4", "ts"):
            texts.append(media_playlist(r, c, q))  # type: ignore[arg-type]
            if r.kind == "video":
                texts.append(iframe_playlist(r, c, q))  # type: ignore[arg-type]
    texts += [subtitle_playlist(p.renditions[0], q, c) for c in ("fmp4", "ts")]
    for text in texts:
        found = uris(text)
        assert found
        assert all(u.endswith("?" + q) for u in found), text


@pytest.mark.parametrize("case", sorted(CASES))
def test_parse_child_accepts_everything_emitted(case: str) -> None:
    p = CASES[case]()
    emitted: list[str] = []
    for c in ("fmp4", "ts"):
        emitted += uris(master_playlist(p, subs(), c, ""))
        for r in p.renditions:
            emitted += [f"{r.id}/{u}" for u in uris(media_playlist(r, c, ""))]  # type: ignore
            if r.kind == "video":
                emitted += [f"{r.id}/{u}" for u in uris(iframe_playlist(r, c, ""))]  # type: ignore
    for c in ("fmp4", "ts"):
        emitted += [f"s0/{u}" for u in uris(subtitle_playlist(p.renditions[0], "", c))]
    root = ET.fromstring(mpd(p, subs(), ""))
    for tmpl in root.iterfind(".//d:SegmentTemplate", NS):
        emitted.append(tmpl.get("initialization", ""))
        count = sum(1 + int(s.get("r", "0")) for s in tmpl.iterfind(".//d:S", NS))
        emitted += [tmpl.get("media", "").replace("$Number$", str(n)) for n in range(1, count + 1)]
    emitted += [b.text or "" for b in root.iterfind(".//d:BaseURL", NS)]
    assert len(emitted) > 20
    for url in emitted:
        rid, name = url.split("/")
        assert parse_rendition_id(rid) == rid, url
        assert parse_child(name) is not None, url


def test_parse_child() -> None:
    assert parse_child("init.mp4") == Child("init", "fmp4", None)
    assert parse_child("seg-1.m4s") == Child("segment", "fmp4", 1)
    assert parse_child("seg-9999999999.ts") == Child("segment", "ts", 9999999999)
    assert parse_child("iframe-12.m4s") == Child("iframe", "fmp4", 12)
    assert parse_child("iframe-3.ts") == Child("iframe", "ts", 3)
    assert parse_child("media.m3u8") == Child("playlist", "fmp4")
    assert parse_child("media-ts.m3u8") == Child("playlist", "ts")
    assert parse_child("iframes.m3u8") == Child("iframes_playlist", "fmp4")
    assert parse_child("iframes-ts.m3u8") == Child("iframes_playlist", "ts")
    assert parse_child("seg-7.vtt") == Child("vtt_segment", "fmp4", 7)
    assert parse_child("seg-7-ts.vtt") == Child("vtt_segment", "ts", 7)
    assert parse_child("full.vtt") == Child("vtt_full", "vtt")
    for bad in ["seg-01.m4s", "seg-1.m4s/../x", "seg-.m4s", "seg-99999999999.m4s",
                "../init.mp4", "init.mp4%00", "init.mp4\n", "seg-0.m4s", "seg-1.M4S",
                "seg-\u0661.m4s", "seg-1.m4s?x=1", "iframe-1.vtt", "seg--1.ts", "", "x" * 5000,
                "media.m3u8 ", "full.vtt.vtt"]:
        assert parse_child(bad) is None, bad
    assert parse_rendition_id("v0") == "v0" and parse_rendition_id("s12") == "s12"
    assert all(parse_rendition_id(b) is None for b in ["v01", "x0", "v", "..", "v0/"])


def test_with_query() -> None:
    assert with_query("a/b.m3u8", "") == "a/b.m3u8"
    assert with_query("a/b.m3u8", "t=1&u=2") == "a/b.m3u8?t=1&u=2"


# --- I-frames --------------------------------------------------------------------------------


def test_iframe_playlist() -> None:
    p = presentation(video(n=260, gop=25), target=3.0)
    v = p.renditions[0]
    keys = iframe_samples(v)
    assert keys == list(range(0, 260, 25))
    assert keys[0] == v.segments[0].first
    text = iframe_playlist(v, "fmp4", "q=1")
    assert "#EXT-X-I-FRAMES-ONLY\n" in text and "#EXT-X-VERSION:7\n" in text
    assert '#EXT-X-MAP:URI="init.mp4?q=1"' in text
    names = [u for u in uris(text) if u.startswith("iframe-")]
    assert names == [f"iframe-{k}.m4s?q=1" for k in range(1, len(keys) + 1)]
    durations = extinfs(text)
    assert durations[:-1] == [1.0] * (len(keys) - 1)
    assert durations[-1] == pytest.approx(10 * 512 / 12800)
    assert math.isclose(sum(durations), 260 * 512 / 12800, abs_tol=1e-4)
    ts_text = iframe_playlist(v, "ts", "")
    assert "#EXT-X-MAP" not in ts_text and "#EXT-X-VERSION:4\n" in ts_text
    assert "iframe-1.ts\n" in ts_text


# --- statistics ------------------------------------------------------------------------------


def test_stats_by_hand() -> None:
    sizes = [5000] + [1000] * 49 + [5000] + [1000] * 49 + [90000] * 5
    t = make_track("video", 1, 12800, [512] * 105, sizes, [0, 50, 100], H264)
    p = presentation(t, target=2.0)
    assert [len(range(s.first, s.end)) for s in p.renditions[0].segments] == [50, 50, 5]
    s = rendition_stats(p.renditions[0], "fmp4", target=2.0)
    # 2 s segments: 54000 payload + 8 (mdat) + 100 (moof) + 16 * 50 (trun) bytes.
    assert s.peak_bps == (54000 + 908) * 8 // 2
    # The 0.2 s tail (below half the target) does not count for the peak, but for the average.
    total = 54000 * 2 + 450000 + 3 * 108 + 16 * 105
    assert s.average_bps == math.ceil(total * 8 / 4.2)
    assert s.frame_rate == 25.0 and s.max_segment_seconds == 2.0
    ts = rendition_stats(p.renditions[0], "ts", target=2.0)
    assert ts.peak_bps > s.peak_bps  # 188/184 packetization plus PES headers and PAT/PMT
    # With only short segments, the short ones are what there is.
    short = presentation(make_track("video", 1, 12800, [512] * 5, [1000] * 5, [0], H264))
    assert rendition_stats(short.renditions[0], "fmp4", target=2.0).peak_bps > 0


def test_frame_rate_is_exact() -> None:
    t = make_track("video", 1, 30000, [1001] * 9 + [500], [1] * 10, [0], H264)
    assert frame_rate(t) == Fraction(30000, 1001)


def test_stats_fast_on_long_files() -> None:
    p = presentation(video(n=100_000, gop=50), audio(n=190_000), target=6.0)
    start = time.perf_counter()
    for r in p.renditions:
        rendition_stats(r, "fmp4", target=6.0)
        rendition_stats(r, "ts", target=6.0)
    assert time.perf_counter() - start < 2.0


# --- DASH ------------------------------------------------------------------------------------


def parse_mpd(text: str) -> ET.Element:
    return ET.fromstring(text.encode())


@pytest.mark.parametrize("case", sorted(CASES))
def test_mpd_structure(case: str) -> None:
    p = CASES[case]()
    q = "token=a&b=c$d"
    text = mpd(p, subs(), q)
    assert "token=a&amp;b=c$$d" in text and "token=a&b" not in text
    root = parse_mpd(text)
    assert root.get("type") == "static"
    assert root.get("profiles") == "urn:mpeg:dash:profile:isoff-live:2011"
    assert root.get("mediaPresentationDuration") == f"PT{p.duration:.3f}S"
    sets = root.findall("d:Period/d:AdaptationSet", NS)
    kinds = [a.get("contentType") for a in sets]
    languages = {bcp47(r.track.language) for r in p.of_kind("audio")}
    assert kinds.count("video") == (1 if p.of_kind("video") else 0)
    assert kinds.count("audio") == len(languages)
    assert kinds.count("text") == 2
    reps = root.findall(".//d:Representation", NS)
    assert [r.get("id") for r in reps if r.get("id", "").startswith(("v", "a"))] == [
        r.id for r in p.renditions]
    for rendition in p.renditions:
        rep = next(r for r in reps if r.get("id") == rendition.id)
        tmpl = rep.find("d:SegmentTemplate", NS)
        assert tmpl is not None
        assert tmpl.get("media") == f"{rendition.id}/seg-$Number$.m4s?token=a&b=c$$d"
        assert tmpl.get("initialization") == f"{rendition.id}/init.mp4?token=a&b=c$$d"
        assert tmpl.get("timescale") == str(rendition.track.timescale)
        # fMP4 segments present at presentation time: period time 0 is media time 0.
        assert tmpl.get("presentationTimeOffset") == "0"
        s_elems = tmpl.findall("d:SegmentTimeline/d:S", NS)
        assert s_elems[0].get("t") is not None
        assert all(int(s.get("t", "0")) >= 0 for s in s_elems)  # xs:unsignedLong
        assert sum(1 + int(s.get("r", "0")) for s in s_elems) == len(rendition.segments)
        # The timeline ends where the last segment ends on the fMP4 (presentation) timeline.
        t = rendition.track
        last_cts = t.cts[rendition.segments[-1].first] if t.cts is not None else 0
        assert _timeline_end(s_elems) == t.dts[-1] + t.edit_shift + last_cts
        assert int(rep.get("bandwidth", "0")) > 0 and rep.get("codecs")
    text_reps = [r for r in reps if r.get("id") in ("s0", "s1")]
    assert [r.findtext("d:BaseURL", namespaces=NS) for r in text_reps] == [
        "s0/full.vtt?token=a&b=c$d", "s1/full.vtt?token=a&b=c$d"]
    roles = [a.find("d:Role", NS).get("value") for a in sets  # type: ignore[union-attr]
             if a.get("contentType") == "audio"]
    assert roles[:1] == (["main"] if roles else []) and set(roles[1:]) <= {"alternate"}


def _timeline_end(s_elems: list[ET.Element]) -> int:
    t = 0
    for s in s_elems:
        t = int(s.get("t", t))
        t += int(s.get("d", "0")) * (1 + int(s.get("r", "0")))
    return t


def test_mpd_video_attributes_and_runs() -> None:
    p = presentation(video(n=250, gop=50), video(n=250, gop=50, track_id=7, codec=H264_HI),
                     audio(n=470))
    root = parse_mpd(mpd(p, [], ""))
    vset = root.find("d:Period/d:AdaptationSet[@contentType='video']", NS)
    assert vset is not None
    assert (vset.get("maxWidth"), vset.get("maxHeight")) == ("1280", "720")
    assert vset.get("segmentAlignment") == "true" and vset.get("startWithSAP") == "1"
    rep = vset.find("d:Representation", NS)
    assert rep is not None
    assert (rep.get("frameRate"), rep.get("sar"), rep.get("width")) == ("25", "1:1", "640")
    s = rep.findall(".//d:S", NS)
    assert [(e.get("t"), e.get("d"), e.get("r")) for e in s] == [("0", "25600", "4")]
    arep = root.find(".//d:Representation[@id='a0']", NS)
    assert arep is not None and arep.get("audioSamplingRate") == "48000"
    cfg = arep.find("d:AudioChannelConfiguration", NS)
    assert cfg is not None and cfg.get("value") == "2"


def test_timeline_uses_presentation_time() -> None:
    p = CASES["cts_and_edit"]()
    v, a = p.renditions
    assert v.offset == 1024  # the edit list moves video back by 1024 ticks
    # The first frame (cts 1024, edit list -1024) presents at 0, which is the PTO.
    assert timeline_runs(v)[0][0] == 0
    # Audio primed by 2048 ticks: announced from 0 with the rest of its first segment.
    assert timeline_runs(a)[0] == (0, a.segments[0].duration - 2048, 0)


def test_mpd_clip() -> None:
    p = presentation(video(n=250, gop=25), audio(n=470), target=2.0, clip=(1.1, 6.0))
    ref = p.renditions[0]
    assert ref.segments[0].first == 25  # back to the keyframe at 1.0 s
    assert time_zero(p) == Fraction(1)
    assert subtitle_shift(p) == 1.0
    root = parse_mpd(mpd(p, [], ""))
    assert ptos(root) == {"v0": "12800", "a0": "48000"}
    assert root.get("mediaPresentationDuration") == f"PT{p.duration:.3f}S"


def test_mpd_clip_with_edit_lists() -> None:
    # Primed audio (edit list -2048) makes Presentation.offset non-zero; the clip's zero is
    # still the first frame's presentation time, in every timescale.
    p = presentation(video(n=250, gop=25), audio(n=470, edit_shift=-2048), target=2.0,
                     clip=(1.1, 6.0))
    assert p.offset > 0
    assert time_zero(p) == p.offset + 1
    assert subtitle_shift(p) == 1.0
    assert ptos(parse_mpd(mpd(p, [], ""))) == {"v0": "12800", "a0": "48000"}
    start = presentation(audio(n=470, edit_shift=-2048), target=2.0, clip=(0.0, 3.0))
    assert subtitle_shift(start) == 0.0
    assert ptos(parse_mpd(mpd(start, [], ""))) == {"a0": "0"}


def ptos(root: ET.Element) -> dict[str | None, str | None]:
    return {r.get("id"): r.find("d:SegmentTemplate", NS).get("presentationTimeOffset")  # type: ignore
            for r in root.iterfind(".//d:Representation", NS) if r.get("id", "")[0] in "va"}


# --- WebVTT ----------------------------------------------------------------------------------

TRICKY = (
    "\ufeffWEBVTT - Lecture 1\r\n"
    "Kind: captions\r\n"
    "\r\n"
    "NOTE a comment\r\n"
    "spanning lines\r\n"
    "\r\n"
    "STYLE\r\n"
    "::cue { color: yellow }\r\n"
    "\r\n"
    "REGION\r\n"
    "id:fred width:40%\r\n"
    "\r\n"
    "1\r\n"
    "00:00:01.000 --> 00:00:02.500 align:start position:10%\r\n"
    "Hello <b>world</b>\r\n"
    "\r\n"
    "intro-2\r\n"
    "00:02.500 --> 00:04.000\r\n"
    "Line one\r\n"
    "Line two\r\n"
    "00:04.000 --> 00:05.000\r\n"
    "No blank line before me\r\n"
    "\r\n"
    "\r\n"
    "01:00:00.000 --> 01:00:01.000\r\n"
    "An hour in\r\n"
    "\r\n"
    "00:00:09.000 --> 00:00:08.000\r\n"
    "backwards, dropped\r\n"
    "\r\n"
    "just a stray line\r\n"
    "\r\n"
    "00:61.000 --> 00:62.000\r\n"
    "bad minutes, dropped\r\n"
    "\r\n"
    "00:10.000 --> 00:11.000\r\n"
)


def test_parse_tricky_webvtt() -> None:
    cues = parse_webvtt(TRICKY)
    assert cues == [
        Cue(1000, 2500, "Hello <b>world</b>", "1", "align:start position:10%"),
        Cue(2500, 4000, "Line one\nLine two", "intro-2"),
        Cue(4000, 5000, "No blank line before me"),
        Cue(3_600_000, 3_601_000, "An hour in"),
        Cue(10_000, 11_000, ""),
    ]
    assert parse_webvtt("WEBVTT") == []
    assert parse_webvtt("WEBVTT\n\n00:01.000 --> 00:02.000\nmac\rline\n")[0].text == "mac\nline"


@pytest.mark.parametrize("text", [
    "", "1\n00:00:01,000 --> 00:00:02,000\nan SRT file\n", "WEBVTTX\n", "<html></html>",
    "\ufeff\ufeffWEBVTT\n", " WEBVTT\n",
])
def test_not_webvtt(text: str) -> None:
    with pytest.raises(MediaError, match="not a WebVTT file"):
        parse_webvtt(text)


def cue_texts(doc: str) -> list[str]:
    return [block.splitlines()[-1] for block in doc.split("\n\n")[1:] if block.strip()]


def test_vtt_segment_has_exactly_the_overlapping_cues() -> None:
    cues = [Cue(0, 1000, "a"), Cue(1000, 2000, "ends at t0"), Cue(1500, 2500, "spans t0"),
            Cue(2000, 3000, "inside"), Cue(3500, 4500, "spans t1"), Cue(4000, 5000, "at t1"),
            Cue(3000, 3000, "instant")]
    doc = vtt_segment(cues, 2.0, 4.0, 900000)
    assert doc.startswith("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:900000,LOCAL:00:00:00.000\n\n")
    assert cue_texts(doc) == ["spans t0", "inside", "spans t1", "instant"]
    assert "00:00:01.500 --> 00:00:02.500\nspans t0\n" in doc  # original timestamps
    assert "00:00:03.500 --> 00:00:04.500" in doc
    assert parse_webvtt(doc) == [c for c in cues if c.text in cue_texts(doc)]
    assert vtt_segment(cues, 10.0, 12.0, 0) == (
        "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n")


def test_vtt_segments_follow_the_reference_segments() -> None:
    p = presentation(video(), audio())
    cues = [Cue(i * 700, i * 700 + 900, f"c{i}") for i in range(8)]
    seen: set[str] = set()
    for s in p.renditions[0].segments:
        window = subtitle_window(p.renditions[0], s.number, p.offset)
        assert window is not None
        t0, t1 = window
        texts = cue_texts(vtt_segment(cues, t0, t1, round(p.offset * 90000)))
        assert texts == [c.text for c in cues if c.start < t1 and c.end > t0]
        seen.update(texts)
    assert seen == {c.text for c in cues}
    assert subtitle_window(p.renditions[0], 99, p.offset) is None


def test_vtt_document_shifts_and_trims() -> None:
    cues = [Cue(500, 1500, "cut", "x", "line:0"), Cue(2000, 3000, "kept"),
            Cue(4500, 6000, "tail"), Cue(7000, 8000, "after")]
    doc = vtt_document(cues, 1.0, 1.0, 5.0)
    assert doc == (
        "WEBVTT\n\n"
        "x\n00:00:00.000 --> 00:00:00.500 line:0\ncut\n\n"
        "00:00:01.000 --> 00:00:02.000\nkept\n\n"
        "00:00:03.500 --> 00:00:04.000\ntail\n"
    )
    assert vtt_document(cues, 0.0, 0.0, float("inf")).count("-->") == 4


def test_subtitle_playlist_matches_reference() -> None:
    p = presentation(video(), audio())
    text = subtitle_playlist(p.renditions[0], "k=v")
    assert extinfs(text) == [2.0, 2.0, 1.0]
    assert [u for u in uris(text)] == ["seg-1.vtt?k=v", "seg-2.vtt?k=v", "seg-3.vtt?k=v"]


# --- third-party parser ----------------------------------------------------------------------


@pytest.mark.parametrize("container", ["fmp4", "ts"])
def test_m3u8_library_parses_everything(container: str) -> None:
    m3u8 = pytest.importorskip("m3u8")
    p = presentation(video(), video(track_id=5, codec=H264_HI), audio(),
                     audio(track_id=3, language="ita"))
    master = m3u8.loads(master_playlist(p, subs(), container, "t=1"))  # type: ignore[arg-type]
    assert master.is_variant
    assert [pl.uri for pl in master.playlists] == [
        f"v0/{'media' if container == 'fmp4' else 'media-ts'}.m3u8?t=1",
        f"v1/{'media' if container == 'fmp4' else 'media-ts'}.m3u8?t=1"]
    assert master.playlists[0].stream_info.frame_rate == 25.0
    assert len(master.iframe_playlists) == 2
    assert [m.type for m in master.media] == ["AUDIO", "AUDIO", "SUBTITLES", "SUBTITLES"]
    media = m3u8.loads(media_playlist(p.renditions[0], container, "t=1"))  # type: ignore
    assert media.playlist_type == "vod" and media.is_endlist and media.media_sequence == 1
    assert len(media.segments) == len(p.renditions[0].segments)
    if container == "fmp4":
        assert media.segment_map[0].uri == "init.mp4?t=1"
    iframes = m3u8.loads(iframe_playlist(p.renditions[0], container, ""))  # type: ignore
    assert iframes.is_i_frames_only and len(iframes.segments) == 3


# --- segmenter properties --------------------------------------------------------------------


@st.composite
def video_tracks(draw: st.DrawFn, track_id: int) -> Track:
    n = draw(st.integers(1, 300))
    timescale = draw(st.sampled_from([1000, 12800, 30000, 90000]))
    base = draw(st.integers(1, timescale // 10))
    if draw(st.booleans()):
        durations = [base] * n
    else:
        durations = draw(st.lists(st.integers(1, 2 * base), min_size=n, max_size=n))
    sync = sorted({0} | set(draw(st.lists(st.integers(0, n - 1), max_size=60))))
    cts = [2 * base if i % 3 else 0 for i in range(n)] if draw(st.booleans()) else None
    return make_track("video", track_id, timescale, durations, [100 + i % 50 for i in range(n)],
                      sync, H264, cts=cts, edit_shift=draw(st.integers(-4 * base, 4 * base)))


@st.composite
def audio_tracks(draw: st.DrawFn, track_id: int) -> Track:
    n = draw(st.integers(1, 500))
    return audio(n=n, track_id=track_id, edit_shift=draw(st.integers(-4096, 4096)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    videos=st.lists(video_tracks(1), max_size=2),
    audios=st.lists(audio_tracks(10), max_size=2),
    target=st.floats(0.1, 8.0),
)
def test_segmentation_properties(videos: list[Track], audios: list[Track], target: float) -> None:
    tracks = videos + audios
    if not tracks:
        return
    p = build_presentation(list(enumerate(tracks)), target)
    for r in p.renditions:
        t, segs = r.track, r.segments
        assert segs and segs[0].first == 0 and segs[-1].end == t.sample_count
        assert [s.number for s in segs] == list(range(1, len(segs) + 1))
        for a, b in zip(segs, segs[1:], strict=False):
            assert a.first < a.end == b.first  # contiguous, non-empty: each sample exactly once
        for s in segs:
            assert s.start == r.out_time(s.first)
            assert s.duration == r.out_time(s.end) - s.start
            if r.kind == "video":
                assert t.is_sync(s.first)
        durations = extinfs(media_playlist(r, "fmp4", ""))
        assert math.isclose(sum(durations), t.duration / t.timescale,
                            abs_tol=5e-6 * len(durations) + 1e-9)
        assert all(round(d) <= target_duration(media_playlist(r, "ts", "")) for d in durations)
        if r.kind == "video":
            assert iframe_samples(r) == list(t.sync_indices())
    root = parse_mpd(mpd(p, [], ""))
    counts = [sum(1 + int(s.get("r", "0")) for s in tmpl.iterfind(".//d:S", NS))
              for tmpl in root.iterfind(".//d:SegmentTemplate", NS)]
    assert sorted(counts) == sorted(len(r.segments) for r in p.renditions)


def test_segmenter_reference_cuts_are_exact_with_uneven_durations() -> None:
    """A short frame just before a keyframe must not pull the cut one sample early."""
    v = make_track("video", 1, 1000, [100, 100, 100, 100, 10, 100, 100, 100, 100],
                   [10] * 9, [0, 4, 5, 8], H264)
    p = build_presentation([(0, v)], 0.405)
    assert [(s.first, s.end) for s in p.renditions[0].segments] == [(0, 5), (5, 9)]


def test_segmenter_leading_non_keyframes_ride_in_segment_one() -> None:
    v = make_track("video", 1, 100, [10] * 10, [10] * 10, [3, 6], H264)
    p = build_presentation([(0, v)], 0.2)
    assert [(s.first, s.end) for s in p.renditions[0].segments] == [(0, 6), (6, 10)]


def test_same_file_audio_tracks_are_all_kept() -> None:
    p = build_presentation([(0, video()), (0, audio()), (0, audio(track_id=3))], 2.0)
    assert [r.id for r in p.renditions] == ["v0", "a0", "a1"]
    ladder = build_presentation([(0, video()), (0, audio()), (1, video(track_id=1)),
                                 (1, audio())], 2.0)
    assert [r.id for r in ladder.renditions] == ["v0", "v1", "a0"]
