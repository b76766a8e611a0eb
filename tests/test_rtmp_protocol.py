"""RTMP protocol layers without sockets: AMF0, chunk stream, handshake, FLV tags, session.

Chunk bytes are built by hand here (`chunk()`), not with the encoder under test, so the
decoder is checked against the spec's layout; the encoder is then checked against the
decoder. Real AVC/AAC tag bodies come from an FLV file that the ffmpeg CLI writes (the same
muxer ffmpeg uses for RTMP); HEVC enhanced-RTMP tags are hand-built.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import pytest

from mediaorigin.ingest.frames import Frame, TrackConfig
from mediaorigin.ingest.rtmp import amf0, chunks
from mediaorigin.ingest.rtmp.amf0 import UNDEFINED, Amf0Error, EcmaArray
from mediaorigin.ingest.rtmp.chunks import (
    ChunkDecoder,
    ChunkEncoder,
    Message,
    RtmpProtocolError,
)
from mediaorigin.ingest.rtmp.flv import FlvDemuxer, UnsupportedCodec, to_length4
from mediaorigin.ingest.rtmp.handshake import ServerHandshake
from mediaorigin.ingest.rtmp.session import (
    Connected,
    Metadata,
    PublishRequested,
    ServerSession,
    Unpublished,
)

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"

# --- AMF0 ----------------------------------------------------------------------------------


def test_amf0_round_trip_every_type() -> None:
    values = [
        1.0, -2.5, 0.0, True, False, "", "live", "ü€", "x" * 70_000, None, UNDEFINED,
        {"app": "live", "n": 3.0, "nested": {"deeper": {"list": [1.0, "a", None]}}},
        EcmaArray(duration=4.0, width=320.0, encoder="Lavf59", inner=EcmaArray(a=True)),
        [1.0, [2.0, [3.0]], {"k": "v"}],
        datetime(2024, 5, 17, 12, 30, 15, 250_000, tzinfo=UTC),
        {},
        EcmaArray(),
        [],
    ]  # fmt: skip
    encoded = amf0.encode(*values)
    decoded = amf0.decode(encoded)
    assert decoded == values
    assert isinstance(decoded[12], EcmaArray) and isinstance(decoded[12]["inner"], EcmaArray)
    assert decoded[10] is UNDEFINED
    assert amf0.encode(*decoded) == encoded


def test_amf0_wire_format() -> None:
    # connect command as ffmpeg sends it (abridged), written out by hand.
    raw = (
        b"\x02\x00\x07connect"
        + b"\x00" + struct.pack(">d", 1.0)
        + b"\x03" + b"\x00\x03app\x02\x00\x04live" + b"\x00\x04type\x02\x00\x0anonprivate"
        + b"\x00\x00\x09"
        + b"\x05\x06"
        + b"\x08\x00\x00\x00\x09" + b"\x00\x01a\x01\x01" + b"\x00\x00\x09"  # count is wrong
        + b"\x0a\x00\x00\x00\x02" + b"\x01\x00" + b"\x0c\x00\x00\x00\x02hi"
        + b"\x0b" + struct.pack(">dh", 1000.0, 0)
    )  # fmt: skip
    assert amf0.decode(raw) == [
        "connect", 1.0, {"app": "live", "type": "nonprivate"}, None, UNDEFINED,
        EcmaArray(a=True), [False, "hi"], datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
    ]  # fmt: skip
    assert amf0.encode("hi", 3, True) == b"\x02\x00\x02hi\x00" + struct.pack(">d", 3) + b"\x01\x01"
    assert amf0.encode("y" * 65_536)[:5] == b"\x0c\x00\x01\x00\x00"


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x3f\xf0",  # truncated number
        b"\x02\x00\x05ab",  # truncated string
        b"\x03\x00\x01a\x02\x00\x01b",  # object without its end marker
        b"\x07\x00\x01",  # reference: unsupported
        b"\x10\x00\x01T\x00\x00\x09",  # typed object: unsupported
        b"\x11",  # AMF3 switch: unsupported
        b"\x09",  # object end outside an object
        b"\x0a\xff\xff\xff\xff\x05",  # strict array longer than the message
        b"\x02\x00\x02\xff\xfe",  # not UTF-8
        b"\x03" + b"\x00\x01a\x03" * 40 + b"\x00\x00\x09" * 40,  # nested too deeply
    ],
)
def test_amf0_malformed(raw: bytes) -> None:
    with pytest.raises(Amf0Error) as e:
        amf0.decode(raw)
    assert isinstance(e.value, RtmpProtocolError)


# --- chunk stream --------------------------------------------------------------------------


def basic(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes([fmt << 6 | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    return bytes([fmt << 6 | 1, (csid - 64) & 0xFF, (csid - 64) >> 8])


def chunk(fmt: int, csid: int, payload: bytes = b"", *, ts: int = 0, length: int = 0,
          type_id: int = 0, sid: int = 0, ext: int | None = None) -> bytes:
    """One chunk laid out as in the spec; `ext` forces the 4-byte extended timestamp (for a
    fmt 0-2 header its value, with 0xFFFFFF in the 3-byte field)."""
    out = bytearray(basic(fmt, csid))
    field = 0xFFFFFF if ext is not None else ts
    if fmt <= 2:
        out += field.to_bytes(3, "big")
    if fmt <= 1:
        out += length.to_bytes(3, "big") + bytes([type_id])
    if fmt == 0:
        out += sid.to_bytes(4, "little")
    if ext is not None:
        out += ext.to_bytes(4, "big")
    return bytes(out) + payload


def fields(messages: list[Message]) -> list[tuple[int, int, int, int, bytes]]:
    return [(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload) for m in messages]


def test_chunk_header_types_0_to_3() -> None:
    stream = (
        chunk(0, 4, b"aaaaa", ts=1000, length=5, type_id=8, sid=1)
        + chunk(1, 4, b"bbb", ts=20, length=3, type_id=9)
        + chunk(2, 4, b"ccc", ts=25)
        + chunk(3, 4, b"ddd")  # new message: same header, timestamp + the last delta (25)
        + chunk(0, 6, b"x", ts=40, length=1, type_id=18, sid=1)
        + chunk(3, 6, b"y")  # fmt 3 after fmt 0: the delta is the fmt 0 timestamp
    )
    assert fields(ChunkDecoder().feed(stream)) == [
        (4, 8, 1, 1000, b"aaaaa"),
        (4, 9, 1, 1020, b"bbb"),
        (4, 9, 1, 1045, b"ccc"),
        (4, 9, 1, 1070, b"ddd"),
        (6, 18, 1, 40, b"x"),
        (6, 18, 1, 80, b"y"),
    ]


def test_chunk_basic_header_forms() -> None:
    stream = b"".join(
        chunk(0, csid, bytes([csid & 0xFF]), ts=csid, length=1, type_id=20)
        for csid in (2, 63, 64, 319, 320, 65599)
    )
    got = ChunkDecoder().feed(stream)
    assert [(m.csid, m.timestamp) for m in got] == [(c, c) for c in (2, 63, 64, 319, 320, 65599)]


def test_message_split_over_chunks_and_interleaved_streams() -> None:
    video = bytes(range(256)) + bytes(44)  # 300 bytes: 128 + 128 + 44 at the default size
    audio = b"A" * 200  # 128 + 72
    stream = (
        chunk(0, 6, video[:128], ts=10, length=300, type_id=9, sid=1)
        + chunk(0, 4, audio[:128], ts=11, length=200, type_id=8, sid=1)
        + chunk(3, 6, video[128:256])
        + chunk(3, 4, audio[128:])
        + chunk(3, 6, video[256:])
    )
    assert fields(ChunkDecoder().feed(stream)) == [(4, 8, 1, 11, audio), (6, 9, 1, 10, video)]


def test_extended_timestamps_also_on_type_3_chunks() -> None:
    big = 0x01234567
    payload = bytes(range(200)) * 2  # 400 bytes: 4 chunks
    stream = (
        chunk(0, 5, payload[:128], ext=big, length=400, type_id=9, sid=1)
        + chunk(3, 5, payload[128:256], ext=big)  # continuation repeats the extended field
        + chunk(3, 5, payload[256:384], ext=big)
        + chunk(3, 5, payload[384:], ext=big)
        # fmt 1 with an extended delta, then a fmt 3 new message reusing it
        + chunk(1, 5, b"q" * 10, ext=0x01000000, length=10, type_id=9)
        + chunk(3, 5, b"r" * 10, ext=0x01000000)
        # fmt 2 back to a small delta: no extended field on what follows
        + chunk(2, 5, b"s" * 10, ts=33)
        + chunk(3, 5, b"t" * 10)
        # an extended fmt 0 timestamp below 0xFFFFFF is read as it is given
        + chunk(0, 7, b"u", ext=5, length=1, type_id=8, sid=1)
    )
    want = [
        (5, 9, 1, big, payload),
        (5, 9, 1, big + 0x01000000, b"q" * 10),
        (5, 9, 1, big + 0x02000000, b"r" * 10),
        (5, 9, 1, big + 0x02000000 + 33, b"s" * 10),
        (5, 9, 1, big + 0x02000000 + 66, b"t" * 10),
        (7, 8, 1, 5, b"u"),
    ]
    assert fields(ChunkDecoder().feed(stream)) == want
    decoder = ChunkDecoder()  # the same, a byte at a time
    assert fields([m for i in range(len(stream)) for m in decoder.feed(stream[i:i + 1])]) == want


def test_timestamp_wraps_at_32_bits() -> None:
    stream = (chunk(0, 4, b"a", ext=0xFFFFFFF0, length=1, type_id=8, sid=1)
              + chunk(2, 4, b"b", ts=0x20))  # fmt: skip
    assert [m.timestamp for m in ChunkDecoder().feed(stream)] == [0xFFFFFFF0, 0x10]


def test_set_chunk_size_mid_stream() -> None:
    big = bytes(random.Random(1).randbytes(5000))
    stream = (
        chunk(0, 4, b"x" * 128, ts=0, length=130, type_id=9, sid=1)
        + chunk(3, 4, b"x" * 2)
        + chunk(0, 2, struct.pack(">I", 4096), length=4, type_id=chunks.SET_CHUNK_SIZE)
        + chunk(0, 6, big[:4096], ts=1, length=5000, type_id=9, sid=1)
        + chunk(3, 6, big[4096:])
        + chunk(0, 2, struct.pack(">I", 0x7FFFFFFF), length=4, type_id=1)  # the maximum
        + chunk(1, 6, big, ts=1, length=5000, type_id=9)
    )
    decoder = ChunkDecoder()
    got = decoder.feed(stream)
    assert [(m.type_id, len(m.payload)) for m in got] == [
        (9, 130), (1, 4), (9, 5000), (1, 4), (9, 5000)]  # fmt: skip
    assert got[2].payload == got[4].payload == big
    assert decoder.chunk_size == chunks.CHUNK_SIZE_CAP
    byte_decoder = ChunkDecoder()
    one_by_one = [m for i in range(len(stream)) for m in byte_decoder.feed(stream[i:i + 1])]
    assert fields(one_by_one) == fields(got)


def test_abort_drops_the_partial_message() -> None:
    stream = (
        chunk(0, 6, b"p" * 128, length=300, type_id=9, sid=1)
        + chunk(0, 2, struct.pack(">I", 6), length=4, type_id=chunks.ABORT)
        + chunk(0, 6, b"whole", ts=5, length=5, type_id=9, sid=1)
    )
    got = ChunkDecoder().feed(stream)
    assert [(m.type_id, m.payload) for m in got] == [(2, struct.pack(">I", 6)), (9, b"whole")]


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (chunk(1, 4, b"x", length=1, type_id=8), "starts with a type 1"),
        (chunk(3, 9, b"x"), "starts with a type 3"),
        (chunk(0, 2, bytes(4), length=4, type_id=1), "invalid chunk size 0"),
        (chunk(0, 2, b"\x80\x00\x00\x01", length=4, type_id=1), "invalid chunk size"),
        (chunk(0, 2, b"\x00\x01", length=2, type_id=1), "Set Chunk Size message of 2 bytes"),
        (chunk(0, 4, b"a" * 128, length=200, type_id=9, sid=1)
         + chunk(2, 4, b"b", ts=1), "before the message in progress"),
    ],
)
def test_chunk_protocol_errors(stream: bytes, message: str) -> None:
    with pytest.raises(RtmpProtocolError, match=message):
        ChunkDecoder().feed(stream)


def test_unfinished_messages_are_bounded() -> None:
    decoder = ChunkDecoder(max_pending=1000)
    stream = b"".join(chunk(0, csid, b"z" * 128, length=0xFFFFFF, type_id=9, sid=1)
                      for csid in range(3, 20))  # fmt: skip
    with pytest.raises(RtmpProtocolError, match="unfinished"):
        decoder.feed(stream)


def test_encoder_decoder_round_trip() -> None:
    rng = random.Random(7)
    messages = []
    ts = {csid: rng.randrange(0, 1000) for csid in (3, 4, 63, 64, 319, 320, 65599)}
    for _ in range(300):
        csid = rng.choice(list(ts))
        jump = rng.choice([0, 1, 33, 0xFFFFFF, 0x1000000, 0x7FFFFFF0])
        ts[csid] = (ts[csid] + jump) & 0xFFFFFFFF
        size = rng.choice([0, 1, 127, 128, 129, 1000, 70_000])
        messages.append(Message(rng.choice([8, 9, 18, 20]), rng.randbytes(size), ts[csid],
                                rng.choice([1, 1, 1, 2]), csid))
    for chunk_size in (1, 128, 4096, 0xFFFFFF):
        if chunk_size == 1:  # a chunk per byte: keep it short
            messages = [m for m in messages if len(m.payload) <= 1000]
        encoder = ChunkEncoder(chunk_size)
        wire = b"".join(encoder.encode(m) for m in messages)
        decoder = ChunkDecoder(chunk_size)
        assert fields(decoder.feed(wire)) == fields(messages)
        pieces = ChunkDecoder(chunk_size)
        cuts = sorted(rng.sample(range(len(wire)), 200))
        got = [m for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)
               for m in pieces.feed(wire[a:b])]  # fmt: skip
        assert fields(got) == fields(messages)


def test_encoder_uses_compact_headers() -> None:
    encoder = ChunkEncoder(128)
    first = encoder.encode(Message(9, b"a" * 300, 0, 1, 6))
    second = encoder.encode(Message(9, b"b" * 300, 40, 1, 6))
    third = encoder.encode(Message(8, b"c" * 10, 80, 1, 6))
    assert first[0] >> 6 == 0 and len(first) == 12 + 300 + 2  # fmt 0 + two fmt 3 headers
    assert second[0] >> 6 == 2 and len(second) == 4 + 300 + 2
    assert third[0] >> 6 == 1 and len(third) == 8 + 10


# --- handshake -----------------------------------------------------------------------------


def test_handshake_echo() -> None:
    c1 = struct.pack(">I", 12345) + bytes(4) + random.Random(3).randbytes(1528)
    c2_and_more = bytes(1536) + b"\x03chunk"
    hs = ServerHandshake(random_bytes=lambda n: b"\xab" * n)
    assert hs.feed(b"\x03" + c1[:100]) == b"" and hs.data_to_send() == b""
    assert hs.feed(c1[100:]) == b""
    out = hs.data_to_send()
    assert len(out) == 1 + 1536 * 2
    s0, s1, s2 = out[:1], out[1:1537], out[1537:]
    assert s0 == b"\x03"
    assert s1 == bytes(8) + b"\xab" * 1528  # time 0, zero field 0: the simple handshake
    assert s2 == c1[:4] + bytes(4) + c1[8:]  # C1's time, our time2 (0), C1's random
    assert not hs.done
    assert hs.feed(c2_and_more) == b"\x03chunk"
    assert hs.done and hs.data_to_send() == b""


@pytest.mark.parametrize("version", [6, 0x47])  # RTMPE; an HTTP client's 'G'
def test_handshake_refuses_other_versions(version: int) -> None:
    with pytest.raises(RtmpProtocolError, match="unsupported RTMP handshake"):
        ServerHandshake().feed(bytes([version]) + bytes(1536))


# --- FLV tags ------------------------------------------------------------------------------


def flv_tags(path: Path) -> list[tuple[int, int, bytes]]:
    """(tag type, timestamp, body) of every tag in an FLV file (E.4.1), read independently."""
    data = path.read_bytes()
    assert data[:3] == b"FLV"
    pos = int.from_bytes(data[5:9], "big") + 4
    tags = []
    while pos + 11 <= len(data):
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        ts = int.from_bytes(data[pos + 4:pos + 7], "big") | data[pos + 7] << 24
        tags.append((data[pos], ts, data[pos + 11:pos + 11 + size]))
        pos += 11 + size + 4
    return tags


@pytest.fixture(scope="module")
def flv_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path(FFMPEG).exists():
        pytest.skip("ffmpeg CLI not installed")
    out = tmp_path_factory.mktemp("rtmp_flv") / "clip.flv"
    subprocess.run([
        FFMPEG, "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-ac", "2",
        "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-x264-params", "bframes=2",
        "-g", "30", "-c:a", "aac", "-t", "1", str(out),
    ], check=True, timeout=60)  # fmt: skip
    return out


def test_flv_real_avc_and_aac(flv_clip: Path) -> None:
    with av.open(str(flv_clip)) as container:
        avcc = bytes(container.streams.video[0].codec_context.extradata)
        asc = bytes(container.streams.audio[0].codec_context.extradata)
        ref_video = [(p.dts, p.pts - p.dts, p.is_keyframe, bytes(p))
                     for p in container.demux(container.streams.video[0]) if p.size]  # fmt: skip
    demuxer = FlvDemuxer()
    configs: list[TrackConfig] = []
    frames: list[Frame] = []
    for tag_type, ts, body in flv_tags(flv_clip):
        if tag_type == 9:
            item = demuxer.video(ts, body)
        elif tag_type == 8:
            item = demuxer.audio(ts, body)
        else:
            continue
        if isinstance(item, TrackConfig):
            configs.append(item)
        elif isinstance(item, Frame):
            frames.append(item)
    assert configs == [TrackConfig("video", "h264", avcc, 1000),
                       TrackConfig("audio", "aac", asc, 1000)]  # fmt: skip
    video = [(f.dts, f.cts, f.keyframe, f.data) for f in frames if f.kind == "video"]
    assert video == ref_video
    assert any(cts > 0 for _, cts, _, _ in video)
    audio = [f for f in frames if f.kind == "audio"]
    assert audio and all(f.cts == 0 and f.keyframe for f in audio)


def avc_tag(packet_type: int, cts: int, data: bytes, frame_type: int = 1) -> bytes:
    return bytes([frame_type << 4 | 7, packet_type]) + cts.to_bytes(3, "big", signed=True) + data


SPS = bytes.fromhex("6742c01e95a0a0fd0800")  # content is not parsed: any bytes do
PPS = bytes.fromhex("68ce3c80")


def avcc(length_size: int) -> bytes:
    return (bytes([1, 0x42, 0xC0, 0x1E, 0xFC | (length_size - 1), 0xE1])
            + len(SPS).to_bytes(2, "big") + SPS + b"\x01" + len(PPS).to_bytes(2, "big") + PPS)


def test_flv_composition_time_sign() -> None:
    demuxer = FlvDemuxer()
    demuxer.video(0, avc_tag(0, 0, avcc(4)))
    nalu = b"\x00\x00\x00\x02\x41\x9a"
    assert demuxer.video(100, avc_tag(1, 66, nalu, 2)) == Frame("video", 100, 66, False, nalu)
    assert demuxer.video(133, avc_tag(1, -33, nalu, 2)).cts == -33  # type: ignore[union-attr]
    assert demuxer.video(166, avc_tag(1, -0x800000, nalu, 1)).cts == -0x800000  # type: ignore[union-attr]
    assert demuxer.video(200, avc_tag(2, 0, b"")) is None  # end of sequence


def test_flv_nal_length_size_2_is_rewritten_to_4() -> None:
    demuxer = FlvDemuxer()
    config = demuxer.video(0, avc_tag(0, 0, avcc(2)))
    assert isinstance(config, TrackConfig)
    assert config.config == avcc(4)  # the record now says 4-byte lengths, like the frames
    nal1, nal2 = b"\x65" + bytes(range(200)), b"\x06\x05\x01"
    two = len(nal1).to_bytes(2, "big") + nal1 + len(nal2).to_bytes(2, "big") + nal2
    frame = demuxer.video(40, avc_tag(1, 0, two, 1))
    assert isinstance(frame, Frame) and frame.keyframe
    assert frame.data == len(nal1).to_bytes(4, "big") + nal1 + len(nal2).to_bytes(4, "big") + nal2
    assert to_length4(b"\x01\x09" + b"\x03\xaa\xbb\xcc", 1) == b"\x00\x00\x00\x01\x09" + \
        b"\x00\x00\x00\x03\xaa\xbb\xcc"


@pytest.mark.parametrize("data", [b"\x00\x00\x00\x09short", b"\x00\x00"])
def test_flv_bad_nal_lengths(data: bytes) -> None:
    demuxer = FlvDemuxer()
    demuxer.video(0, avc_tag(0, 0, avcc(4)))
    with pytest.raises(RtmpProtocolError, match="NAL unit"):
        demuxer.video(0, avc_tag(1, 0, data))


def test_flv_frames_before_config_are_dropped() -> None:
    demuxer = FlvDemuxer()
    assert demuxer.video(0, avc_tag(1, 0, b"\x00\x00\x00\x01\x65")) is None
    assert demuxer.audio(0, b"\xaf\x01\x21\x00") is None
    assert demuxer.video(0, b"") is None and demuxer.audio(0, b"") is None
    assert demuxer.video(0, b"\x57\x00") is None  # video command frame (frame type 5)


def test_flv_aac() -> None:
    demuxer = FlvDemuxer()
    asc = b"\x11\x90"
    assert demuxer.audio(0, b"\xaf\x00" + asc) == TrackConfig("audio", "aac", asc, 1000)
    assert demuxer.audio(21, b"\xaf\x01\x21\x10") == Frame("audio", 21, 0, True, b"\x21\x10")
    with pytest.raises(RtmpProtocolError, match="AudioSpecificConfig of 1 bytes"):
        demuxer.audio(0, b"\xaf\x00\x11")


# An HEVCDecoderConfigurationRecord of 23 bytes: Main profile, level 3.1, no parameter set
# arrays, lengthSizeMinusOne 3 (byte 21).
HVCC = bytes([1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0x5D, 0xF0, 0x00, 0xFC, 0xFD,
              0xF8, 0xF8, 0, 0, 0x0F, 0x00])  # fmt: skip


def ex_video(frame_type: int, packet_type: int, fourcc: bytes, data: bytes) -> bytes:
    return bytes([0x80 | frame_type << 4 | packet_type]) + fourcc + data


def test_enhanced_rtmp_hevc() -> None:
    demuxer = FlvDemuxer()
    assert demuxer.video(0, ex_video(1, 0, b"hvc1", HVCC)) == \
        TrackConfig("video", "hevc", HVCC, 1000)
    nalu = b"\x00\x00\x00\x03\x26\x01\xaf"
    cts = (40).to_bytes(3, "big")
    assert demuxer.video(0, ex_video(1, 1, b"hvc1", cts + nalu)) == \
        Frame("video", 0, 40, True, nalu)
    neg = (-20).to_bytes(3, "big", signed=True)
    assert demuxer.video(33, ex_video(2, 1, b"hvc1", neg + nalu)) == \
        Frame("video", 33, -20, False, nalu)
    assert demuxer.video(66, ex_video(2, 3, b"hvc1", nalu)) == Frame("video", 66, 0, False, nalu)
    assert demuxer.video(66, ex_video(2, 4, b"hvc1", b"\x02\x00\x09colorInfo")) is None
    assert demuxer.video(99, ex_video(1, 2, b"hvc1", b"")) is None
    # ModEx (a nanosecond offset, 3 bytes) in front of CodedFramesX
    modex = bytes([0x80 | 2 << 4 | 7, 2, 0, 0, 7, 0x00 | 3]) + b"hvc1" + nalu
    assert demuxer.video(100, modex) == Frame("video", 100, 0, False, nalu)
    # a 2-byte NAL length size in hvcC is rewritten as for AVC
    small = HVCC[:21] + bytes([0x0D]) + HVCC[22:]
    assert demuxer.video(0, ex_video(1, 0, b"hvc1", small)).config == HVCC  # type: ignore[union-attr]
    assert demuxer.video(0, ex_video(1, 3, b"hvc1", b"\x00\x02\x26\x01")).data == \
        b"\x00\x00\x00\x02\x26\x01"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kind", "body", "match"),
    [
        ("video", bytes([0x14, 0]), "On2 VP6"),
        ("video", bytes([0x12, 0]), "Sorenson H.263"),
        ("video", bytes([0x1C, 0, 0, 0, 0]), "HEVC \\(non-standard"),
        ("video", ex_video(1, 0, b"av01", b"\x81"), "av01"),
        ("video", ex_video(1, 0, b"vp09", b"\x01"), "vp09"),
        ("video", bytes([0x80 | 1 << 4 | 6]) + b"\x00hvc1", "multitrack"),
        ("audio", bytes([0x2F, 0xFF, 0xFB]), "MP3"),
        ("audio", bytes([0xB6, 0x00]), "Speex"),
        ("audio", bytes([0x90]) + b"Opus\x00", "Opus"),
    ],
)
def test_flv_unsupported_codecs_are_refused(kind: str, body: bytes, match: str) -> None:
    demuxer = FlvDemuxer()
    with pytest.raises(UnsupportedCodec, match=match):
        getattr(demuxer, kind)(0, body)


def test_enhanced_audio_mp4a() -> None:
    demuxer = FlvDemuxer()
    assert demuxer.audio(0, b"\x90mp4a\x11\x90") == TrackConfig("audio", "aac", b"\x11\x90", 1000)
    assert demuxer.audio(21, b"\x91mp4a\x21\x10") == Frame("audio", 21, 0, True, b"\x21\x10")


# --- session -------------------------------------------------------------------------------


def message_bytes(csid: int, type_id: int, sid: int, payload: bytes, ts: int = 0,
                  chunk_size: int = 128) -> bytes:
    """A client message as chunks: a fmt 0 chunk, then fmt 3 continuations (by hand)."""
    out = chunk(0, csid, payload[:chunk_size], ts=ts, length=len(payload), type_id=type_id,
                sid=sid)
    for i in range(chunk_size, len(payload), chunk_size):
        out += chunk(3, csid, payload[i:i + chunk_size])
    return out


def command(name: str, txn: float, *args: Any, sid: int = 0) -> bytes:
    return message_bytes(3 if sid == 0 else 8, 20, sid, amf0.encode(name, txn, *args))


class Client:
    """Reads what the server sends: handshake first, then messages."""

    def __init__(self) -> None:
        self.handshake = b""
        self.decoder = ChunkDecoder()

    def read(self, data: bytes) -> list[Message]:
        need = 3073 - len(self.handshake)
        if need > 0:
            self.handshake += data[:need]
            data = data[need:]
        return self.decoder.feed(data)


def commands(messages: list[Message]) -> list[list[Any]]:
    return [amf0.decode(m.payload) for m in messages if m.type_id == 20]


C0C1 = b"\x03" + bytes(1536)
CONNECT = command("connect", 1.0, {"app": "live?tenant=7", "type": "nonprivate",
                                   "tcUrl": "rtmp://127.0.0.1/live?tenant=7"})  # fmt: skip


def publish_session() -> tuple[ServerSession, Client, list[Any]]:
    """A session driven to PublishRequested, and everything it emitted."""
    session, client = ServerSession(), Client()
    events = session.receive(C0C1)
    assert events == [] and len(session.data_to_send()) == 3073
    events += session.receive(bytes(1536) + CONNECT)
    replies = client.read(b"\x03" + bytes(3072) + session.data_to_send())
    assert [m.type_id for m in replies] == [5, 6, 1, 20]
    assert replies[0].payload == struct.pack(">I", 5_000_000)
    assert replies[1].payload == struct.pack(">IB", 5_000_000, 2)
    assert replies[2].payload == struct.pack(">I", 4096)
    client.decoder.chunk_size = 4096
    result = amf0.decode(replies[3].payload)
    assert result[:2] == ["_result", 1.0]
    assert result[3]["code"] == "NetConnection.Connect.Success"
    assert result[3]["level"] == "status"
    events += session.receive(
        command("releaseStream", 2.0, None, "key1")
        + command("FCPublish", 3.0, None, "key1")
        + command("createStream", 4.0, None)
    )
    assert commands(client.read(session.data_to_send())) == [
        ["_result", 2.0, None, UNDEFINED],
        ["_result", 3.0, None, UNDEFINED],
        ["_result", 4.0, None, 1.0],
    ]
    events += session.receive(command("publish", 5.0, None, "key1?token=abc", "live", sid=1))
    assert session.data_to_send() == b""  # nothing until the driver decides
    return session, client, events


def test_session_publish_accepted() -> None:
    session, client, events = publish_session()
    assert events == [
        Connected("live", "tenant=7", "rtmp://127.0.0.1/live?tenant=7"),
        PublishRequested("live", "key1", "token=abc", "live", "tenant=7"),
    ]
    session.accept_publish()
    out = client.read(session.data_to_send())
    assert out[0].type_id == chunks.USER_CONTROL and out[0].payload == b"\x00\x00\x00\x00\x00\x01"
    statuses = commands(out)
    assert [s[0] for s in statuses] == ["onFCPublish", "onStatus"]
    assert statuses[1][3]["code"] == "NetStream.Publish.Start"
    assert statuses[1][3]["level"] == "status"
    assert out[0].stream_id == 0  # user control travels on stream 0, naming stream 1
    assert all(m.stream_id == 1 for m in out[1:])

    # media on the published stream
    meta = amf0.encode("@setDataFrame", "onMetaData", EcmaArray(width=320.0, height=240.0))
    nalu = b"\x00\x00\x00\x02\x65\x88"
    media = (
        message_bytes(4, 18, 1, meta)
        + message_bytes(6, 9, 1, avc_tag(0, 0, avcc(4)))
        + message_bytes(4, 8, 1, b"\xaf\x00\x11\x90")
        + message_bytes(6, 9, 1, avc_tag(1, 67, nalu), ts=0)
        + message_bytes(4, 8, 1, b"\xaf\x01\x21\x10", ts=21)
        + message_bytes(6, 9, 1, avc_tag(1, 33, nalu, 2), ts=33)
        + message_bytes(6, 9, 2, avc_tag(1, 33, nalu, 2), ts=66)  # a stream nobody publishes
    )
    assert session.receive(media) == [
        Metadata({"width": 320.0, "height": 240.0}),
        TrackConfig("video", "h264", avcc(4), 1000),
        TrackConfig("audio", "aac", b"\x11\x90", 1000),
        Frame("video", 0, 67, True, nalu),
        Frame("audio", 21, 0, True, b"\x21\x10"),
        Frame("video", 33, 33, False, nalu),
    ]
    # the end: FCUnpublish is answered, deleteStream ends the publication
    events = session.receive(command("FCUnpublish", 6.0, None, "key1")
                             + command("deleteStream", 7.0, None, 1.0))
    assert events == [Unpublished("key1")]
    assert [c[0] for c in commands(client.read(session.data_to_send()))] == \
        ["onFCUnpublish", "_result"]


def test_session_publish_refused() -> None:
    session, client, _ = publish_session()
    session.refuse_publish("NetStream.Publish.BadName", "stream key not accepted")
    assert session.closed
    status = commands(client.read(session.data_to_send()))
    assert status == [["onStatus", 0.0, None, {
        "level": "error", "code": "NetStream.Publish.BadName",
        "description": "stream key not accepted"}]]  # fmt: skip
    assert session.receive(command("deleteStream", 6.0, None, 1.0)) == []


def test_session_refusal_with_a_gate_code() -> None:
    session, client, _ = publish_session()
    session.refuse_publish("key_in_use", "already live")
    status = commands(client.read(session.data_to_send()))[0][3]
    assert status["code"] == "NetStream.Publish.BadName"
    assert status["description"] == "key_in_use: already live"


def test_session_byte_at_a_time_gives_the_same_events() -> None:
    stream = C0C1 + bytes(1536) + CONNECT + command("createStream", 2.0, None) + command(
        "publish", 3.0, None, "k", "live", sid=1)
    session = ServerSession()
    events = [e for i in range(len(stream)) for e in session.receive(stream[i:i + 1])]
    assert [type(e) for e in events] == [Connected, PublishRequested]


def test_session_control_messages() -> None:
    session, client, _ = publish_session()
    session.accept_publish()
    client.read(session.data_to_send())
    ping = message_bytes(2, 4, 0, struct.pack(">HI", 6, 123456))
    assert session.receive(ping) == []
    pong = client.read(session.data_to_send())
    assert [(m.type_id, m.payload) for m in pong] == [(4, struct.pack(">HI", 7, 123456))]
    # the client asks for acknowledgements every 1000 bytes; more than that came in already
    session.receive(message_bytes(2, 5, 0, struct.pack(">I", 1000)))
    first = client.read(session.data_to_send())
    assert [m.type_id for m in first] == [chunks.ACKNOWLEDGEMENT]
    filler = message_bytes(4, 8, 1, b"\xaf\x00\x11\x90")
    sent = 0
    while sent < 1000:
        assert client.read(session.data_to_send()) == []
        session.receive(filler)
        sent += len(filler)
    acks = client.read(session.data_to_send())
    assert [m.type_id for m in acks] == [chunks.ACKNOWLEDGEMENT]
    assert int.from_bytes(acks[0].payload, "big") == \
        int.from_bytes(first[0].payload, "big") + sent  # bytes received so far
    # unknown commands with a transaction id get an _error; play is refused
    session.receive(command("getStreamLength", 9.0, None, "x"))
    assert commands(client.read(session.data_to_send()))[0][:2] == ["_error", 9.0]


def test_session_play_is_refused() -> None:
    session, client = ServerSession(), Client()
    session.receive(C0C1 + bytes(1536) + CONNECT + command("createStream", 2.0, None)
                    + command("play", 3.0, None, "x", sid=1))
    assert session.closed
    status = commands(client.read(session.data_to_send()))[-1]
    assert status[0] == "onStatus" and status[3]["code"] == "NetStream.Play.Failed"


@pytest.mark.parametrize(
    ("stream", "match"),
    [
        (command("createStream", 2.0, None), "before connect"),
        (message_bytes(3, 20, 0, amf0.encode(1.0, None)), "without a name"),
        (CONNECT + CONNECT, "connect' in state connected"),
        (CONNECT + command("publish", 2.0, None, "k", "live", sid=1), "never created"),
        (CONNECT + command("createStream", 2.0, None) + command("publish", 3.0, None, sid=1),
         "without a stream name"),
        (CONNECT + message_bytes(3, 17, 0, b"\x11\x06"), "AMF3"),
    ],
)
def test_session_protocol_errors(stream: bytes, match: str) -> None:
    session = ServerSession()
    with pytest.raises(RtmpProtocolError, match=match):
        session.receive(C0C1 + bytes(1536) + stream)
    assert session.closed
