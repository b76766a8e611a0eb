"""Lossless: what the ffmpeg CLI decodes from the running origin is frame-identical to the
source, for every shape of input and every output (HLS fMP4, HLS TS, DASH)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ffmpeg_tools import duration_of, framemd5
from origin_server import OriginThread

# The source's AAC priming frame is dropped by ffmpeg's edit-list handling but decoded from
# our output, where the edit list became timestamps; compare packets of the same set.
SOURCE_ARGS = ("-ignore_editlist", "1")

ENTRY = {"hls": "master.m3u8", "hls-ts": "master-ts.m3u8", "dash": "manifest.mpd"}


def source_frames(path: Path, selector: str) -> list[str]:
    return framemd5(path, selector, SOURCE_ARGS)


def assert_same(origin: OriginThread, media_id: str, src: Path, src_sel: str, out: str,
                out_sel: str) -> None:
    expected = source_frames(src, src_sel)
    got = framemd5(origin.url(f"/vod/{media_id}/{out}"), out_sel)
    assert len(got) == len(expected)
    assert got == expected


@pytest.mark.parametrize("fmt", ["hls", "hls-ts", "dash"])
def test_video_and_audio_with_bframes_moov_at_end(origin: OriginThread, av_moov_at_end: Path,
                                                  fmt: str) -> None:
    media_id = origin.add([av_moov_at_end])
    assert_same(origin, media_id, av_moov_at_end, "v:0", ENTRY[fmt], "v:0")
    assert_same(origin, media_id, av_moov_at_end, "a:0", ENTRY[fmt], "a:0")
    served = duration_of(origin.url(f"/vod/{media_id}/v0/media.m3u8"))
    assert served == pytest.approx(duration_of(av_moov_at_end, "v:0"), abs=0.05)


@pytest.mark.parametrize("container", ["media.m3u8", "media-ts.m3u8"])
def test_faststart(origin: OriginThread, av_faststart: Path, container: str) -> None:
    media_id = origin.add([av_faststart])
    assert_same(origin, media_id, av_faststart, "v:0", f"v0/{container}", "v:0")


@pytest.mark.parametrize("fmt", ["hls", "dash"])
def test_two_audio_languages(origin: OriginThread, multi_audio: Path, fmt: str) -> None:
    media_id = origin.add([multi_audio])
    for n in (0, 1):
        if fmt == "hls":
            assert_same(origin, media_id, multi_audio, f"a:{n}", f"a{n}/media.m3u8", "a:0")
        else:
            assert_same(origin, media_id, multi_audio, f"a:{n}", "manifest.mpd", f"a:{n}")


def test_second_language_in_ts(origin: OriginThread, multi_audio: Path) -> None:
    """TS variants carry the first audio muxed; the second is an audio-only TS rendition."""
    media_id = origin.add([multi_audio])
    assert_same(origin, media_id, multi_audio, "a:0", "v0/media-ts.m3u8", "a:0")
    assert_same(origin, media_id, multi_audio, "a:1", "a1/media-ts.m3u8", "a:0")


@pytest.mark.parametrize("fmt", ["hls", "hls-ts", "dash"])
def test_audio_only(origin: OriginThread, audio_only: Path, fmt: str) -> None:
    media_id = origin.add([audio_only])
    assert_same(origin, media_id, audio_only, "a:0", ENTRY[fmt], "a:0")


@pytest.mark.parametrize("fmt", ["hls", "hls-ts", "dash"])
def test_video_only(origin: OriginThread, video_only: Path, fmt: str) -> None:
    media_id = origin.add([video_only])
    assert_same(origin, media_id, video_only, "v:0", ENTRY[fmt], "v:0")


def test_ladder_renditions(origin: OriginThread, ladder: list[Path]) -> None:
    media_id = origin.add(ladder)
    for n, src in enumerate(ladder):
        assert_same(origin, media_id, src, "v:0", f"v{n}/media.m3u8", "v:0")
        assert_same(origin, media_id, src, "v:0", f"v{n}/media-ts.m3u8", "v:0")
    assert_same(origin, media_id, ladder[0], "a:0", "a0/media.m3u8", "a:0")
    master = origin.get(f"/vod/{media_id}/master.m3u8").body.decode()
    assert master.count("#EXT-X-STREAM-INF") == 3
    assert master.count("TYPE=AUDIO") == 1  # the ladder's copies of one audio, listed once


@pytest.mark.parametrize("container", ["media.m3u8", "media-ts.m3u8"])
def test_hevc(origin: OriginThread, hevc: Path, container: str) -> None:
    media_id = origin.add([hevc])
    assert_same(origin, media_id, hevc, "v:0", f"v0/{container}", "v:0")


def test_iframe_playlist_decodes_keyframes(origin: OriginThread, av_faststart: Path) -> None:
    """Every entry of the I-frame playlist is one decodable keyframe of the source."""
    media_id = origin.add([av_faststart])
    source = source_frames(av_faststart, "v:0")
    for playlist in ("v0/iframes.m3u8", "v0/iframes-ts.m3u8"):
        got = framemd5(origin.url(f"/vod/{media_id}/{playlist}"), "v:0")
        assert len(got) == 3  # 6 s with a keyframe every 2 s
        assert all(h in source for h in got)
        assert got[0] == source[0]


def test_samples_beyond_4_gib(origin: OriginThread, av_faststart: Path, tmp_path: Path) -> None:
    import media

    if not media.sparse_supported(tmp_path):
        pytest.skip("this filesystem cannot make sparse files")
    big = media.co64_sparse(av_faststart, tmp_path / "big.mp4")
    media_id = origin.add([big])
    assert_same(origin, media_id, av_faststart, "v:0", "v0/media.m3u8", "v:0")
    assert_same(origin, media_id, av_faststart, "a:0", "v0/media-ts.m3u8", "a:0")
