"""The generated media are what the other tests assume they are.

Checked with ffprobe and our own box walker, never with the origin's code."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ffmpeg_tools as ff
import media
import pytest
from aiohttp.test_utils import TestServer
from players.harness import static_media_app

FRAMES = media.DURATION * media.FPS


def video_stream(path: Path) -> dict:
    (stream,) = ff.streams(path, "video")
    return stream


def audio_streams(path: Path) -> list[dict]:
    return ff.streams(path, "audio")


def assert_aac_stereo_48k(stream: dict) -> None:
    assert stream["codec_name"] == "aac"
    assert stream["channels"] == 2
    assert int(stream["sample_rate"]) == media.SAMPLE_RATE


def assert_keyframes_every_2s(path: Path) -> None:
    assert ff.keyframe_times(path) == pytest.approx([0.0, 2.0, 4.0], abs=0.05)


def test_moov_at_end_layout(av_moov_at_end: Path) -> None:
    types = media.top_level_types(av_moov_at_end)
    assert types.index("moov") > types.index("mdat"), types


def test_moov_at_end_has_bframes_and_edit_lists(av_moov_at_end: Path) -> None:
    video = video_stream(av_moov_at_end)
    assert video["codec_name"] == "h264" and video["codec_tag_string"] == "avc1"
    assert (video["width"], video["height"]) == (320, 240)
    assert video["r_frame_rate"] == "25/1"
    assert int(video["has_b_frames"]) > 0
    # B-frames really are there: some packet is presented before one decoded earlier.
    pts = [int(p["pts"]) for p in ff.packets(av_moov_at_end)]
    assert pts != sorted(pts)
    types = media.box_types(av_moov_at_end)
    assert {"elst", "ctts"} <= types
    (audio,) = audio_streams(av_moov_at_end)
    assert_aac_stereo_48k(audio)
    assert_keyframes_every_2s(av_moov_at_end)
    assert ff.duration_of(av_moov_at_end) == pytest.approx(media.DURATION, abs=0.1)


def test_elst_in_every_track(av_moov_at_end: Path) -> None:
    paths = [name for name, _ in media.walk_boxes(av_moov_at_end)]
    assert paths.count("moov/trak") == 2
    assert paths.count("moov/trak/edts/elst") == 2


def test_faststart_layout(av_faststart: Path) -> None:
    types = media.top_level_types(av_faststart)
    assert types.index("moov") < types.index("mdat"), types
    assert int(video_stream(av_faststart)["has_b_frames"]) > 0


def test_same_content_whatever_the_layout(av_moov_at_end: Path, av_faststart: Path) -> None:
    assert ff.framemd5(av_moov_at_end) == ff.framemd5(av_faststart)
    assert ff.framemd5(av_moov_at_end, "a:0") == ff.framemd5(av_faststart, "a:0")


def test_multi_audio_languages(multi_audio: Path) -> None:
    audio = audio_streams(multi_audio)
    assert [a["tags"]["language"] for a in audio] == ["eng", "deu"]
    for a in audio:
        assert_aac_stereo_48k(a)
    assert [a["disposition"]["default"] for a in audio] == [1, 0]
    # Different tones, and the language selector documented in ffmpeg_tools picks the right one.
    eng, deu = ff.framemd5(multi_audio, "a:0"), ff.framemd5(multi_audio, "a:1")
    assert eng != deu
    assert ff.framemd5(multi_audio, "a:m:language:deu") == deu


def test_audio_only(audio_only: Path) -> None:
    info = ff.probe(audio_only)
    assert [s["codec_type"] for s in info["streams"]] == ["audio"]
    assert_aac_stereo_48k(info["streams"][0])
    assert audio_only.suffix == ".m4a"
    assert ff.duration_of(audio_only, "a:0") == pytest.approx(media.DURATION, abs=0.1)


def test_video_only(video_only: Path) -> None:
    info = ff.probe(video_only)
    assert [s["codec_type"] for s in info["streams"]] == ["video"]
    assert int(info["streams"][0]["has_b_frames"]) > 0
    assert len(ff.framemd5(video_only)) == FRAMES
    assert_keyframes_every_2s(video_only)


def test_ladder_aligned(ladder: list[Path]) -> None:
    sizes = [(video_stream(p)["width"], video_stream(p)["height"]) for p in ladder]
    assert sizes == [(320, 180), (256, 144), (160, 90)]
    bitrates = [int(video_stream(p)["bit_rate"]) for p in ladder]
    assert bitrates == sorted(bitrates, reverse=True)
    keyframes = [ff.keyframe_times(p) for p in ladder]
    assert keyframes[0] == pytest.approx([0.0, 2.0, 4.0], abs=0.05)
    assert keyframes[1:] == [keyframes[0]] * 2
    audio = [ff.framemd5(p, "a:0") for p in ladder]
    assert audio[1:] == [audio[0]] * 2
    for p in ladder:
        assert int(video_stream(p)["has_b_frames"]) > 0


def test_hevc_hvc1(hevc: Path) -> None:
    video = video_stream(hevc)
    assert video["codec_name"] == "hevc"
    assert video["codec_tag_string"] == "hvc1"
    assert int(video["has_b_frames"]) > 0
    assert_keyframes_every_2s(hevc)
    assert_aac_stereo_48k(audio_streams(hevc)[0])
    assert _stsd_has(hevc, b"hvcC")


def _stsd_has(path: Path, marker: bytes) -> bool:
    """stsd children are not walked (sample entries have fixed fields before their boxes);
    a byte search inside the stsd payload is enough for a presence check."""
    data = path.read_bytes()
    return any(
        marker in data[box.payload_offset : box.end]
        for name, box in media.walk_boxes(path)
        if name.endswith("stbl/stsd")
    )


def test_captions_vtt(captions_vtt: Callable[[str], Path]) -> None:
    eng, deu = captions_vtt("eng"), captions_vtt("deu")
    assert eng != deu
    text = deu.read_text(encoding="utf-8")
    assert text.startswith("WEBVTT\n")
    assert text.count(" --> ") == 3 and "Deutsch" in text
    # ffmpeg agrees it is WebVTT with three cues.
    assert len(ff.packets(eng, "s:0")) == 3


def test_co64_sparse(co64_sparse: Path, av_moov_at_end: Path) -> None:
    st = os.stat(co64_sparse)
    assert st.st_size > media.FOUR_GIB
    assert st.st_blocks * 512 < 64 << 20, "the hole should take no disk"
    top = list(media.iter_boxes(co64_sparse))
    assert [b.type for b in top] == ["ftyp", "mdat", "moov"]
    assert top[1].header == 16 and top[1].size > media.FOUR_GIB
    assert top[2].offset > media.FOUR_GIB
    names = [name for name, _ in media.walk_boxes(co64_sparse)]
    assert names.count("moov/trak/mdia/minf/stbl/co64") == 2
    assert not any(n.endswith("/stco") for n in names)
    for selector in ("v:0", "a:0"):
        assert ff.framemd5(co64_sparse, selector) == ff.framemd5(av_moov_at_end, selector)


def test_co64_sparse_moov_first(media_dir: Path, av_faststart: Path) -> None:
    try:
        dst = media.co64_sparse(av_faststart, media_dir / "co64_moov_first.mp4", moov_first=True)
    except media.SparseUnsupported as e:
        pytest.skip(str(e))
    assert media.top_level_types(dst) == ["ftyp", "moov", "mdat"]
    assert ff.framemd5(dst) == ff.framemd5(av_faststart)


def test_bad_input_helpers(av_faststart: Path, tmp_path: Path) -> None:
    cut = media.truncated(av_faststart, 1000, tmp_path)
    assert cut.stat().st_size == 1000
    assert cut.read_bytes() == av_faststart.read_bytes()[:1000]
    junk = media.garbage(tmp_path)
    assert junk.stat().st_size == 4096 and junk.read_bytes() == media.garbage(tmp_path).read_bytes()
    with pytest.raises(ff.FFmpegError):
        ff.probe(junk)
    broken = media.with_bytes(av_faststart, 0, b"\xff\xff\xff\xff", tmp_path)
    assert broken.read_bytes()[4:] == av_faststart.read_bytes()[4:]


def test_framemd5_reads_hls_and_dash_references(media_dir: Path, av_faststart: Path) -> None:
    """framemd5 over ffmpeg's own HLS and DASH (local files) matches the source video."""
    video = ff.framemd5(av_faststart)
    assert len(video) == FRAMES
    assert ff.framemd5(media.static_hls(media_dir, av_faststart)) == video
    assert ff.framemd5(media.static_dash(media_dir, av_faststart)) == video


async def test_framemd5_over_http(aiohttp_server: Any, media_dir: Path, av_faststart: Path) -> None:
    """framemd5/probe read HLS and DASH over http://127.0.0.1 (as they will from the origin),
    pick streams with the documented selectors, and see the priming frame difference."""
    hls = media.static_hls(media_dir, av_faststart)
    dash = media.static_dash(media_dir, av_faststart)
    server: TestServer = await aiohttp_server(static_media_app(media_dir), host="127.0.0.1")
    hls_url = str(server.make_url(f"/{hls.parent.name}/{hls.name}"))
    dash_url = str(server.make_url(f"/{dash.parent.name}/{dash.name}"))
    video = ff.framemd5(av_faststart)
    assert await ff.aframemd5(hls_url) == video
    assert await ff.aframemd5(hls_url, "p:0:v") == video
    assert await ff.aframemd5(dash_url) == video
    audio = ff.framemd5(av_faststart, "a:0")
    for url in (hls_url, dash_url):
        got = await ff.aframemd5(url, "a:0")
        assert got[1:] == audio, "fMP4 output keeps the priming frame the MP4 edit list drops"
    info = await ff.aprobe(dash_url)
    assert sorted(s["codec_type"] for s in info["streams"]) == ["audio", "video"]
