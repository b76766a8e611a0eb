"""Live lectures over RTMP, end to end: the ffmpeg CLI publishes into the origin's own RTMP
server, ffmpeg reads the live HLS (fMP4 and TS) and DASH back, LL-HLS blocking reload is
answered as the spec says, a publisher that drops and returns continues the same lecture,
and the recording lands in the library frame-identical to what was published.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import threading
import time
from array import array
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import av
import pytest
from library_fixtures import ADMIN_KEY, OTHER_ORG_KEY, STUDENT_KEY, auth, library_config
from media import run_ffmpeg
from origin_server import OriginThread

CLIP_SECONDS = 4
FPS = 30
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of 320x240 H.264 (B-frames, a keyframe every second) and stereo AAC."""
    out = tmp_path_factory.mktemp("live") / "lecture.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={FPS}", "-f", "lavfi",
                "-i", "sine=frequency=440:sample_rate=48000", "-ac", "2", "-c:v", "libx264",
                "-preset", "ultrafast", "-g", str(FPS), "-bf", "2", "-c:a", "aac",
                "-t", str(CLIP_SECONDS), str(out)])
    return out


def live_origin(tmp_path: Path, **live: object) -> OriginThread:
    settings = {"reconnect_grace": 1.0, "blocking_timeout": 1.5, **live}
    return OriginThread(library_config(tmp_path, live=settings)).start()


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[OriginThread]:
    o = live_origin(tmp_path)
    yield o
    o.stop()


def create(origin: OriginThread, key: str = ADMIN_KEY, **fields: object) -> dict:
    body = json.dumps({"title": "Week 3 live", **fields}).encode()
    r = origin.request("POST", "/api/live", body, {**auth(key), **JSON})
    assert r.status == 201, r.body
    return r.json()


def publish(stream: dict, source: Path, *, realtime: bool = True,
            key: str | None = None) -> subprocess.Popen[bytes]:
    url = f"{stream['rtmp']['url']}/{key or stream['rtmp']['streamKey']}"
    return subprocess.Popen(["ffmpeg", "-v", "error", *(["-re"] if realtime else []),
                             "-i", str(source), "-c", "copy", "-f", "flv", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def state(origin: OriginThread, live_id: str) -> dict:
    r = origin.get(f"/api/live/{live_id}", auth())
    assert r.status == 200, r.body
    return r.json()


def wait_until(predicate, timeout: float = 20.0, step: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def ended_with_recording(origin: OriginThread, live_id: str) -> str:
    found = wait_until(lambda: (s := state(origin, live_id))["recording"] and s, 30)
    assert found["state"] == "ended"
    return found["recording"]["mediaId"]



@contextlib.contextmanager
def lecture_in_turn(tmp_path: Path, sources: tuple[Path, ...], *, realtime: bool = False,
                    **fields: object) -> Iterator[tuple[OriginThread, str]]:
    """(origin, live id) of a live stream that `sources` were published to one after the
    other, each left to drop (reconnecting: a 5 s grace); the origin stops afterwards."""
    origin = live_origin(tmp_path, reconnect_grace=5.0)
    try:
        stream = create(origin, **fields)
        for source in sources:
            p = publish(stream, source, realtime=realtime)
            assert p.wait(30) == 0
            wait_until(lambda: state(origin, stream["id"])["state"] == "reconnecting")
        yield origin, stream["id"]
    finally:
        origin.stop()


def end_lecture(origin: OriginThread, live_id: str) -> str:
    """DELETE the stream; the media id of its recording once it is in the library."""
    assert origin.request("DELETE", f"/api/live/{live_id}", None, auth()).status == 200
    return ended_with_recording(origin, live_id)


def second_epoch(origin: OriginThread, live_id: str, rendition: str) -> bytes:
    """init-1 and every segment after it of a rendition: the second publisher's media."""
    text = origin.get(f"/live/{live_id}/{rendition}/index.m3u8").body.decode()
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    msns = re.findall(r"^(\d+)\.m4s", text.split('EXT-X-MAP:URI="init-1.mp4"')[1], re.M)
    assert msns
    return origin.get(f"/live/{live_id}/{rendition}/init-1.mp4").body + b"".join(
        origin.get(f"/live/{live_id}/{rendition}/{n}.m4s").body for n in msns)


def recording_file(origin: OriginThread, media_id: str) -> str:
    stored = origin.config.path(origin.config.storage.root) / "media" / media_id
    return str(next(stored.glob("g*/0.mp4")))

def probe_streams(source: str | bytes) -> list[dict]:
    """ffprobe's streams of a URL, or of an fMP4 given whole (init + fragments), with
    their packets counted."""
    data = source if isinstance(source, bytes) else None
    out = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-show_streams",
                          "-of", "json", "-" if data is not None else str(source)],
                         input=data, capture_output=True, timeout=60, check=True).stdout
    return json.loads(out)["streams"]


def framemd5(source: str, stream: str = "v:0", *, packets: bool = False) -> list[str]:
    """Decoded frame hashes of one stream (timestamps left out: only pictures/samples), or
    the hashes of its compressed packets."""
    copy = ["-c", "copy"] if packets else []
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", source, "-map", f"0:{stream}", *copy,
                          "-f", "framemd5", "-"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    # stream, dts, pts, duration, size, hash[, side data...]
    return [line.split(",")[5].strip() for line in out.splitlines()
            if line and not line.startswith("#")]


def test_rtmp_lecture_plays_live_and_becomes_a_frame_identical_recording(
        origin: OriginThread, clip: Path) -> None:
    stream = create(origin)
    live_id = stream["id"]
    assert stream["state"] == "idle" and stream["rtmp"]["streamKey"]
    assert stream["rtmp"]["url"].startswith("rtmp://127.0.0.1:")
    assert origin.get(f"/live/{live_id}/master.m3u8").json()["error"]["code"] == \
        "live_not_started"
    publisher = publish(stream, clip)
    try:
        live = wait_until(lambda: (s := state(origin, live_id))["state"] == "live"
                          and s.get("ingest", {}).get("keyframeInterval") and s)
        ingest = live["ingest"]
        assert ingest["protocol"] == "rtmp" and ingest["connected"]
        video_codec = ingest["codecs"]["video"]
        assert video_codec["codecString"].startswith("avc1.")
        assert (video_codec["codec"], video_codec["width"], video_codec["height"]) == \
            ("h264", 320, 240)
        assert ingest["codecs"]["audio"]["sampleRate"] == 48000
        assert ingest["keyframeInterval"] == 1.0
        wait_until(lambda: origin.get(f"/live/{live_id}/master.m3u8").status == 200)
        master = origin.get(f"/live/{live_id}/master.m3u8").body.decode()
        # LL-HLS is offered muxed (one request per part for video and audio together).
        assert f'CODECS="{video_codec["codecString"]},mp4a.40.2",RESOLUTION=320x240\n' \
            'av/index.m3u8\n' in master
        assert "EXT-X-MEDIA" not in master and "video/index.m3u8" not in master
        muxed = origin.get(f"/live/{live_id}/av/index.m3u8").body.decode()
        assert "#EXT-X-PRELOAD-HINT:TYPE=PART" in muxed
        assert "#EXT-X-RENDITION-REPORT" not in muxed  # no other muxed rendition
        part = re.findall(r'#EXT-X-PART:[^\n]*URI="([^"]+)"', muxed)[-1]
        pieces = [origin.get(f"/live/{live_id}/av/{name}").body
                  for name in ("init-0.mp4", part)]
        streams = probe_streams(b"".join(pieces))
        assert [(s["codec_name"], int(s["nb_read_packets"]) > 0) for s in streams] == \
            [("h264", True), ("aac", True)]
        video = origin.get(f"/live/{live_id}/video/index.m3u8").body.decode()
        assert re.search(r"#EXT-X-PART-INF:PART-TARGET=0\.5(0\d)?\n", video)
        assert "#EXT-X-PRELOAD-HINT:TYPE=PART" in video
        assert "#EXT-X-PROGRAM-DATE-TIME:" in video
        assert "#EXT-X-ENDLIST" not in video
        # The demo page offers the live lecture first.
        page = origin.get("/").body.decode()
        assert f'data-id="{live_id}" data-live="1"' in page
        # The live stream is watched while it is published: the viewer count says so.
        assert state(origin, live_id)["viewers"] >= 1
        assert publisher.wait(30) == 0
    finally:
        publisher.kill()
        publisher.wait()
    media_id = ended_with_recording(origin, live_id)
    # The live outputs hold every published frame, bit for bit (no re-encoding anywhere).
    source = framemd5(str(clip))
    assert len(source) == CLIP_SECONDS * FPS
    for entry in ("master.m3u8", "master-ts.m3u8", "manifest.mpd"):
        got = framemd5(origin.url(f"/live/{live_id}/{entry}"))
        assert got == source, entry
    assert framemd5(origin.url(f"/vod/{media_id}/master.m3u8")) == source
    audio = framemd5(str(clip), "a:0", packets=True)
    # The muxed rendition carries the audio bit for bit too (whole segments, after the end).
    assert framemd5(origin.url(f"/live/{live_id}/master.m3u8"), "a:0", packets=True) == audio
    recorded_audio = framemd5(recording_file(origin, media_id), "a:0", packets=True)
    assert recorded_audio == audio
    ended = state(origin, live_id)
    assert ended["state"] == "ended" and ended["endedAt"] >= ended["startedAt"]
    media = origin.get(f"/api/media/{media_id}", auth()).json()
    assert media["status"] == "ready" and media["title"] == "Week 3 live"
    assert abs(media["metadata"]["duration"] - CLIP_SECONDS) < 0.2


def test_ll_hls_playlists_follow_the_spec(origin: OriginThread, clip: Path) -> None:
    stream = create(origin)
    live_id = stream["id"]
    publisher = publish(stream, clip)
    try:
        wait_until(lambda: origin.get(f"/live/{live_id}/video/index.m3u8").status == 200)
        text = origin.get(f"/live/{live_id}/video/index.m3u8").body.decode()
        hint = re.search(r'PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.m4s"', text)
        assert hint
        msn, part = int(hint[1]), int(hint[2])
        # Blocking reload: held until the hinted part is listed, then answered at once.
        t0 = time.monotonic()
        r = origin.get(f"/live/{live_id}/video/index.m3u8?_HLS_msn={msn}&_HLS_part={part}")
        waited = time.monotonic() - t0
        assert r.status == 200
        assert f'URI="{msn}.{part}.m4s"' in r.body.decode()
        assert waited < 0.5 + 0.5  # one part duration plus slack
        assert "max-age" in r.headers["cache-control"]
        # The preload-hinted part itself is held until it exists.
        text = r.body.decode()
        hint = re.search(r'PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.m4s"', text)
        assert hint
        r = origin.get(f"/live/{live_id}/video/{hint[1]}.{hint[2]}.m4s")
        assert r.status == 200 and r.body[4:8] == b"styp"
        # Every part is at most PART-TARGET; rendition reports name the audio playlist.
        text = origin.get(f"/live/{live_id}/video/index.m3u8").body.decode()
        # Every part is at most PART-TARGET (the configured 0.5 s give or take the 1 ms
        # jitter of FLV timestamps) and at least 85 % of it but the last of a segment.
        target = float(re.search(r"PART-TARGET=([\d.]+)", text)[1])
        assert 0.5 <= target <= 0.502
        for segment in re.split(r"#EXTINF", text)[:-1]:
            durations = [float(d) for d in re.findall(r"EXT-X-PART:DURATION=([\d.]+)", segment)]
            assert durations and max(durations) <= target
            assert min(durations[:-1], default=target) >= 0.85 * target
        assert "#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\"" in text
        # ... and only the renditions listed beside it (not the muxed or the TS twins)
        assert re.findall(r'RENDITION-REPORT:URI="\.\./([^/]+)/', text) == ["audio"]
        assert re.search(r"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1\.50?\d?,"
                         r"CAN-SKIP-UNTIL=12\n", text)
        # Too far ahead, or a part without its segment number: 400 at once.
        last = int(re.findall(r"^(\d+)\.m4s", text, re.M)[-1]) if \
            re.findall(r"^(\d+)\.m4s", text, re.M) else 0
        r = origin.get(f"/live/{live_id}/video/index.m3u8?_HLS_msn={last + 10}")
        assert r.status == 400 and r.json()["error"]["code"] == "too_far_ahead"
        r = origin.get(f"/live/{live_id}/video/index.m3u8?_HLS_part=1")
        assert r.status == 400 and r.json()["error"]["code"] == "invalid_parameter"
        r = origin.get(f"/live/{live_id}/video/index.m3u8?_HLS_msn=x")
        assert r.status == 400
        assert publisher.wait(30) == 0
    finally:
        publisher.kill()
        publisher.wait()
    # The publisher is gone (within the reconnect grace): a wait for the next part times out
    # with 503, not a hang.
    text = origin.get(f"/live/{live_id}/video/index.m3u8").body.decode()
    if "#EXT-X-ENDLIST" not in text:
        nxt = re.search(r'PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.m4s"', text)
        if nxt:
            r = origin.get(f"/live/{live_id}/video/index.m3u8?_HLS_msn={int(nxt[1]) + 1}")
            assert r.status in (503, 200)
    ended_with_recording(origin, live_id)
    text = origin.get(f"/live/{live_id}/video/index.m3u8").body.decode()
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    assert "PRELOAD-HINT" not in text


def test_publisher_drop_and_return_continues_the_same_lecture(tmp_path: Path,
                                                              clip: Path) -> None:
    with lecture_in_turn(tmp_path, (clip, clip)) as (origin, live_id):
        text = origin.get(f"/live/{live_id}/video/index.m3u8").body.decode()
        assert text.count("#EXT-X-DISCONTINUITY\n") == 1
        assert 'EXT-X-MAP:URI="init-0.mp4"' in text and 'EXT-X-MAP:URI="init-1.mp4"' in text
        msns = [int(m) for m in re.findall(r"^(\d+)\.m4s", text, re.M)]
        assert msns == list(range(len(msns)))  # one sequence across the reconnect
        mpd = origin.get(f"/live/{live_id}/manifest.mpd").body.decode()
        assert mpd.count("<Period ") == 2
        media_id = end_lecture(origin, live_id)
        source = framemd5(str(clip))
        assert framemd5(origin.url(f"/vod/{media_id}/master.m3u8")) == source + source
        assert framemd5(origin.url(f"/live/{live_id}/master-ts.m3u8")) == source + source


def test_a_publisher_back_in_another_format_stays_in_the_recording(tmp_path: Path,
                                                                   clip: Path) -> None:
    """The lecturer comes back with another resolution and audio rate: live, a new epoch
    (discontinuity, its own init); in the recording, which has one format per track, that
    track is re-encoded whole, and every frame and both halves of the audio are there."""
    other = tmp_path / "other.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size=416x240:rate={FPS}", "-f", "lavfi",
                "-i", "sine=frequency=880:sample_rate=44100", "-ac", "1", "-c:v", "libx264",
                "-preset", "ultrafast", "-g", str(FPS), "-bf", "2", "-c:a", "aac",
                "-t", str(CLIP_SECONDS), str(other)])
    with lecture_in_turn(tmp_path, (clip, other)) as (origin, live_id):
        text = origin.get(f"/live/{live_id}/video/index.m3u8").body.decode()
        assert text.count("#EXT-X-DISCONTINUITY\n") == 1
        media_id = end_lecture(origin, live_id)
        recording = recording_file(origin, media_id)
        video, audio = probe_streams(recording)
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 240)
        assert int(video["nb_read_packets"]) == 2 * CLIP_SECONDS * FPS
        assert (audio["codec_name"], audio["sample_rate"], audio["channels"]) == \
            ("aac", "48000", 2)
        assert abs(float(audio["duration"]) - 2 * CLIP_SECONDS) < 0.1
        frames = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v",
                                 "-count_frames", "-show_entries", "stream=nb_read_frames",
                                 "-of", "csv=p=0", recording], capture_output=True, text=True,
                                timeout=60, check=True).stdout
        assert int(frames) == 2 * CLIP_SECONDS * FPS  # every one decodes
        media = origin.get(f"/api/media/{media_id}", auth()).json()
        assert abs(media["metadata"]["duration"] - 2 * CLIP_SECONDS) < 0.2


def test_a_publisher_back_without_audio_keeps_the_audio_track(tmp_path: Path,
                                                              clip: Path) -> None:
    """The lecturer comes back without a microphone: the lecture keeps its audio track,
    filled with silence, so the muxed rendition players are given still carries both tracks
    (a track without samples stalls them), and the recording's audio lasts the lecture."""
    silent_video = tmp_path / "camera-only.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={FPS}", "-c:v", "libx264",
                "-preset", "ultrafast", "-g", str(FPS), "-bf", "2", "-t", str(CLIP_SECONDS),
                str(silent_video)])
    with lecture_in_turn(tmp_path, (clip, silent_video)) as (origin, live_id):
        data = second_epoch(origin, live_id, "av")
        video, audio = probe_streams(data)
        assert int(video["nb_read_packets"]) == CLIP_SECONDS * FPS
        # 4 s of 1024-sample frames at 48 kHz, to the last video frame's end
        assert int(audio["nb_read_packets"]) == math.ceil(CLIP_SECONDS * 48000 / 1024)
        recording = recording_file(origin, end_lecture(origin, live_id))
        video, audio = probe_streams(recording)
        assert int(video["nb_read_packets"]) == 2 * CLIP_SECONDS * FPS
        assert abs(float(audio["duration"]) - 2 * CLIP_SECONDS) < 0.1
        assert _peak(recording, 0.5, CLIP_SECONDS - 0.5) > 0.05  # the sine (amplitude 1/8)
        assert _peak(recording, CLIP_SECONDS + 0.1, 2 * CLIP_SECONDS) == 0.0  # silence


def test_a_publisher_back_without_video_keeps_the_lecture_going(tmp_path: Path,
                                                                clip: Path) -> None:
    """The lecturer comes back with sound only: after 2 s of audio without a video frame
    the lecture's video track carries a black slate (its own init, after a discontinuity),
    so none of the audio is lost and players keep both tracks; the recording has every
    audio packet and a video track for the whole lecture."""
    voice = tmp_path / "voice.m4a"
    run_ffmpeg(["-f", "lavfi", "-i", "sine=frequency=660:sample_rate=48000", "-ac", "2",
                "-c:a", "aac", "-t", str(CLIP_SECONDS), str(voice)])
    with lecture_in_turn(tmp_path, (clip, voice)) as (origin, live_id):
        data = second_epoch(origin, live_id, "av")
        video, audio = probe_streams(data)
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 240)
        slate_frames = int(video["nb_read_packets"])  # 10 fps while the audio lasts
        assert abs(slate_frames - CLIP_SECONDS * 10) <= 1
        live_file = tmp_path / "second-epoch.mp4"
        live_file.write_bytes(data)
        voice_packets = framemd5(str(voice), "a:0", packets=True)
        carried = framemd5(str(live_file), "a:0", packets=True)
        assert carried[: len(voice_packets)] == voice_packets  # every one, in order
        assert len(carried) - len(voice_packets) <= 5  # then silence to the slate's end
        recording = recording_file(origin, end_lecture(origin, live_id))
        video, audio = probe_streams(recording)
        assert int(video["nb_read_packets"]) == CLIP_SECONDS * FPS + slate_frames
        assert abs(float(video["duration"]) - 2 * CLIP_SECONDS) < 0.15
        assert abs(float(audio["duration"]) - 2 * CLIP_SECONDS) < 0.2  # + the silent tail
        assert _peak(recording, CLIP_SECONDS + 0.5, 2 * CLIP_SECONDS - 0.5) > 0.05  # the voice

def _peak(path: str, start: float, end: float) -> float:
    """The largest sample magnitude of the audio between two times (PyAV decodes it)."""
    peak = 0.0
    with av.open(path) as c:
        for frame in c.decode(audio=0):
            if frame.time is None or not start <= frame.time < end:
                continue
            for plane in frame.planes:
                values = array("f", bytes(plane)[: 4 * frame.samples])
                peak = max(peak, max(values), -min(values))
    return peak


def test_stream_keys_are_checked_and_one_publisher_at_a_time(origin: OriginThread,
                                                             clip: Path) -> None:
    stream = create(origin)
    live_id = stream["id"]
    wrong = publish(stream, clip, key="not-the-key")
    assert wrong.wait(30) != 0
    assert state(origin, live_id)["state"] == "idle"
    first = publish(stream, clip)
    try:
        wait_until(lambda: state(origin, live_id)["state"] == "live")
        second = publish(stream, clip)
        assert second.wait(30) != 0  # refused while the first is live
        assert first.poll() is None
        assert state(origin, live_id)["ingest"]["connected"]
    finally:
        first.kill()
        first.wait()
        first.wait()
    # DELETE ends the stream and revokes the key.
    r = origin.request("DELETE", f"/api/live/{live_id}", None, auth())
    assert r.status == 200 and r.json()["state"] == "ended"
    again = publish(stream, clip)
    assert again.wait(30) != 0
    assert state(origin, live_id)["state"] == "ended"


def test_live_api_validation_roles_and_organizations(origin: OriginThread) -> None:
    assert origin.request("POST", "/api/live", b"{}", JSON).status == 401
    for body, field in ((b'{"title": ""}', "title"), (b'{"dvrWindow": -1, "title": "a"}',
                                                       "dvrWindow"),
                        (b'{"title": "a", "latencyMode": "ultra"}', "latencyMode"),
                        (b'{"title": "a", "record": "yes"}', "record"),
                        (b'{"title": "a", "color": 1}', "color")):
        r = origin.request("POST", "/api/live", body, {**auth(), **JSON})
        assert r.status == 422 and r.json()["error"]["message"].startswith(field), body
    r = origin.request("POST", "/api/live", b"{nope", {**auth(), **JSON})
    assert r.status == 400
    assert origin.request("POST", "/api/live", b'{"title": "x"}',
                          {**auth(STUDENT_KEY), **JSON}).status == 403
    mine = create(origin, key="test-instructor-key-org-a-0001")
    assert mine["organizationId"] == "org-a"
    # Keys are shown once: never in GET or list.
    got = origin.get(f"/api/live/{mine['id']}", auth()).json()
    assert "streamKey" not in got["rtmp"] and "token" not in got["whip"]
    assert origin.get(f"/api/live/{mine['id']}", auth(OTHER_ORG_KEY)).status == 404
    assert origin.get(f"/api/live/{mine['id']}", auth(STUDENT_KEY)).status == 200
    assert origin.request("DELETE", f"/api/live/{mine['id']}", None,
                          auth(STUDENT_KEY)).status == 403
    listed = origin.get("/api/live", auth(OTHER_ORG_KEY)).json()["items"]
    assert listed == []
    listed = origin.get("/api/live?state=idle", auth()).json()["items"]
    assert [s["id"] for s in listed] == [mine["id"]]
    assert origin.get("/api/live?state=nope", auth()).status == 422
    assert origin.get("/api/live/live_unknown", auth()).status == 404
    assert origin.get("/live/live_unknown/master.m3u8").status == 404


class _Hooks(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhooks_and_token_playback(tmp_path: Path, clip: Path) -> None:
    _Hooks.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hooks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    origin = OriginThread(library_config(
        tmp_path, live={"reconnect_grace": 0.5},
        webhooks={"urls": f"http://127.0.0.1:{server.server_port}/hook", "secret": "s3cret"},
        auth={"playback": "token"})).start()
    try:
        stream = create(origin)
        live_id = stream["id"]
        p = publish(stream, clip, realtime=False)
        assert p.wait(30) == 0
        # Token playback: nothing without one; the API's URLs carry one that works.
        assert origin.get(f"/live/{live_id}/master.m3u8").status in (401, 403)
        token = origin.get(f"/api/live/{live_id}/token", auth()).json()
        url = token["urls"]["hls"]
        assert "token=" in url
        wait_until(lambda: origin.get(url).status == 200)
        media_id = ended_with_recording(origin, live_id)
        kinds = wait_until(lambda: (k := [e["type"] for e in _Hooks.received])
                           and "recording.ready" in k and k)
        assert kinds[:3] == ["live.started", "live.ended", "recording.ready"]
        ready = next(e for e in _Hooks.received if e["type"] == "recording.ready")
        assert ready["data"] == {"id": live_id, "mediaId": media_id, "title": "Week 3 live"}
    finally:
        origin.stop()
        server.shutdown()
        server.server_close()


def test_clean_stop_while_live_keeps_everything_ingested(tmp_path: Path, clip: Path) -> None:
    origin = live_origin(tmp_path, reconnect_grace=30.0)
    stream = create(origin)
    live_id = stream["id"]
    p = publish(stream, clip, realtime=False)
    try:
        assert p.wait(30) == 0
        wait_until(lambda: state(origin, live_id)["state"] == "reconnecting")
    finally:
        origin.stop()
        p.kill()
        p.wait()
    again = live_origin(tmp_path)
    try:
        media_id = ended_with_recording(again, live_id)
        assert framemd5(again.url(f"/vod/{media_id}/master.m3u8")) == framemd5(str(clip))
    finally:
        again.stop()


def test_live_abr_ladder_is_aligned_with_the_source(tmp_path: Path) -> None:
    source = tmp_path / "hd.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={FPS}", "-f", "lavfi",
                "-i", "sine=frequency=440:sample_rate=48000", "-ac", "2", "-c:v", "libx264",
                "-preset", "ultrafast", "-g", str(FPS), "-bf", "2", "-c:a", "aac",
                "-t", str(CLIP_SECONDS), str(source)])
    origin = live_origin(tmp_path)
    try:
        stream = create(origin, ladder=["1080p", "360p"])
        live_id = stream["id"]
        assert stream["ladder"] == ["1080p", "360p"]
        p = publish(stream, source)
        try:
            assert p.wait(30) == 0
        finally:
            p.kill()
            p.wait()
        origin.request("DELETE", f"/api/live/{live_id}", None, auth())
        ended_with_recording(origin, live_id)
        master = origin.get(f"/live/{live_id}/master.m3u8").body.decode()
        variants = re.findall(r"RESOLUTION=(\d+x\d+)", master)
        assert variants == ["1280x720", "640x360"]  # never upscaled: no 1080p rung
        assert re.findall(r"^(.+)/index\.m3u8$", master, re.M) == ["av", "av-360p"]
        master_ts = origin.get(f"/live/{live_id}/master-ts.m3u8").body.decode()
        assert re.findall(r"RESOLUTION=(\d+x\d+)\n(.+)/index", master_ts) == \
            [("1280x720", "ts"), ("640x360", "ts-360p")]
        # The muxed and TS rungs carry the rung's pictures and the audio, every one of them.
        audio_packets = len(framemd5(str(source), "a:0", packets=True))
        for name in ("av-360p", "ts-360p"):
            streams = probe_streams(origin.url(f"/live/{live_id}/{name}/index.m3u8"))
            assert [(s["codec_name"], s.get("width"), int(s["nb_read_packets"]))
                    for s in streams] == \
                [("h264", 640, CLIP_SECONDS * FPS), ("aac", None, audio_packets)], name
        rung = origin.get(f"/live/{live_id}/360p/index.m3u8").body.decode()
        main = origin.get(f"/live/{live_id}/video/index.m3u8").body.decode()
        # Same segments, same durations (to a frame: each lists its own media's), every
        # rendition.
        rung_durations = [float(d) for d in re.findall(r"#EXTINF:([\d.]+)", rung)]
        main_durations = [float(d) for d in re.findall(r"#EXTINF:([\d.]+)", main)]
        assert len(rung_durations) == len(main_durations) == 2
        assert all(abs(a - b) < 1 / FPS for a, b in zip(rung_durations, main_durations,
                                                       strict=True))
        # Every 360p frame is there, decodable, and each segment starts with a keyframe.
        out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v",
                              "-show_entries", "frame=key_frame,width", "-of", "csv=p=0",
                              origin.url(f"/live/{live_id}/360p/index.m3u8")],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        frames = [line.split(",")[:2] for line in out.split()]
        assert len(frames) == CLIP_SECONDS * FPS
        assert {w for _, w in frames} == {"640"}
        for n in range(0, len(frames), 2 * FPS):  # 2 s segments of a 1 s GOP source
            assert frames[n][0] == "1"
        mpd = origin.get(f"/live/{live_id}/manifest.mpd").body.decode()
        assert mpd.count("<Representation ") == 3
    finally:
        origin.stop()


def test_a_slate_goes_down_the_ladder_too(tmp_path: Path) -> None:
    """With a live ladder, the slate of a publisher back without video is transcoded like
    the video it stands in for: the rung's twin lists the second epoch with its pictures."""
    source, voice = tmp_path / "hd.mp4", tmp_path / "voice.m4a"
    run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={FPS}", "-f", "lavfi",
                "-i", "sine=frequency=440:sample_rate=48000", "-ac", "2", "-c:v", "libx264",
                "-preset", "ultrafast", "-g", str(FPS), "-bf", "2", "-c:a", "aac",
                "-t", str(CLIP_SECONDS), str(source)])
    run_ffmpeg(["-f", "lavfi", "-i", "sine=frequency=660:sample_rate=48000", "-ac", "2",
                "-c:a", "aac", "-t", str(CLIP_SECONDS), str(voice)])
    with lecture_in_turn(tmp_path, (source, voice), realtime=True,
                         ladder=["360p"]) as (origin, live_id):
        data = second_epoch(origin, live_id, "av-360p")
        video, audio = probe_streams(data)
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", 640, 360)
        assert abs(int(video["nb_read_packets"]) - CLIP_SECONDS * 10) <= 1
        assert int(audio["nb_read_packets"]) >= len(framemd5(str(voice), "a:0", packets=True))
