"""RTMP ingest end to end: the ffmpeg CLI publishes into an RtmpServer on 127.0.0.1.

The gate and sink below are the consumer end (they record what arrives and apply the
one-publisher-per-key rule the live channel applies); nothing is mocked. What arrives is
checked against ffprobe's reading of the clip that ffmpeg sends: packet counts, keyframes,
decoder configurations, timestamps, and that the frames decode (PyAV's H.264 decoder, fed
Annex-B as a transport stream would carry it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import ffmpeg_tools
import pytest

from mediaorigin.ingest.frames import Frame, PublishRefused, TrackConfig
from mediaorigin.ingest.rtmp import RtmpServer, amf0
from mediaorigin.ingest.rtmp.chunks import ChunkDecoder, ChunkEncoder, Message

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
FFPROBE = shutil.which("ffprobe") or "/usr/bin/ffprobe"
KEYS = ("lecture-0123456789abcdef", "k1-0123456789", "k2-0123456789", "k3-0123456789")

pytestmark = pytest.mark.skipif(not Path(FFMPEG).exists(), reason="ffmpeg CLI not installed")


# --- the consumer end ----------------------------------------------------------------------


class RecordingSink:
    def __init__(self, key: str, gate: RecordingGate) -> None:
        self.key, self.gate = key, gate
        self.tracks: list[TrackConfig] = []
        self.frames: list[Frame] = []
        self.close_calls = 0
        self.first_frame = asyncio.Event()
        self.closed = asyncio.Event()

    def on_track(self, track: TrackConfig) -> None:
        assert not self.close_calls
        self.tracks.append(track)

    def on_frame(self, frame: Frame) -> None:
        assert not self.close_calls
        self.frames.append(frame)
        self.first_frame.set()

    def close(self) -> None:
        self.close_calls += 1
        self.gate.live.discard(self.key)
        self.closed.set()

    def video(self) -> list[Frame]:
        return [f for f in self.frames if f.kind == "video"]

    def audio(self) -> list[Frame]:
        return [f for f in self.frames if f.kind == "audio"]


@dataclass
class RecordingGate:
    keys: set[str] = field(default_factory=lambda: set(KEYS))
    live: set[str] = field(default_factory=set)
    sinks: dict[str, list[RecordingSink]] = field(default_factory=dict)
    refused: list[tuple[str, str]] = field(default_factory=list)
    requests: list[tuple[str, str, str, str]] = field(default_factory=list)
    opened: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def open_publisher(self, protocol: str, app: str, key: str,
                             remote: str) -> RecordingSink:
        self.requests.append((protocol, app, key, remote))
        await asyncio.sleep(0)  # a real gate looks the key up somewhere
        if key == "gate-bug-000":
            raise RuntimeError("the key store is down")
        if key not in self.keys:
            self.refused.append((key, "unknown"))
            raise PublishRefused("NetStream.Publish.BadName", "unknown stream key")
        if key in self.live:
            self.refused.append((key, "live"))
            raise PublishRefused("NetStream.Publish.BadName", "stream key is already live")
        self.live.add(key)
        sink = RecordingSink(key, self)
        self.sinks.setdefault(key, []).append(sink)
        async with self.opened:
            self.opened.notify_all()
        return sink

    async def live_sink(self, key: str) -> RecordingSink:
        """The key's first sink once a frame arrived in it (its publisher is live)."""
        async with self.opened:
            await self.opened.wait_for(lambda: key in self.sinks)
        sink = self.sinks[key][0]
        await sink.first_frame.wait()
        return sink

    def only_sink(self, key: str) -> RecordingSink:
        (sink,) = self.sinks[key]
        return sink


# --- media and tools -----------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    path: Path
    video_packets: list[dict[str, Any]]
    audio_packets: list[dict[str, Any]]
    counts: dict[str, int]
    avcc: bytes
    asc: bytes


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """2 s of 320x240 30 fps H.264 with B-frames, IDR every second, and stereo AAC, as FLV
    (the muxer ffmpeg also uses for RTMP, so ffprobe's millisecond times are the wire's)."""
    path = tmp_path_factory.mktemp("rtmp_ingest") / "clip.flv"
    subprocess.run([
        FFMPEG, "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-ac", "2",
        "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-x264-params", "bframes=2",
        "-g", "30", "-c:a", "aac", "-t", "2", str(path),
    ], check=True, timeout=60)  # fmt: skip
    out = subprocess.run([
        FFPROBE, "-v", "error", "-count_packets",
        "-show_entries", "stream=codec_type,nb_read_packets", "-of", "json", str(path),
    ], check=True, capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    counts = {s["codec_type"]: int(s["nb_read_packets"]) for s in json.loads(out)["streams"]}
    with av.open(str(path)) as container:
        avcc = bytes(container.streams.video[0].codec_context.extradata)
        asc = bytes(container.streams.audio[0].codec_context.extradata)
    return Clip(path, ffmpeg_tools.packets(path, "v:0"), ffmpeg_tools.packets(path, "a:0"),
                counts, avcc, asc)  # fmt: skip


def publish_cmd(clip: Path, port: int, key: str, *, realtime: bool = False) -> list[str]:
    url = f"rtmp://127.0.0.1:{port}/live/{key}"
    return [FFMPEG, "-nostdin", "-hide_banner", "-v", "error", *(["-re"] if realtime else []),
            "-i", str(clip), "-c", "copy", "-f", "flv", url]  # fmt: skip


async def publish(clip: Path, port: int, key: str,
                  realtime: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ffmpeg to the end (off the event loop, which serves the RTMP side)."""
    return await asyncio.to_thread(
        subprocess.run, publish_cmd(clip, port, key, realtime=realtime),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture
async def gate() -> RecordingGate:
    return RecordingGate()


@pytest.fixture
async def server(gate: RecordingGate) -> AsyncIterator[RtmpServer]:
    srv = RtmpServer(gate, port=0, timeout=5.0)
    await srv.start()
    yield srv
    await srv.stop()


def nal_units(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    assert pos == len(data)
    return out


def slice_type(frame: Frame) -> int:
    """slice_type % 5 of the first slice (0 P, 1 B, 2 I), read from the slice header."""
    nal = next(n for n in nal_units(frame.data) if n[0] & 0x1F in (1, 5))
    bits = "".join(f"{b:08b}" for b in nal[1:8])
    pos = 0

    def ue() -> int:
        nonlocal pos
        zeros = bits.index("1", pos) - pos
        value = int(bits[pos + zeros:pos + 2 * zeros + 1], 2) - 1
        pos += 2 * zeros + 1
        return value

    ue()  # first_mb_in_slice
    return ue() % 5


def annexb_parameter_sets(avcc: bytes) -> bytes:
    out, pos = bytearray(), 6
    for count_at in (5, None):
        count = avcc[5] & 0x1F if count_at else avcc[pos]
        pos += 0 if count_at else 1
        for _ in range(count):
            n = int.from_bytes(avcc[pos:pos + 2], "big")
            out += b"\x00\x00\x00\x01" + avcc[pos + 2:pos + 2 + n]
            pos += 2 + n
    return bytes(out)


def decoded_frame_count(avcc: bytes, frames: list[Frame]) -> int:
    codec = av.CodecContext.create("h264", "r")
    decoded = 0
    for i, frame in enumerate(frames):
        annexb = b"".join(b"\x00\x00\x00\x01" + n for n in nal_units(frame.data))
        if i == 0:
            annexb = annexb_parameter_sets(avcc) + annexb
        decoded += len(codec.decode(av.Packet(annexb)))
    decoded += len(codec.decode(None))
    return decoded


def assert_complete(sink: RecordingSink, clip: Clip) -> None:
    assert sink.tracks == [TrackConfig("video", "h264", clip.avcc, 1000),
                           TrackConfig("audio", "aac", clip.asc, 1000)]  # fmt: skip
    video, audio = sink.video(), sink.audio()
    assert len(video) == clip.counts["video"] == len(clip.video_packets)
    assert len(audio) == clip.counts["audio"] == len(clip.audio_packets)
    assert sum(f.keyframe for f in video) == sum("K" in p["flags"] for p in clip.video_packets)
    assert [f.keyframe for f in video] == ["K" in p["flags"] for p in clip.video_packets]
    assert [f.dts for f in video] == [p["dts"] for p in clip.video_packets]
    assert [f.cts for f in video] == [p["pts"] - p["dts"] for p in clip.video_packets]
    assert [f.dts for f in audio] == [p["dts"] for p in clip.audio_packets]
    assert [len(f.data) for f in video] == [int(p["size"]) for p in clip.video_packets]
    assert [len(f.data) for f in audio] == [int(p["size"]) for p in clip.audio_packets]
    for frames in (video, audio):
        assert all(a.dts < b.dts for a, b in zip(frames, frames[1:], strict=False))
    assert sink.close_calls == 1


# --- tests ---------------------------------------------------------------------------------


async def test_ffmpeg_publish_delivers_every_frame(
    server: RtmpServer, gate: RecordingGate, clip: Clip, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mediaorigin")
    key = KEYS[0]
    result = await publish(clip.path, server.port, f"{key}?token=abc")
    assert result.returncode == 0, result.stderr
    sink = gate.only_sink(key)
    await asyncio.wait_for(sink.closed.wait(), 5)
    assert gate.requests == [("rtmp", "live", key, "127.0.0.1")]  # key without its query
    assert_complete(sink, clip)

    video = sink.video()
    b_frames = [f for f in video if slice_type(f) == 1]
    assert b_frames and all(f.cts > 0 for f in b_frames)
    assert decoded_frame_count(sink.tracks[0].config, video) == len(video)
    assert caplog.records and not [r for r in caplog.records if key in r.getMessage()]


async def test_wrong_key_is_refused(
    server: RtmpServer, gate: RecordingGate, clip: Clip, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mediaorigin")
    result = await publish(clip.path, server.port, "not-a-valid-key-42")
    assert result.returncode != 0
    assert "unknown stream key" in result.stderr  # ffmpeg prints the onStatus description
    assert gate.refused == [("not-a-valid-key-42", "unknown")]
    assert gate.sinks == {}
    assert not [r for r in caplog.records if "not-a-valid-key-42" in r.getMessage()]


async def test_gate_failure_is_reported_to_the_client(
    server: RtmpServer, gate: RecordingGate, clip: Clip, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mediaorigin")
    result = await publish(clip.path, server.port, "gate-bug-000")
    assert result.returncode != 0
    assert "internal error" in result.stderr
    assert gate.sinks == {} and server.connection_count == 0
    assert any("the gate failed" in r.getMessage() for r in caplog.records)


async def test_second_publisher_on_a_live_key_is_refused(
    server: RtmpServer, gate: RecordingGate, clip: Clip
) -> None:
    key = KEYS[1]
    first = asyncio.create_task(publish(clip.path, server.port, key, realtime=True))
    await asyncio.wait_for(gate.live_sink(key), 10)
    second = await publish(clip.path, server.port, key)
    assert second.returncode != 0
    assert "already live" in second.stderr
    assert gate.refused == [(key, "live")]
    assert (await first).returncode == 0
    sink = gate.only_sink(key)
    await asyncio.wait_for(sink.closed.wait(), 5)
    assert_complete(sink, clip)


async def _leftover_tasks() -> set[asyncio.Task[Any]]:
    """Tasks other than this test's that have not finished within 2 s."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=2)
    return {t for t in others if not t.done()}


@pytest.mark.parametrize("sent", [b"", b"\x03" + bytes(100)], ids=["silent", "half-handshake"])
async def test_idle_client_is_dropped_after_the_timeout(sent: bytes) -> None:
    gate = RecordingGate()
    srv = RtmpServer(gate, port=0, timeout=0.5)
    await srv.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        start = time.monotonic()
        writer.write(sent)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the server hung up
        assert 0.4 < time.monotonic() - start < 3
        writer.close()
        await writer.wait_closed()
        assert await _leftover_tasks() == set()
        assert srv.connection_count == 0
    finally:
        await srv.stop()
    assert gate.requests == []


async def test_four_publishers_at_once(
    server: RtmpServer, gate: RecordingGate, clip: Clip
) -> None:
    results = await asyncio.gather(*(publish(clip.path, server.port, key) for key in KEYS))
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
    for key in KEYS:
        sink = gate.only_sink(key)
        await asyncio.wait_for(sink.closed.wait(), 5)
        assert_complete(sink, clip)


async def test_stop_closes_a_connected_publisher(gate: RecordingGate, clip: Clip) -> None:
    srv = RtmpServer(gate, port=0)
    await srv.start()
    proc = subprocess.Popen(publish_cmd(clip.path, srv.port, KEYS[2], realtime=True),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        sink = await asyncio.wait_for(gate.live_sink(KEYS[2]), 10)
        await srv.stop()
        assert sink.close_calls == 1
        assert srv.connection_count == 0
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=10)
        assert proc.returncode != 0  # its connection went away mid-stream
        await srv.stop()  # again: nothing left to do
        assert sink.close_calls == 1
        assert 0 < len(sink.video()) < 60
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def test_unsupported_codec_ends_the_publication(
    server: RtmpServer, gate: RecordingGate, caplog: pytest.LogCaptureFixture
) -> None:
    """flv.py refuses codecs the origin does not take: H.264 with MP3 audio is cut off."""
    caplog.set_level(logging.INFO, logger="mediaorigin")
    cmd = [
        FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "libmp3lame", "-t", "3",
        "-f", "flv", f"rtmp://127.0.0.1:{server.port}/live/{KEYS[0]}",
    ]  # fmt: skip
    result = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True,
                                     timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode != 0
    sink = gate.only_sink(KEYS[0])
    await asyncio.wait_for(sink.closed.wait(), 5)
    assert sink.close_calls == 1
    assert any("FLV audio codec MP3 is not supported" in r.getMessage() for r in caplog.records)


async def _raw_publisher(port: int, key: str) -> tuple[asyncio.StreamReader,
                                                         asyncio.StreamWriter]:
    """A minimal hand-driven RTMP client, up to NetStream.Publish.Start."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x03" + bytes(1536))
    await reader.readexactly(1 + 2 * 1536)
    encoder, decoder = ChunkEncoder(), ChunkDecoder()

    def command(name: str, txn: float, *args: Any, sid: int = 0) -> bytes:
        payload = amf0.encode(name, txn, *args)
        return encoder.encode(Message(20, payload, 0, sid, 8 if sid else 3))

    writer.write(bytes(1536) + command("connect", 1.0, {"app": "live"})
                 + command("createStream", 2.0, None)
                 + command("publish", 3.0, None, key, "live", sid=1))  # fmt: skip
    while True:
        for message in decoder.feed(await asyncio.wait_for(reader.read(4096), 5)):
            values = amf0.decode(message.payload) if message.type_id == 20 else []
            if values[:1] == ["onStatus"]:
                assert values[3]["code"] == "NetStream.Publish.Start"
                return reader, writer


@pytest.mark.parametrize("ending", ["protocol-error", "hang-up"])
async def test_publisher_lost_closes_the_sink_once(
    server: RtmpServer, gate: RecordingGate, ending: str
) -> None:
    reader, writer = await _raw_publisher(server.port, KEYS[1])
    sink = gate.only_sink(KEYS[1])
    if ending == "protocol-error":
        writer.write(b"\x47" + bytes(7))  # a type 1 header on a chunk stream never started
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the server hung up
    writer.close()
    await writer.wait_closed()
    await asyncio.wait_for(sink.closed.wait(), 5)
    assert await _leftover_tasks() == set()
    assert sink.close_calls == 1 and server.connection_count == 0


HEVC_PUBLISHER = """
import sys, av
with av.open(sys.argv[1]) as src, av.open(sys.argv[2], "w", format="flv") as out:
    streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
    for packet in src.demux():
        if packet.dts is not None:
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
"""


async def test_enhanced_rtmp_hevc_from_pyav(
    server: RtmpServer, gate: RecordingGate, tmp_path: Path
) -> None:
    """Debian's ffmpeg 5.1 cannot put HEVC in FLV; the FFmpeg 8.1 inside PyAV writes enhanced
    RTMP ('hvc1' FourCC). It runs in a child process: PyAV holds the GIL while it blocks on
    the socket, which would stall this event loop. The reference is the same muxer's output
    written to a file, read back by PyAV's FLV demuxer."""
    src, reference = tmp_path / "hevc.mp4", tmp_path / "hevc.flv"
    subprocess.run([
        FFMPEG, "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
        "testsrc2=size=320x240:rate=30", "-c:v", "libx265", "-x265-params",
        "log-level=error:bframes=2:keyint=30", "-tag:v", "hvc1", "-t", "1", str(src),
    ], check=True, timeout=60)  # fmt: skip
    url = f"rtmp://127.0.0.1:{server.port}/live/{KEYS[3]}"
    for out in (str(reference), url):
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", HEVC_PUBLISHER, str(src), out],
            capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0, result.stderr
    with av.open(str(reference)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "hevc"
        hvcc = bytes(stream.codec_context.extradata)
        packets = [(p.dts, p.pts - p.dts, p.is_keyframe, bytes(p))
                   for p in container.demux(stream) if p.size]  # fmt: skip
    sink = gate.only_sink(KEYS[3])
    await asyncio.wait_for(sink.closed.wait(), 5)
    assert sink.tracks == [TrackConfig("video", "hevc", hvcc, 1000)]
    assert [(f.dts, f.cts, f.keyframe, f.data) for f in sink.video()] == packets
    assert any(f.cts > 0 for f in sink.video())
