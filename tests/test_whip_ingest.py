"""WHIP ingest end to end: a real aiortc publisher on 127.0.0.1 against add_whip_routes, with
a gate that records what a live channel would receive (TrackConfigs and Frames), then checks
that with PyAV: the H.264 decodes picture for picture, the AAC frame for frame, keyframes come
on schedule and audio and video share one clock.

Everything stays on loopback: the endpoint restricts aioice to 127.0.0.1 (module-wide, so the
test publisher too) and no STUN server is configured on either side.
"""

from __future__ import annotations

import array
import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from typing import Any, Literal

import av
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError

from mediaorigin.ingest.frames import Frame, PublishRefused, PublishSink, TrackConfig
from mediaorigin.ingest.reencode import H264Encoder, SessionClock
from mediaorigin.ingest.whip import WhipEndpoint
from mediaorigin.ingest.whip_http import MAX_OFFER_BYTES, add_whip_routes
from mediaorigin.origin.edge import edge
from mediaorigin.origin.metrics import OriginMetrics
from mediaorigin.packaging.mp4.sample_entries import avc_dimensions
from mediaorigin.packaging.ts.annexb import access_unit, avc_format

KEY = "s3cret-stream-key"
WHIP = web.AppKey("whip", WhipEndpoint)
KEYFRAME_INTERVAL = 1.0


# --- the consumer: a gate that records --------------------------------------------------------


class RecordingSink:
    """What one publish delivered, with the arrival time of each frame."""

    def __init__(self, changed: asyncio.Event) -> None:
        self.changed = changed
        self.tracks: list[TrackConfig] = []
        self.frames: list[Frame] = []
        self.arrivals: list[float] = []
        self.log: list[TrackConfig | Frame] = []  # both, in delivery order
        self.closes = 0

    def on_track(self, track: TrackConfig) -> None:
        assert self.closes == 0, "on_track after close"
        self.tracks.append(track)
        self.log.append(track)
        self.changed.set()

    def on_frame(self, frame: Frame) -> None:
        assert self.closes == 0, "on_frame after close"
        self.frames.append(frame)
        self.log.append(frame)
        self.arrivals.append(time.monotonic())
        self.changed.set()

    def close(self) -> None:
        self.closes += 1
        self.changed.set()

    def of(self, kind: str) -> list[Frame]:
        return [f for f in self.frames if f.kind == kind]

    def config(self, kind: str) -> TrackConfig:
        configs = [t for t in self.tracks if t.kind == kind]
        assert len(configs) == 1, configs
        return configs[0]

    def runs(self, kind: str) -> list[tuple[TrackConfig, list[Frame]]]:
        """Each configuration of this kind with the frames that followed it."""
        runs: list[tuple[TrackConfig, list[Frame]]] = []
        for item in self.log:
            if item.kind != kind:
                continue
            if isinstance(item, TrackConfig):
                runs.append((item, []))
            else:
                assert runs, "a frame before any TrackConfig"
                runs[-1][1].append(item)
        return runs

    def span(self, kind: str) -> float:
        """Seconds of media of this kind received so far."""
        frames = self.of(kind)
        if len(frames) < 2:
            return 0.0
        scale = 90_000 if kind == "video" else 48_000
        return (frames[-1].dts - frames[0].dts) / scale


class RecordingGate:
    """Accepts KEY for any live id, one publisher at a time; refuses ids in `busy`."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.sinks: dict[str, RecordingSink] = {}
        self.busy: set[str] = set()
        self.opened: list[tuple[str, str, str]] = []

    async def open_publisher(self, protocol: Literal["rtmp", "whip"], app: str, key: str,
                             remote: str) -> PublishSink:
        if key != KEY:
            raise PublishRefused("bad_key", "unknown stream key")
        live = self.sinks.get(app)
        if app in self.busy or (live is not None and live.closes == 0):
            raise PublishRefused("already_live", f"{app} is already live")
        self.opened.append((protocol, app, remote))
        self.sinks[app] = RecordingSink(self.changed)
        return self.sinks[app]

    async def until(self, condition: Callable[[], bool], timeout: float) -> None:
        """Wait (event-driven, no polling) until condition() holds after some delivery."""
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


# --- the publisher: synthetic camera and microphone -------------------------------------------


class MovingBar(VideoStreamTrack):
    """320x240 at 30 fps (aiortc paces it): a bar crossing the picture, shifting colours."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width, self.height, self.count = width, height, 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        luma = frame.planes[0]
        row = bytearray(b"\x20" * luma.line_size)
        x = (self.count * 6) % (self.width - 24)
        row[x : x + 24] = b"\xe0" * 24
        luma.update(bytes(row) * self.height)
        for plane in frame.planes[1:]:
            plane.update(bytes(((self.count * 3) & 0xFF,)) * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        self.count += 1
        return frame


class Sine(AudioStreamTrack):
    """440 Hz stereo at 48 kHz in 20 ms frames, paced in real time."""

    RATE, SAMPLES = 48_000, 960

    def __init__(self) -> None:
        super().__init__()
        one_second = (int(8000 * math.sin(2 * math.pi * 440 * i / self.RATE))
                      for i in range(self.RATE) for _channel in (0, 1))
        self.pcm = array.array("h", one_second).tobytes()  # 440 whole periods: loops cleanly
        self.sent = 0
        self.start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        wait = self.start + self.sent / self.RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        frame = av.AudioFrame(format="s16", layout="stereo", samples=self.SAMPLES)
        offset = (self.sent % self.RATE) * 4
        frame.planes[0].update(self.pcm[offset : offset + self.SAMPLES * 4])
        frame.pts, frame.sample_rate = self.sent, self.RATE
        frame.time_base = Fraction(1, self.RATE)
        self.sent += self.SAMPLES
        return frame


async def publish(client: TestClient, live_id: str, video_codec: str = "video/H264",
                  token: str = KEY) -> tuple[RTCPeerConnection, Any, str]:
    """Offer camera + microphone over WHIP; apply the answer when it is a 201."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = pc.addTransceiver(MovingBar(), direction="sendonly")
    codecs = RTCRtpSender.getCapabilities("video").codecs
    video.setCodecPreferences([c for c in codecs if c.mimeType == video_codec])
    pc.addTransceiver(Sine(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    assert set(candidate_addresses(pc.localDescription.sdp)) == {"127.0.0.1"}
    resp = await client.post(f"/live/{live_id}/whip", data=pc.localDescription.sdp,
                             headers={"Content-Type": "application/sdp", **bearer(token)})
    answer = await resp.text()
    if resp.status == 201:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return pc, resp, answer


async def close_publisher(pc: RTCPeerConnection) -> None:
    senders = [t.sender for t in pc.getTransceivers()]
    await pc.close()
    for sender in senders:
        if sender.track is not None:
            sender.track.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def candidate_addresses(sdp: str) -> list[str]:
    return [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]


# --- checking what arrived --------------------------------------------------------------------


def avcc_dimensions(config: bytes) -> tuple[int, int]:
    """The picture size an avcC's SPS announces (v1 record, 4-byte NAL lengths)."""
    assert config[0] == 1 and config[4] & 0x03 == 3, config[:6].hex()
    return avc_dimensions(config)


def decode_video(config: TrackConfig, frames: list[Frame]) -> list[av.VideoFrame]:
    """The frames as a player would get them from a TS packager: Annex B through PyAV."""
    fmt = avc_format(config.config)
    decoder = av.CodecContext.create("h264", "r")
    pictures: list[av.VideoFrame] = []
    for frame in frames:
        annexb = b"".join(bytes(p) for p in access_unit(fmt, memoryview(frame.data),
                                                        frame.keyframe))
        pictures += decoder.decode(av.Packet(annexb))
    pictures += decoder.decode(None)
    return pictures


def decode_audio(config: TrackConfig, frames: list[Frame]) -> list[av.AudioFrame]:
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = config.config
    decoded: list[av.AudioFrame] = []
    for frame in frames:
        decoded += decoder.decode(av.Packet(frame.data))
    return decoded


def check_video(sink: RecordingSink, size: tuple[int, int] | None = None) -> None:
    """Every run of video frames decodes, picture for picture, at its SPS's size (`size`
    when given: then there must be one run only)."""
    runs = sink.runs("video")
    assert runs and (size is None or len(runs) == 1), [c for c, _ in runs]
    video = sink.of("video")
    assert all(b.dts > a.dts for a, b in zip(video, video[1:], strict=False))
    assert all(f.cts == 0 for f in video)  # no B-frames
    for config, frames in runs:
        assert (config.codec, config.timescale) == ("h264", 90_000)
        dimensions = avcc_dimensions(config.config)
        assert size is None or dimensions == size
        assert frames and frames[0].keyframe
        pictures = decode_video(config, frames)
        assert len(pictures) == len(frames)
        assert {(p.width, p.height) for p in pictures} == {dimensions}


def check_audio(sink: RecordingSink) -> None:
    config = sink.config("audio")
    assert (config.codec, config.config, config.timescale) == ("aac", b"\x11\x90", 48_000)
    audio = sink.of("audio")
    assert [b.dts - a.dts for a, b in zip(audio, audio[1:], strict=False)] == \
        [1024] * (len(audio) - 1)
    decoded = decode_audio(config, audio)
    assert len(decoded) >= len(audio) - 1  # the decoder may hold back the last frame
    assert {d.samples for d in decoded} == {1024}
    assert {(d.sample_rate, d.layout.name) for d in decoded} == {(48_000, "stereo")}


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def gate() -> RecordingGate:
    return RecordingGate()


@pytest.fixture
async def whip(aiohttp_client: Callable[..., Any], gate: RecordingGate
               ) -> AsyncIterator[TestClient]:
    endpoint = WhipEndpoint(gate, ["127.0.0.1"], keyframe_interval=KEYFRAME_INTERVAL)
    app = web.Application(middlewares=[edge(OriginMetrics(), "")])
    app[WHIP] = endpoint
    add_whip_routes(app, WHIP)
    client = await aiohttp_client(app)
    assert client.host == "127.0.0.1"
    yield client
    await endpoint.close_all()
    assert endpoint.session_count == 0


# --- tests ------------------------------------------------------------------------------------


async def test_publish_h264_and_opus(whip: TestClient, gate: RecordingGate) -> None:
    posted = time.monotonic()
    pc, resp, answer = await publish(whip, "lecture-1")
    try:
        assert resp.status == 201, answer
        assert resp.content_type == "application/sdp"
        location = resp.headers["Location"]
        assert re.fullmatch(r"/live/lecture-1/whip/[\w-]{16,}", location), location
        assert resp.headers["ETag"]
        addresses = candidate_addresses(answer)
        assert addresses and set(addresses) == {"127.0.0.1"}, addresses
        assert gate.opened == [("whip", "lecture-1", "127.0.0.1")]

        sink = gate.sinks["lecture-1"]
        await gate.until(lambda: sink.span("video") >= 2.2 and sink.span("audio") >= 2.2, 9)
        assert sink.arrivals[0] - posted < 3.0

        # Only the token the session was published with ends it.
        assert (await whip.delete(location)).status == 401
        assert (await whip.delete(location, headers=bearer("other"))).status == 403
        assert sink.closes == 0
        delivered = len(sink.frames)
        resp = await whip.delete(location, headers=bearer(KEY))
        assert resp.status == 200
        assert sink.closes == 1
        assert (await whip.delete(location, headers=bearer(KEY))).status == 404
    finally:
        await close_publisher(pc)

    check_video(sink, (320, 240))
    check_audio(sink)
    video, audio = sink.of("video"), sink.of("audio")

    # A keyframe every KEYFRAME_INTERVAL seconds, to the frame (1/30 s = 3000 ticks).
    keys = [f.dts for f in video if f.keyframe]
    assert len(keys) >= 3, keys
    step = round(KEYFRAME_INTERVAL * 90_000)
    assert all(abs((b - a) - step) <= 3000 for a, b in zip(keys, keys[1:], strict=False)), keys

    # One clock: both tracks start near 0 (the first frame of the session is 0) ...
    v0, a0 = video[0].dts / 90_000, audio[0].dts / 48_000
    assert min(v0, a0) == 0 and max(v0, a0) < 0.5, (v0, a0)
    # ... and run in real time: each track's last dts against its arrival time.
    first_arrival = sink.arrivals[0]
    for kind, scale in (("video", 90_000), ("audio", 48_000)):
        last = max(i for i, f in enumerate(sink.frames) if f.kind == kind)
        lag = (sink.arrivals[last] - first_arrival) - sink.frames[last].dts / scale
        assert abs(lag) < 0.5, (kind, lag)
    assert abs(video[-1].dts / 90_000 - audio[-1].dts / 48_000) < 0.5

    # Closed once, and nothing delivered after the close.
    await asyncio.sleep(0)
    assert sink.closes == 1 and len(sink.frames) == delivered


async def test_vp8_is_reencoded_to_h264(whip: TestClient, gate: RecordingGate) -> None:
    pc, resp, answer = await publish(whip, "lecture-vp8", video_codec="video/VP8")
    try:
        assert resp.status == 201, answer
        video_section = answer[answer.index("m=video"):]
        assert "VP8/90000" in video_section and "H264" not in video_section
        sink = gate.sinks["lecture-vp8"]
        await gate.until(lambda: sink.span("video") >= 1.2 and bool(sink.of("audio")), 8)
    finally:
        await close_publisher(pc)
    # The publisher leaving (its connection closing) ends the session as a DELETE would.
    await gate.until(lambda: sink.closes > 0, 5)
    assert sink.closes == 1
    check_video(sink, (320, 240))
    check_audio(sink)


async def test_refusals(whip: TestClient, gate: RecordingGate) -> None:
    url = "/live/lecture-2/whip"
    sdp_headers = {"Content-Type": "application/sdp"}
    offer = "v=0\r\n"

    resp = await whip.post(url, data=offer, headers={"Content-Type": "text/plain", **bearer(KEY)})
    assert resp.status == 415
    assert (await resp.json())["error"]["code"] == "unsupported_media_type"

    resp = await whip.post(url, data=offer, headers=sdp_headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await whip.post(url, data=offer, headers={**sdp_headers, "Authorization": "Basic x"})
    assert resp.status == 401

    resp = await whip.post(url, data=offer, headers={**sdp_headers, **bearer("wrong")})
    assert resp.status == 403
    assert await resp.json() == {"error": {"code": "bad_key", "message": "unknown stream key"}}

    gate.busy.add("lecture-busy")
    resp = await whip.post("/live/lecture-busy/whip", data="v=0\r\nm=video 9 x 96\r\n",
                           headers={**sdp_headers, **bearer(KEY)})
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "already_live"

    resp = await whip.post(url, data="v=0\r\n" + "a=x\r\n" * MAX_OFFER_BYTES,
                           headers={**sdp_headers, **bearer(KEY)})
    assert resp.status == 413

    # The key is checked first: an offer we cannot take closes the sink the gate opened.
    for number, (body, code) in enumerate([
        ("hello", "bad_offer"),
        ("v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n", "no_media"),
        ("v=0\r\nm=video 9 x 96\r\nm=video 9 x 96\r\n", "too_many_tracks"),
        # SDP that parses but aiortc cannot answer (no ICE credentials, no codecs).
        ("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
         "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "bad_offer"),
    ]):
        live_id = f"lecture-bad-{number}"
        resp = await whip.post(f"/live/{live_id}/whip", data=body,
                               headers={**sdp_headers, **bearer(KEY)})
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"]["code"] == code
        assert gate.sinks[live_id].closes == 1

    resp = await whip.delete(f"{url}/no-such-session", headers=bearer(KEY))
    assert resp.status == 404
    resp = await whip.patch(f"{url}/no-such-session", data="a=candidate",
                            headers={"Content-Type": "application/trickle-ice-sdpfrag"})
    assert resp.status == 405
    error = (await resp.json())["error"]
    assert error["code"] == "trickle_not_supported" and "trickle" in error["message"]

    resp = await whip.options(url)
    assert resp.status == 204
    assert resp.headers["Accept-Post"] == "application/sdp"

    resp = await whip.get("/live/lecture-2/golive")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    assert "./whip" in page and KEY not in page


async def test_publisher_that_never_connects_is_dropped(
        aiohttp_client: Callable[..., Any], gate: RecordingGate) -> None:
    endpoint = WhipEndpoint(gate, ["127.0.0.1"], connect_timeout=0.5)
    app = web.Application()
    app[WHIP] = endpoint
    add_whip_routes(app, WHIP)
    client = await aiohttp_client(app)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver(Sine(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        resp = await client.post("/live/lecture-3/whip", data=pc.localDescription.sdp,
                                 headers={"Content-Type": "application/sdp", **bearer(KEY)})
        assert resp.status == 201
        # The answer is never applied: no ICE, no media. The key must not stay "live".
        sink = gate.sinks["lecture-3"]
        await gate.until(lambda: sink.closes > 0, 5)
        assert sink.closes == 1 and sink.frames == []
        assert endpoint.session_count == 0
        assert (await client.delete(resp.headers["Location"], headers=bearer(KEY))).status == 404
    finally:
        await close_publisher(pc)
        await endpoint.close_all()


def test_resolution_change_reopens_encoder() -> None:
    encoder = H264Encoder(keyframe_interval=1.0, preset="ultrafast")
    out: list[TrackConfig | Frame] = []
    for i, (w, h) in enumerate([(320, 240)] * 5 + [(160, 120)] * 5):
        frame = av.VideoFrame(w, h, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(((i * 20) & 0xFF,)) * plane.buffer_size)
        # The same time twice: dts must still increase.
        out += encoder.encode(frame, i // 2 / 30)
    configs = [o for o in out if isinstance(o, TrackConfig)]
    frames = [o for o in out if isinstance(o, Frame)]
    assert [avcc_dimensions(c.config) for c in configs] == [(320, 240), (160, 120)]
    assert isinstance(out[0], TrackConfig) and isinstance(out[6], TrackConfig)
    assert [f.keyframe for f in frames] == [True, False, False, False, False] * 2
    assert all(b.dts > a.dts for a, b in zip(frames, frames[1:], strict=False))


def test_session_clock_shares_one_origin() -> None:
    now = [100.0]
    session = SessionClock(now=lambda: now[0])
    video, audio = session.track(), session.track()
    tb_video, tb_audio = Fraction(1, 90_000), Fraction(1, 48_000)
    assert video.seconds(0, tb_video) == 0.0
    now[0] += 0.25  # audio starts a quarter second later, its own pts at 0
    assert audio.seconds(0, tb_audio) == 0.25
    now[0] += 0.75
    assert video.seconds(90_000, tb_video) == 1.0
    assert audio.seconds(36_000, tb_audio) == 1.0
    # A sender's timestamps jumping (restart, wrap) re-anchor the track on its arrival.
    now[0] += 0.02
    assert video.seconds(2**32, tb_video) == pytest.approx(1.02)
    assert video.seconds(2**32 + 3000, tb_video) == pytest.approx(1.02 + 1 / 30)
