"""MPEG-TS segment writer: decoded output must equal the source, packets must be well formed.

Test media is encoded on the fly with the ffmpeg CLI and demuxed with PyAV into `SampleRun`s
(the MP4 demuxer hands out length-prefixed samples, like the origin's own reader).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from array import array
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaorigin.packaging.model import CodecInfo, MediaError, SampleRun, Track
from mediaorigin.packaging.ts.adts import AdtsFramer
from mediaorigin.packaging.ts.annexb import START_CODE, access_unit, avc_format, hevc_format
from mediaorigin.packaging.ts.psi import crc32_mpeg2
from mediaorigin.packaging.ts.writer import (
    AUDIO_PID,
    PCR_INTERVAL,
    VIDEO_PID,
    write_ts_iframe,
    write_ts_segment,
)

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
FFPROBE = shutil.which("ffprobe") or "/usr/bin/ffprobe"
PMT_PID = 0x1000

pytestmark = pytest.mark.skipif(not Path(FFMPEG).exists(), reason="ffmpeg CLI not installed")


# --- media fixtures -------------------------------------------------------------------------


def _ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True)


LAVFI_VIDEO = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"]
LAVFI_AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ts_media")
    _ffmpeg(*LAVFI_VIDEO, *LAVFI_AUDIO, "-ac", "2", "-t", "4", "-c:v", "libx264", "-g", "25",
            "-bf", "2", "-c:a", "aac", str(d / "h264.mp4"))  # fmt: skip
    _ffmpeg(*LAVFI_VIDEO, "-t", "2", "-c:v", "libx265", "-x265-params",
            "log-level=error:keyint=25", "-tag:v", "hvc1", str(d / "hevc.mp4"))  # fmt: skip
    _ffmpeg(*LAVFI_AUDIO, "-t", "2", "-ac", "2", "-c:a", "ac3", str(d / "ac3.mp4"))
    _ffmpeg(*LAVFI_AUDIO, "-t", "2", "-ac", "2", "-c:a", "eac3", str(d / "eac3.mp4"))
    _ffmpeg(*LAVFI_AUDIO, "-t", "2", "-ac", "2", "-c:a", "libmp3lame", str(d / "mp3.mp4"))
    return d


_FOURCC = {"h264": "avc1", "hevc": "hvc1", "aac": "mp4a", "ac3": "ac-3", "eac3": "ec-3",
           "mp3float": "mp4a"}  # fmt: skip
_RFC6381 = {"h264": "avc1.64000d", "hevc": "hvc1.1.6.L63.90", "aac": "mp4a.40.2",
            "ac3": "ac-3", "eac3": "ec-3", "mp3float": "mp4a.6B"}  # fmt: skip


def demux(path: Path, kind: str, *, base_time: int = 0) -> SampleRun:
    """All samples of the first `kind` stream, as stored in the MP4 (edit list ignored)."""
    with av.open(str(path), options={"ignore_editlist": "1"}) as c:
        stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
        packets = [p for p in c.demux(stream) if p.size]
        ctx = stream.codec_context
        name = ctx.name
        assert stream.time_base is not None and stream.time_base.numerator == 1
        timescale = stream.time_base.denominator
        config = bytes(ctx.extradata or b"")
        rate = int(getattr(ctx, "sample_rate", 0) or 0)
    dts = [int(p.dts or 0) for p in packets]
    durations = [b - a for a, b in zip(dts, dts[1:], strict=False)]
    durations.append(int(packets[-1].duration or 0))
    cts = [int(p.pts or 0) - d for p, d in zip(packets, dts, strict=True)]
    sizes = [p.size for p in packets]
    codec = CodecInfo(_FOURCC[name], _RFC6381[name], b"", config, sample_rate=rate)
    track = Track(
        track_id=1, kind=kind, timescale=timescale, language="und", codec=codec,  # type: ignore[arg-type]
        sizes=array("I", sizes), offsets=array("Q", [0] * len(sizes)),
        dts=array("q", [*dts, dts[-1] + durations[-1]]), cts=None, sync=None,
    )  # fmt: skip
    return SampleRun(
        track=track,
        base_time=base_time,
        durations=durations,
        sizes=sizes,
        cts_offsets=cts if any(cts) else None,
        sync=[bool(p.is_keyframe) for p in packets],
        data=b"".join(bytes(p) for p in packets),
    )


def sub_run(run: SampleRun, first: int, end: int) -> SampleRun:
    """Samples [first, end) of a run, with the decode time they have in the full run."""
    start = sum(run.sizes[:first])
    return SampleRun(
        track=run.track,
        base_time=run.base_time + sum(run.durations[:first]),
        durations=run.durations[first:end],
        sizes=run.sizes[first:end],
        cts_offsets=run.cts_offsets[first:end] if run.cts_offsets else None,
        sync=run.sync[first:end],
        data=run.data[start : start + sum(run.sizes[first:end])],
    )


def framemd5(path: Path, stream: str, *pre: str) -> list[str]:
    """Hashes of the decoded frames of one stream (timestamps ignored: time bases differ)."""
    out = subprocess.run(
        [FFMPEG, "-v", "error", *pre, "-i", str(path), "-map", f"0:{stream}",
         "-fps_mode", "passthrough", "-f", "framemd5", "-"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line[:1] != "#"]


def ffprobe(path: Path) -> tuple[list[str], str]:
    r = subprocess.run(
        [FFPROBE, "-v", "error", "-show_entries", "stream=codec_name", "-of", "json", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    return [s["codec_name"] for s in json.loads(r.stdout)["streams"]], r.stderr


def decode_errors(path: Path) -> str:
    r = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "null", "-"],
                       capture_output=True, text=True)  # fmt: skip
    return r.stderr


# --- a small TS parser for the packet-level checks ------------------------------------------


@dataclass
class Packet:
    pid: int
    start: bool
    cc: int
    has_payload: bool
    adaptation: bytes
    payload: bytes

    @property
    def pcr(self) -> int | None:
        af = self.adaptation
        if len(af) >= 7 and af[0] & 0x10:
            return int.from_bytes(af[1:7], "big") >> 15
        return None

    @property
    def random_access(self) -> bool:
        return bool(self.adaptation and self.adaptation[0] & 0x40)


def parse_ts(data: bytes) -> list[Packet]:
    assert len(data) % 188 == 0
    packets = []
    for off in range(0, len(data), 188):
        p = data[off : off + 188]
        assert p[0] == 0x47
        pid = ((p[1] & 0x1F) << 8) | p[2]
        control = (p[3] >> 4) & 0x03
        assert control != 0
        pos, af = 4, b""
        if control & 0x02:
            af_len = p[4]
            af = p[5 : 5 + af_len]
            pos = 5 + af_len
            assert pos <= 188
            if control == 0x02:
                assert af_len == 183
        packets.append(Packet(pid, bool(p[1] & 0x40), p[3] & 0x0F, bool(control & 1), af, p[pos:]))
    return packets


@dataclass
class Pes:
    stream_id: int
    length: int
    pts: int | None
    dts: int | None
    payload: bytes
    random_access: bool
    pcr: int | None
    extra: dict = field(default_factory=dict)


def _timestamp(b: bytes) -> int:
    return ((b[0] >> 1) & 0x07) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def pes_by_pid(packets: list[Packet]) -> dict[int, list[Pes]]:
    chunks: dict[int, list[tuple[Packet, list[bytes]]]] = {}
    for p in packets:
        if p.pid in (0, PMT_PID) or not p.has_payload:
            continue
        if p.start:
            chunks.setdefault(p.pid, []).append((p, [p.payload]))
        else:
            chunks[p.pid][-1][1].append(p.payload)
    result: dict[int, list[Pes]] = {}
    for pid, items in chunks.items():
        for first, parts in items:
            raw = b"".join(parts)
            assert raw[:3] == b"\x00\x00\x01"
            length = int.from_bytes(raw[4:6], "big")
            if length:
                assert len(raw) == 6 + length, "PES padded with payload bytes"
            assert raw[6] == 0x84
            flags, hlen = raw[7], raw[8]
            pts = _timestamp(raw[9:14]) if flags & 0x80 else None
            dts = _timestamp(raw[14:19]) if flags & 0x40 else None
            pes = Pes(raw[3], length, pts, dts, raw[9 + hlen :], first.random_access, first.pcr)
            result.setdefault(pid, []).append(pes)
    return result


def _crc_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        for bit in range(7, -1, -1):
            top = ((crc >> 31) & 1) ^ ((byte >> bit) & 1)
            crc = ((crc << 1) & 0xFFFFFFFF) ^ (0x04C11DB7 if top else 0)
    return crc


def section(packet: Packet) -> bytes:
    assert packet.start and packet.payload[0] == 0  # pointer field
    body = packet.payload[1:]
    length = ((body[1] & 0x0F) << 8) | body[2]
    sec = body[: 3 + length]
    assert _crc_bitwise(sec[:-4]) == int.from_bytes(sec[-4:], "big"), "bad PSI CRC"
    assert set(body[3 + length :]) <= {0xFF}
    return sec


def pmt_streams(sec: bytes) -> dict[int, int]:
    """pid -> stream_type from a PMT section."""
    pos = 12 + (((sec[10] & 0x0F) << 8) | sec[11])
    streams = {}
    while pos < len(sec) - 4:
        pid = ((sec[pos + 1] & 0x1F) << 8) | sec[pos + 2]
        streams[pid] = sec[pos]
        pos += 5 + (((sec[pos + 3] & 0x0F) << 8) | sec[pos + 4])
    return streams


def check_structure(data: bytes, expect_streams: dict[int, int], *, sequence: int = 0) -> None:
    """Packet sizes, PAT/PMT first with valid CRCs, continuity counters, PCR spacing."""
    packets = parse_ts(data)
    assert packets[0].pid == 0 and packets[1].pid == PMT_PID
    pat = section(packets[0])
    assert pat[0] == 0 and pat[8:12] == bytes((0, 1, 0xF0, 0x00))  # program 1 -> PMT 0x1000
    pmt = section(packets[1])
    assert pmt[0] == 2 and pmt_streams(pmt) == expect_streams
    pcr_pid = ((pmt[8] & 0x1F) << 8) | pmt[9]
    assert pcr_pid == (VIDEO_PID if VIDEO_PID in expect_streams else AUDIO_PID)
    assert packets[0].cc == packets[1].cc == sequence % 16
    last: dict[int, int] = {}
    for p in packets:
        if p.pid in last:
            expected = (last[p.pid] + 1) % 16 if p.has_payload else last[p.pid]
            assert p.cc == expected, f"continuity counter on pid {p.pid:#x}"
        elif p.pid in expect_streams and p.has_payload:
            assert p.cc == 0
        last[p.pid] = p.cc
    pcrs = [(i, p.pcr) for i, p in enumerate(packets) if p.pcr is not None]
    assert all(packets[i].pid == pcr_pid for i, _ in pcrs)
    first_es = next(i for i, p in enumerate(packets) if p.pid in expect_streams)
    assert pcrs and pcrs[0][0] == first_es, "a PCR must come with the first ES packet"
    values = [v for _, v in pcrs]
    assert values == sorted(values)
    assert max((b - a for a, b in zip(values, values[1:], strict=False)), default=0) <= PCR_INTERVAL


def to_90k(ticks: int, timescale: int) -> int:
    return int(Fraction(ticks * 90000, timescale) + Fraction(1, 2))


# --- tests: decode equality ------------------------------------------------------------------


def test_h264_aac_segment_decodes_identically(media: Path, tmp_path: Path) -> None:
    src = media / "h264.mp4"
    video, audio = demux(src, "video"), demux(src, "audio")
    seg = tmp_path / "seg.ts"
    seg.write_bytes(write_ts_segment(video, audio))

    assert ffprobe(seg) == (["h264", "aac"], "")
    assert decode_errors(seg) == ""
    src_video = framemd5(src, "v")
    assert len(src_video) == 100
    assert framemd5(seg, "v") == src_video
    # The MP4's edit list hides the 1024 AAC priming samples; TS has no edit list, so the
    # segment plays every frame. Compare against the MP4 decoded with its edit list ignored.
    src_audio = framemd5(src, "a", "-ignore_editlist", "1")
    assert len(src_audio) == len(audio)
    assert framemd5(seg, "a") == src_audio


def test_hevc_segment_decodes_identically(media: Path, tmp_path: Path) -> None:
    src = media / "hevc.mp4"
    seg = tmp_path / "seg.ts"
    data = write_ts_segment(demux(src, "video"), None)
    check_structure(data, {VIDEO_PID: 0x24})
    first = pes_by_pid(parse_ts(data))[VIDEO_PID][0].payload
    assert first.startswith(START_CODE + b"\x46\x01\x50" + START_CODE + b"\x40\x01")  # AUD, VPS
    assert b"x265" not in first  # the encoder's settings SEI is not repeated
    seg.write_bytes(data)
    assert ffprobe(seg) == (["hevc"], "")
    assert decode_errors(seg) == ""
    src_frames = framemd5(src, "v")
    assert len(src_frames) == 50
    assert framemd5(seg, "v") == src_frames


def test_consecutive_segments_decode_like_one(media: Path, tmp_path: Path) -> None:
    """Cut at keyframes, each segment starts clean; concatenated they give every frame."""
    src = media / "h264.mp4"
    video, audio = demux(src, "video"), demux(src, "audio")
    cuts = [i for i, key in enumerate(video.sync) if key] + [len(video)]
    assert len(cuts) == 5
    rate = audio.track.timescale / video.track.timescale
    times = [sum(audio.durations[:i]) for i in range(len(audio) + 1)]
    src_frames = framemd5(src, "v")
    parts = []
    for n, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
        t0, t1 = sum(video.durations[:a]) * rate, sum(video.durations[:b]) * rate
        aa = next(i for i, t in enumerate(times) if t >= t0)
        ab = (
            next((i for i, t in enumerate(times) if t >= t1), len(audio))
            if b < len(video)
            else len(audio)
        )
        seg = write_ts_segment(sub_run(video, a, b), sub_run(audio, aa, ab), sequence=n)
        check_structure(seg, {VIDEO_PID: 0x1B, AUDIO_PID: 0x0F}, sequence=n)
        single = tmp_path / f"seg{n}.ts"
        single.write_bytes(seg)
        assert decode_errors(single) == ""
        assert framemd5(single, "v") == src_frames[a:b]  # decodable from its first frame
        parts.append(seg)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(parts))
    assert framemd5(joined, "v") == src_frames


def test_audio_only_segment(media: Path, tmp_path: Path) -> None:
    src = media / "h264.mp4"
    audio = demux(src, "audio", base_time=48000 * 10)
    data = write_ts_segment(None, audio)
    check_structure(data, {AUDIO_PID: 0x0F})
    seg = tmp_path / "a.ts"
    seg.write_bytes(data)
    assert ffprobe(seg) == (["aac"], "")
    assert framemd5(seg, "a") == framemd5(src, "a", "-ignore_editlist", "1")
    pes = pes_by_pid(parse_ts(data))[AUDIO_PID]
    assert pes[0].pts == 900000 and pes[0].dts is None and pes[0].stream_id == 0xC0
    assert all(p.random_access and p.length for p in pes)
    assert sum(p.payload.count(b"\xff\xf1") for p in pes) >= len(audio)  # ADTS headers
    assert len(pes) < len(audio) / 2  # frames are grouped


def test_video_only_segment_and_iframe(media: Path, tmp_path: Path) -> None:
    src = media / "h264.mp4"
    video = demux(src, "video")
    data = write_ts_segment(video, None)
    check_structure(data, {VIDEO_PID: 0x1B})
    seg = tmp_path / "v.ts"
    seg.write_bytes(data)
    assert ffprobe(seg) == (["h264"], "")
    assert framemd5(seg, "v") == framemd5(src, "v")

    key = next(i for i, k in enumerate(video.sync) if k and i > 0)
    iframe = write_ts_iframe(sub_run(video, key, key + 1))
    check_structure(iframe, {VIDEO_PID: 0x1B})
    one = tmp_path / "i.ts"
    one.write_bytes(iframe)
    assert decode_errors(one) == ""
    assert framemd5(one, "v") == [framemd5(src, "v")[key]]
    with pytest.raises(MediaError):
        write_ts_iframe(sub_run(video, key, key + 2))


@pytest.mark.parametrize(
    ("name", "codec", "stream_type", "stream_id"),
    [
        ("ac3.mp4", "ac3", 0x81, 0xBD),
        ("eac3.mp4", "eac3", 0x87, 0xBD),
        ("mp3.mp4", "mp3", 0x03, 0xC0),
    ],
)
def test_other_audio_codecs(
    media: Path, tmp_path: Path, name: str, codec: str, stream_type: int, stream_id: int
) -> None:
    src = media / name
    data = write_ts_segment(None, demux(src, "audio"))
    check_structure(data, {AUDIO_PID: stream_type})
    assert pes_by_pid(parse_ts(data))[AUDIO_PID][0].stream_id == stream_id
    seg = tmp_path / "a.ts"
    seg.write_bytes(data)
    assert ffprobe(seg) == ([codec], "")
    assert decode_errors(seg) == ""
    assert framemd5(seg, "a") == framemd5(src, "a", "-ignore_editlist", "1")


# --- tests: packet level ---------------------------------------------------------------------


def test_packet_structure_and_timestamps(media: Path) -> None:
    src = media / "h264.mp4"
    hours = 14  # past 2^32 ticks of 90 kHz (13.3 h): the 33rd timestamp bit is used
    video = demux(src, "video", base_time=12800 * 3600 * hours)
    audio = demux(src, "audio", base_time=48000 * 3600 * hours)
    base = video.base_time
    data = write_ts_segment(video, audio, sequence=21)
    check_structure(data, {VIDEO_PID: 0x1B, AUDIO_PID: 0x0F}, sequence=21)
    packets = parse_ts(data)
    pes = pes_by_pid(packets)
    vpes = pes[VIDEO_PID]
    assert len(vpes) == len(video)
    assert vpes[0].pts == to_90k(base + video.cts_offsets[0], 12800)  # type: ignore[index]
    assert vpes[0].dts == to_90k(base, 12800)
    assert vpes[0].random_access and vpes[0].pcr is not None
    assert all(p.pcr is not None for p in vpes)  # PCR with every video PES
    assert [p.random_access for p in vpes] == video.sync
    for p, cts in zip(vpes, video.cts_offsets, strict=True):  # type: ignore[arg-type]
        assert (p.dts is None) == (cts == 0)
        assert p.payload.startswith(START_CODE + b"\x09\xf0")  # AUD first
    key_payload = vpes[0].payload
    assert START_CODE + b"\x67" in key_payload and START_CODE + b"\x68" in key_payload
    assert START_CODE + b"\x67" not in vpes[1].payload
    # DTS order across PIDs: audio PES are not held back behind video.
    decode_times = {
        pid: iter([x.dts if x.dts is not None else (x.pts or 0) for x in items])
        for pid, items in pes.items()
    }
    times = [next(decode_times[p.pid]) for p in packets if p.start and p.pid in decode_times]
    assert times == sorted(times)


def test_pcr_gap_filled_for_slow_video() -> None:
    """8 fps: 125 ms between frames, yet PCRs stay <= 40 ms apart."""
    data = bytes(500)
    run = _synthetic_video([data] * 6, duration=1600, timescale=12800)
    ts = write_ts_segment(run, None)
    check_structure(ts, {VIDEO_PID: 0x1B})


def test_crc32_mpeg2_check_value() -> None:
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7


def test_adts_header_from_asc() -> None:
    framer = AdtsFramer.from_config(bytes.fromhex("1190"))  # AAC LC, 48 kHz, stereo
    assert framer.header(100) == bytes.fromhex("fff14c800d7ffc")
    he = AdtsFramer.from_config(bytes.fromhex("2b1188"))  # HE-AAC: SBR 48 kHz, 24 kHz core
    assert (he.object_type, he.frequency_index, he.channel_config) == (2, 6, 2)
    with pytest.raises(MediaError):
        AdtsFramer.from_config(bytes.fromhex("f8"))  # truncated


def test_parameter_sets_not_repeated_when_in_band() -> None:
    config = _AVCC
    fmt = avc_format(config)
    sps, pps = b"\x67\x42\x00\x1e\xab", b"\x68\xce\x3c\x80"
    idr = b"\x65\x88\x84\x00"
    sample = b"".join(len(n).to_bytes(4, "big") + n for n in (b"\x09\x10", sps, pps, idr))
    parts = b"".join(access_unit(fmt, memoryview(sample), keyframe=True))
    assert parts == b"".join(START_CODE + n for n in (b"\x09\xf0", sps, pps, idr))
    bare = len(idr).to_bytes(4, "big") + idr
    parts = b"".join(access_unit(fmt, memoryview(bare), keyframe=True))
    assert parts == b"".join(START_CODE + n for n in (b"\x09\xf0", sps, pps, idr))
    parts = b"".join(access_unit(fmt, memoryview(bare), keyframe=False))
    assert parts == START_CODE + b"\x09\xf0" + START_CODE + idr


def test_hevc_access_unit() -> None:
    """Parameter sets in VPS/SPS/PPS order whatever the record's; the AUD copies TemporalId."""
    vps, sps, pps = b"\x40\x01\x0c", b"\x42\x01\x01", b"\x44\x01\xc1"
    arrays = [(0x21, sps), (0x20, vps), (0x22, pps)]  # deliberately out of order
    config = bytes(21) + b"\x03" + bytes((len(arrays),))
    config += b"".join(bytes((t, 0, 1)) + len(n).to_bytes(2, "big") + n for t, n in arrays)
    fmt = hevc_format(config)
    idr = b"\x26\x01\xaf"  # IDR_W_RADL, TemporalId 0
    sample = memoryview(len(idr).to_bytes(4, "big") + idr)
    got = b"".join(access_unit(fmt, sample, keyframe=True))
    assert got == b"".join(START_CODE + n for n in (b"\x46\x01\x50", vps, sps, pps, idr))
    trail = b"\x02\x03\xaf"  # TRAIL_R, TemporalId 2
    sample = memoryview(len(trail).to_bytes(4, "big") + trail)
    got = b"".join(access_unit(fmt, sample, keyframe=False))
    assert got == START_CODE + b"\x46\x03\x50" + START_CODE + trail


# --- tests: bad input ------------------------------------------------------------------------


def test_unknown_codecs_raise(media: Path) -> None:
    video = demux(media / "h264.mp4", "video")
    audio = demux(media / "h264.mp4", "audio")
    vp9 = CodecInfo("vp09", "vp09.00.10.08", b"")
    opus = CodecInfo("Opus", "opus", b"")
    for bad in (
        lambda: write_ts_segment(_with_codec(video, vp9), None),
        lambda: write_ts_segment(None, _with_codec(audio, opus)),
        lambda: write_ts_segment(None, _with_codec(audio, CodecInfo("mp4a", "mp4a.40.2", b""))),
        lambda: write_ts_segment(None, None),
    ):
        with pytest.raises(MediaError, match="MPEG-TS|AudioSpecificConfig|needs"):
            bad()


def test_truncated_sample_raises(media: Path) -> None:
    video = demux(media / "h264.mp4", "video")
    one = sub_run(video, 0, 1)
    broken = SampleRun(one.track, 0, [512], [8], None, [True], b"\x00\x00\x10\x00abcd")
    with pytest.raises(MediaError, match="overruns"):
        write_ts_segment(broken, None)
    with pytest.raises(MediaError, match="add up"):
        write_ts_segment(SampleRun(one.track, 0, [512], [9], None, [True], b"x"), None)


def _with_codec(run: SampleRun, codec: CodecInfo) -> SampleRun:
    t = run.track
    track = Track(t.track_id, t.kind, t.timescale, t.language, codec, t.sizes, t.offsets, t.dts,
                  t.cts, t.sync)  # fmt: skip
    return SampleRun(track, run.base_time, run.durations, run.sizes, run.cts_offsets, run.sync,
                     run.data)  # fmt: skip


# --- property tests: any sizes packetize losslessly ------------------------------------------

# avcC: version 1, Baseline 3.0, 4-byte lengths, one SPS, one PPS.
_AVCC = (
    bytes.fromhex("0142001effe1")
    + b"\x00\x05\x67\x42\x00\x1e\xab"
    + b"\x01\x00\x04\x68\xce\x3c\x80"
)


def _synthetic_video(
    payloads: list[bytes], *, duration: int = 512, timescale: int = 12800, base_time: int = 0
) -> SampleRun:
    samples = [len(p).to_bytes(4, "big") + p for p in payloads]
    codec = CodecInfo("avc1", "avc1.42001e", b"", _AVCC, width=320, height=240)
    sizes = [len(s) for s in samples]
    track = Track(1, "video", timescale, "und", codec, array("I", sizes), array("Q"),
                  array("q"), None, None)  # fmt: skip
    sync = [i % 25 == 0 for i in range(len(samples))]
    return SampleRun(track, base_time, [duration] * len(samples), sizes, None, sync,
                     b"".join(samples))  # fmt: skip


def _synthetic_ac3(frames: list[bytes], *, duration: int = 1536, base_time: int = 0) -> SampleRun:
    codec = CodecInfo("ac-3", "ac-3", b"", b"", channels=2, sample_rate=48000)
    sizes = [len(f) for f in frames]
    track = Track(2, "audio", 48000, "eng", codec, array("I", sizes), array("Q"), array("q"),
                  None, None)  # fmt: skip
    return SampleRun(track, base_time, [duration] * len(frames), sizes, None, [True] * len(frames),
                     b"".join(frames))  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    # Sizes around 184-byte packet edges, and past 65535 (PES_packet_length 0 for video).
    video_sizes=st.lists(
        st.one_of(st.integers(1, 1200), st.integers(65_400, 66_000)), min_size=1, max_size=12
    ),
    audio_sizes=st.lists(st.integers(1, 900), min_size=0, max_size=20),
    frame_ticks=st.sampled_from([256, 512, 1600, 6400]),
)
def test_any_sizes_round_trip(
    video_sizes: list[int], audio_sizes: list[int], frame_ticks: int
) -> None:
    rng = random.Random(len(video_sizes) * 1000 + len(audio_sizes))
    payloads = [b"\x65" + rng.randbytes(n) for n in video_sizes]
    frames = [rng.randbytes(n) for n in audio_sizes]
    base = rng.randrange(10**9)  # up to 21 h: uses the 33rd bit of 90 kHz timestamps
    video = _synthetic_video(payloads, duration=frame_ticks, base_time=base)
    audio = _synthetic_ac3(frames, base_time=base * 48000 // 12800) if frames else None
    data = write_ts_segment(video, audio, sequence=len(video_sizes))
    streams = {VIDEO_PID: 0x1B} | ({AUDIO_PID: 0x81} if frames else {})
    check_structure(data, streams, sequence=len(video_sizes))
    pes = pes_by_pid(parse_ts(data))
    got_video = [p.payload for p in pes[VIDEO_PID]]
    sps_pps = START_CODE + _AVCC[8:13] + START_CODE + _AVCC[16:20]
    assert got_video == [
        START_CODE + b"\x09\xf0" + (sps_pps if i % 25 == 0 else b"") + START_CODE + p
        for i, p in enumerate(payloads)
    ]
    if frames:
        assert b"".join(p.payload for p in pes[AUDIO_PID]) == b"".join(frames)
        assert all(p.stream_id == 0xBD for p in pes[AUDIO_PID])


# --- speed -----------------------------------------------------------------------------------


def test_speed_of_a_large_segment() -> None:
    """4 s of 5 Mb/s video (100 samples, 2.5 MB) + AAC: far under the 20 ms budget."""
    rng = random.Random(1)
    sizes = [120_000 if i % 50 == 0 else 22_500 for i in range(100)]
    video = _synthetic_video([b"\x65" + rng.randbytes(n) for n in sizes])
    assert 2_400_000 < len(video.data) < 2_600_000
    codec = CodecInfo("mp4a", "mp4a.40.2", b"", bytes.fromhex("1190"))
    asizes = [rng.randrange(300, 500) for _ in range(188)]
    track = Track(2, "audio", 48000, "und", codec, array("I", asizes), array("Q"), array("q"),
                  None, None)  # fmt: skip
    audio = SampleRun(track, 0, [1024] * 188, asizes, None, [True] * 188,
                      rng.randbytes(sum(asizes)))  # fmt: skip
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        write_ts_segment(video, audio)
        best = min(best, time.perf_counter() - t0)
    print(f"2.5 MB segment: {best * 1000:.1f} ms")
    assert best < 0.1  # generous for slow CI; typically a few ms
