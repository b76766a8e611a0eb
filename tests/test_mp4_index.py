"""The MP4 index against ffprobe's view of the same files, and against hostile input."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import media
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediaorigin.packaging.model import MediaError, MediaIndex
from mediaorigin.packaging.mp4 import serial
from mediaorigin.packaging.mp4.index import index_file, parse_moov
from mediaorigin.packaging.mp4.locate import MoovScanner, read_moov


def index_path(path: Path) -> MediaIndex:
    with open(path, "rb") as f:
        return index_file(lambda off, n: os.pread(f.fileno(), n, off), os.path.getsize(path))


def ffprobe_packets(path: Path) -> dict[int, list[dict]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries",
         "packet=stream_index,pos,size,dts,pts,flags", "-of", "json", str(path)],
        capture_output=True, text=True, check=True).stdout
    by_stream: dict[int, list[dict]] = {}
    for p in json.loads(out)["packets"]:
        by_stream.setdefault(p["stream_index"], []).append(p)
    return by_stream


def assert_matches_ffprobe(path: Path) -> MediaIndex:
    index = index_path(path)
    packets = ffprobe_packets(path)
    assert len(index.tracks) == len(packets)
    for stream, track in enumerate(index.tracks):
        pk = packets[stream]
        assert track.sample_count == len(pk)
        assert list(track.offsets) == [int(p["pos"]) for p in pk]
        assert list(track.sizes) == [int(p["size"]) for p in pk]
        # ffprobe shows times after the edit list: decode deltas must agree exactly.
        deltas = [b - a for a, b in zip(track.dts, track.dts[1:], strict=False)]
        expect = [int(b["dts"]) - int(a["dts"]) for a, b in zip(pk, pk[1:], strict=False)]
        assert deltas[:-1] == expect
        keys = [i for i, p in enumerate(pk) if "K" in p["flags"]]
        assert list(track.sync_indices()) == keys
        if track.cts is not None:
            pts_minus_dts = [int(p["pts"]) - int(p["dts"]) for p in pk]
            assert list(track.cts) == [d - pts_minus_dts[0] + track.cts[0] for d in pts_minus_dts]
    return index


def test_moov_at_end_with_bframes_and_edit_list(av_moov_at_end: Path) -> None:
    assert media.top_level_types(av_moov_at_end).index("moov") > \
        media.top_level_types(av_moov_at_end).index("mdat")
    index = assert_matches_ffprobe(av_moov_at_end)
    video, audio = index.by_kind("video")[0], index.by_kind("audio")[0]
    assert video.codec.codec.startswith("avc1.")
    assert (video.codec.width, video.codec.height) == (320, 240)
    assert video.cts is not None  # B-frames
    assert video.edit_shift < 0  # ffmpeg's elst starts presentation after the B-frame delay
    assert audio.codec.codec == "mp4a.40.2"
    assert (audio.codec.channels, audio.codec.sample_rate) == (2, 48000)
    assert audio.edit_shift == -1024  # AAC priming


def test_faststart_multi_audio_audio_only_video_only(
        av_faststart: Path, multi_audio: Path, audio_only: Path, video_only: Path) -> None:
    assert_matches_ffprobe(av_faststart)
    langs = [t.language for t in assert_matches_ffprobe(multi_audio).by_kind("audio")]
    assert langs == ["eng", "deu"]
    assert [t.kind for t in assert_matches_ffprobe(audio_only).tracks] == ["audio"]
    assert [t.kind for t in assert_matches_ffprobe(video_only).tracks] == ["video"]


def test_hevc_codec_string(hevc: Path) -> None:
    video = assert_matches_ffprobe(hevc).by_kind("video")[0]
    assert video.codec.fourcc == "hvc1"
    assert video.codec.codec.startswith("hvc1.1.6.L")  # Main profile, compat flags, level


def test_samples_beyond_4_gib_with_co64(av_faststart: Path, tmp_path: Path) -> None:
    if not media.sparse_supported(tmp_path):
        pytest.skip("this filesystem cannot make sparse files")
    big = media.co64_sparse(av_faststart, tmp_path / "big.mp4")
    assert os.path.getsize(big) > 4 * 1024**3
    index = assert_matches_ffprobe(big)
    assert min(index.tracks[0].offsets) > 2**32


def test_scanner_reads_headers_only(av_moov_at_end: Path) -> None:
    """moov at the end costs a header read per top-level box, never a read of mdat."""
    reads: list[tuple[int, int]] = []
    size = os.path.getsize(av_moov_at_end)
    with open(av_moov_at_end, "rb") as f:
        def read_at(off: int, n: int) -> bytes:
            reads.append((off, n))
            return os.pread(f.fileno(), n, off)
        moov = read_moov(read_at, size)
    assert moov[4:8] == b"moov"
    assert sum(n for _, n in reads) == len(moov) + 16 * (len(reads) - 1)


def test_truncated_file_is_a_clear_error(av_moov_at_end: Path, av_faststart: Path,
                                         tmp_path: Path) -> None:
    for src in (av_moov_at_end, av_faststart):
        size = os.path.getsize(src)
        for cut in (0, 7, 100, size // 2, size - 10):
            path = media.truncated(src, cut, tmp_path)
            with pytest.raises(MediaError):
                index_path(path)


def test_not_mp4(tmp_path: Path) -> None:
    path = media.garbage(tmp_path)
    with pytest.raises(MediaError, match="MP4|box|moov"):
        index_path(path)
    text = tmp_path / "x.mp4"
    text.write_text("<html>not a video</html>" * 10)
    with pytest.raises(MediaError):
        index_path(text)


@pytest.fixture(scope="module")
def real_moov(av_faststart: Path) -> bytes:
    with open(av_faststart, "rb") as f:
        return read_moov(lambda off, n: os.pread(f.fileno(), n, off), os.path.getsize(av_faststart))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_moov_never_crashes(real_moov: bytes, data: st.DataObject) -> None:
    """Flipped, truncated or overwritten moov bytes give a MediaError or a valid index."""
    moov = bytearray(real_moov)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(moov) - 1))
        moov[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(8, len(moov)))
    try:
        index = parse_moov(bytes(moov[:cut]), file_size=10**9)
    except MediaError:
        return
    for t in index.tracks:
        assert len(t.dts) == t.sample_count + 1
        assert len(t.offsets) == t.sample_count


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(min_size=0, max_size=256))
def test_random_bytes_never_crash(blob: bytes) -> None:
    scanner = MoovScanner(len(blob))
    try:
        while (req := scanner.next_read()) is not None:
            scanner.feed(blob[req.offset:req.offset + req.size])
        parse_moov(scanner.moov or b"", len(blob))
    except MediaError:
        pass


def test_serialized_index_round_trips(multi_audio: Path) -> None:
    index = index_path(multi_audio)
    again = serial.loads(serial.dumps(index, "fp1"), "fp1")
    assert again == index
    with pytest.raises(MediaError, match="stale"):
        serial.loads(serial.dumps(index, "fp1"), "fp2")
    with pytest.raises(MediaError):
        serial.loads(b"MOIX" + b"\0" * 20, "fp1")
