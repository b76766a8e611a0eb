"""The live packager without the network: cutting into parts and segments, epochs and their
timeline, LL-HLS/TS playlists and the dynamic MPD, the DVR window on disk, and reading our own
fragments back. Media comes from real encoders (ffmpeg); frames are fed as an ingest would."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
from array import array
from dataclasses import replace
from pathlib import Path

import av
import pytest
from media import run_ffmpeg

from mediaorigin.ingest.frames import Frame, TrackConfig
from mediaorigin.live.channel import ChannelSettings, LiveChannel
from mediaorigin.live.epoch import Epoch
from mediaorigin.live.silence import silent_aac_frame
from mediaorigin.packaging.dash.live import live_mpd
from mediaorigin.packaging.fmp4.reader import read_fragments
from mediaorigin.packaging.fmp4.writer import init_segment, media_segment, muxed_segment
from mediaorigin.packaging.hls import live as hls
from mediaorigin.packaging.model import MediaError
from mediaorigin.packaging.mp4.sample_entries import aac_sample_entry, avc_dimensions


def _encode(out: Path, size: str = "320x240", gop: int = 30, seconds: float = 6,
            audio: bool = True, video: bool = True) -> Path:
    args: list[str] = []
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-ac", "2"]
    if video:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-g", str(gop), "-bf", "2"]
    if audio:
        args += ["-c:a", "aac"]
    run_ffmpeg([*args, "-t", str(seconds), str(out)])
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _encode(tmp_path_factory.mktemp("livepk") / "clip.mp4")


def feed(target: LiveChannel | Epoch, path: Path) -> list:
    """Send a file's tracks and packets as a publisher would; returns what on_frame returned."""
    out = []
    with av.open(str(path)) as c:
        for s in c.streams:
            codec = "h264" if s.type == "video" else "aac"
            target.on_track(TrackConfig(s.type, codec, bytes(s.codec_context.extradata),
                                        s.time_base.denominator))
        for p in c.demux():
            if p.size:
                out.append(target.on_frame(Frame(p.stream.type, p.dts, p.pts - p.dts,
                                                 p.is_keyframe, bytes(p))))
    return out


def test_sps_dimensions_for_common_sizes(tmp_path: Path) -> None:
    for size in ("320x240", "1920x1080", "854x480", "1280x720"):
        path = _encode(tmp_path / f"{size}.mp4", size=size, seconds=0.2, audio=False)
        with av.open(str(path)) as c:
            avcc = bytes(c.streams.video[0].codec_context.extradata)
        assert avc_dimensions(avcc) == tuple(int(x) for x in size.split("x"))
    with pytest.raises(MediaError):
        avc_dimensions(b"\x01\x64\x00\x1f\xff\xe0")  # no SPS
    with pytest.raises(MediaError):
        aac_sample_entry(b"\x00")


def test_epoch_cuts_parts_and_segments(clip: Path) -> None:
    epoch = Epoch(0, 0.0, target=2.0, part_target=0.5)
    parts = [p for batch in feed(epoch, clip) for p in batch] + epoch.finish()
    # Parts end at the frame nearest 0.5 s; segments (1 s GOPs) hold four.
    assert all(abs(p.duration - 0.5) <= 1 / 60 for p in parts)
    segments = [p for p in parts if p.new_segment]
    assert len(segments) == 3  # 6 s at 2 s, keyframes every second
    for p in parts:
        assert p.video is not None and p.audio is not None
        # A part that starts a segment starts with a keyframe; INDEPENDENT follows the first
        # sample.
        if p.new_segment:
            assert p.video.sync[0]
        assert p.independent == p.video.sync[0]
    # No frame is lost or duplicated, and audio parts end where video parts end (+- a frame).
    assert sum(len(p.video) for p in parts) == 180
    with av.open(str(clip)) as c:
        audio_packets = sum(1 for pk in c.demux(c.streams.audio[0]) if pk.size)
    assert sum(len(p.audio) for p in parts) == audio_packets
    for p in parts[:-1]:
        video_end = p.video.base_time + sum(p.video.durations)
        audio_end = p.audio.base_time + sum(p.audio.durations)
        assert abs(audio_end / 48000 - video_end / 90000) <= 1024 / 48000
    # Timestamps are continuous from zero at the first keyframe.
    assert parts[0].video.base_time == 0 and parts[0].start == 0
    for a, b in zip(parts, parts[1:], strict=False):
        assert a.video.base_time + sum(a.video.durations) == b.video.base_time


def test_epoch_with_offset_and_audio_only(tmp_path: Path) -> None:
    audio = _encode(tmp_path / "a.m4a", video=False, seconds=3)
    epoch = Epoch(2, 10.0, target=2.0, part_target=0.5)
    parts = [p for batch in feed(epoch, audio) for p in batch] + epoch.finish()
    assert parts and all(p.video is None and p.audio is not None for p in parts)
    assert parts[0].start == pytest.approx(10.0)
    assert parts[0].audio.base_time == 480000
    assert all(p.independent for p in parts)
    assert sum(1 for p in parts if p.new_segment) == 2


def test_fragments_read_back_to_the_same_samples(clip: Path) -> None:
    epoch = Epoch(0, 0.0, target=2.0, part_target=0.5)
    parts = [p for batch in feed(epoch, clip) for p in batch]
    run = parts[1].video
    data = media_segment(run, 7) + media_segment(parts[2].video, 8)
    back = read_fragments(data, run.track)
    assert back.base_time == run.base_time
    assert back.sizes == run.sizes + parts[2].video.sizes
    assert back.durations == run.durations + parts[2].video.durations
    assert back.sync == run.sync + parts[2].video.sync
    assert back.data == run.data + parts[2].video.data
    with pytest.raises(MediaError):
        read_fragments(data[:-10], run.track)


def test_muxed_fragments_carry_both_tracks_sample_for_sample(clip: Path) -> None:
    """A muxed init (two traks) and fragments with a traf per track, one mdat: a demuxer
    finds every video and audio sample, bytes and timestamps as cut. A part without audio
    leaves its traf out."""
    epoch = Epoch(0, 0.0, target=2.0, part_target=0.5)
    parts = [p for batch in feed(epoch, clip) for p in batch] + epoch.finish()
    video, audio = parts[0].video.track, parts[0].audio.track
    runs = [(p.video, p.audio) for p in parts[:6]]
    runs[3] = (runs[3][0], None)
    data = init_segment(video, audio) + b"".join(
        muxed_segment(list(pair), n) for n, pair in enumerate(runs, 1))
    got = _packets(data)
    for kind, index in (("video", 0), ("audio", 1)):
        want = []
        for pair in runs:
            run = pair[index]
            if run is None:
                continue
            at, dts = 0, run.base_time
            for size, duration in zip(run.sizes, run.durations, strict=True):
                want.append((dts, run.data[at : at + size]))
                at, dts = at + size, dts + duration
        assert got[kind] == want, kind
        assert len(want) > 10


def _decoded_audio(parts: list) -> tuple[int, float]:
    """(samples, peak amplitude) of the audio runs of `parts`, decoded from one fMP4."""
    track = parts[0].audio.track
    data = init_segment(track) + b"".join(
        media_segment(p.audio, n) for n, p in enumerate(parts, 1) if len(p.audio))
    samples, peak = 0, 0.0
    with av.open(io.BytesIO(data), format="mp4") as c:
        for frame in c.decode(audio=0):
            assert frame.format.name == "fltp"
            samples += frame.samples
            for plane in frame.planes:
                values = array("f", bytes(plane)[: 4 * frame.samples])
                peak = max(peak, max(values), -min(values))
    return samples, peak


def test_audio_that_stops_is_filled_with_silence(tmp_path: Path, clip: Path) -> None:
    """An epoch whose audio track gets no frames (a publisher back without its microphone
    keeps the lecture's audio track): parts wait AUDIO_WAIT once, then go out as they close,
    their audio silent frames that continue the track exactly to each part's end."""
    video_only = _encode(tmp_path / "v.mp4", seconds=6, audio=False)
    epoch = Epoch(1, 0.0, target=2.0, part_target=0.5, configs={"audio": _audio_config(clip)})
    released = feed(epoch, video_only)
    last = epoch.finish()
    # The first four parts wait until the video is 1.5 s past the first one's end, then
    # every part goes out as soon as it closes.
    assert [len(batch) for batch in released if batch] == [4] + [1] * 7
    assert next(i for i, batch in enumerate(released) if batch) == 61  # the frame at 2.033 s
    parts = [p for batch in released for p in batch] + last
    assert len(parts) == 12
    end = 0
    for p in parts:
        assert len(p.audio) > 0 and p.audio.base_time == end  # continuous from zero
        end = p.audio.base_time + sum(p.audio.durations)
        video_end = (p.video.base_time + sum(p.video.durations)) * 48000 // 90000
        assert video_end <= end < video_end + 1024
    samples, peak = _decoded_audio(parts)
    assert samples == end and peak == 0.0


def test_audio_gap_is_filled_and_late_audio_dropped(clip: Path) -> None:
    """Audio that stalls mid-epoch for 2.5 s and then arrives all at once: the parts that
    went out meanwhile carry silence, the late frames for them are dropped, the rest is
    carried; the audio timeline never overlaps and never leaves a gap of a frame."""
    frames: list[Frame] = []
    late: list[Frame] = []
    with av.open(str(clip)) as c:
        configs = {s.type: TrackConfig(s.type, "h264" if s.type == "video" else "aac",
                                       bytes(s.codec_context.extradata),
                                       s.time_base.denominator) for s in c.streams}
        for p in c.demux():
            if not p.size:
                continue
            f = Frame(p.stream.type, p.dts, p.pts - p.dts, p.is_keyframe, bytes(p))
            t = float(p.dts * p.time_base)
            if f.kind == "audio" and 1.0 <= t < 3.5:
                late.append(f)
                continue
            if f.kind == "video" and t >= 3.5 and late:
                frames += late  # the stalled audio turns up all at once
                late = []
            frames.append(f)
    epoch = Epoch(0, 0.0, target=2.0, part_target=0.5)
    for config in configs.values():
        epoch.on_track(config)
    parts = [p for f in frames for p in epoch.on_frame(f)] + epoch.finish()
    assert len(parts) == 12
    end = parts[0].audio.base_time  # where the clip's audio starts
    for p in parts:
        assert end <= p.audio.base_time < end + 1024
        end = p.audio.base_time + sum(p.audio.durations)
    silence = silent_aac_frame(configs["audio"].config)
    assert silence
    silent = [p for p in parts if p.audio.data == silence * len(p.audio)]
    assert 2 <= len(silent) <= 5  # the parts released while the audio was stalled
    samples, _ = _decoded_audio(parts)
    assert abs(samples - end) < 1024 * len(parts)



async def test_audio_without_video_carries_a_slate_until_the_video_comes(
        tmp_path: Path, clip: Path) -> None:
    """A publisher that announces video but sends only audio: after SLATE_WAIT the epoch
    carries a black slate in the video's size (10 fps, so that no audio is held back or
    lost); when the video frames come after all, a new epoch starts with them."""
    voice = _encode(tmp_path / "voice.m4a", seconds=3, video=False)
    channel = LiveChannel("live_s", ChannelSettings(), tmp_path / "s")
    channel.begin_epoch()
    with av.open(str(clip)) as c:
        for stream in c.streams:
            channel.on_track(TrackConfig(stream.type, "h264" if stream.type == "video"
                                         else "aac", bytes(stream.codec_context.extradata),
                                         stream.time_base.denominator))
    voice_packets = []
    with av.open(str(voice)) as c:
        for p in c.demux():
            if p.size:
                voice_packets.append(bytes(p))
                channel.on_frame(Frame("audio", p.dts, 0, True, bytes(p)))
    with av.open(str(clip)) as c:  # the same connection, its clock 3 s on
        for p in c.demux():
            if p.size:
                shift = 3 * p.time_base.denominator // p.time_base.numerator
                channel.on_frame(Frame(p.stream.type, p.dts + shift, p.pts - p.dts,
                                       p.is_keyframe, bytes(p)))
    await channel.end()
    assert sorted(channel.epochs) == [0, 1]
    slate, video = channel.epochs[0].tracks["video"], channel.epochs[1].tracks["video"]
    assert (slate.codec.width, slate.codec.height) == (320, 240)
    assert slate.codec.config != video.codec.config

    async def samples(name: str, epoch: int) -> list[bytes]:
        track = channel.epochs[epoch].tracks[name]
        out = []
        for seg in channel.window().segments:
            if seg.epoch == epoch:
                run = read_fragments(await channel.segment(name, seg.msn), track)
                at = 0
                for size in run.sizes:
                    out.append(bytes(run.data[at : at + size]))
                    at += size
        return out

    assert abs(len(await samples("video", 0)) - 30) <= 1  # 3 s of slate at 10 fps
    audio = await samples("audio", 0)
    silence = silent_aac_frame(channel.epochs[0].tracks["audio"].codec.config)
    # every packet of the voice, then silence up to the end of the slate's last frame
    assert audio[: len(voice_packets)] == voice_packets
    assert 0 < len(audio) - len(voice_packets) <= 5
    assert set(audio[len(voice_packets) :]) == {silence}
    assert len(await samples("video", 1)) == 180  # every frame of the clip



async def test_a_rendition_without_media_is_listed_as_gap(tmp_path: Path) -> None:
    """Audio that stops where no silent frame can fill it (HE-AAC): its parts are listed
    GAP=YES and its whole segments EXT-X-GAP (version 8), and are never served (404), while
    the video and the muxed rendition, whose first track is there, are listed as usual."""
    video_only = _encode(tmp_path / "v.mp4", seconds=6, audio=False)
    he_aac = bytes.fromhex("2b1188")  # HE-AAC (SBR), 24 kHz core, stereo
    assert silent_aac_frame(he_aac) is None
    channel = LiveChannel("live_g", ChannelSettings(), tmp_path / "g")
    channel.begin_epoch()
    channel.on_track(TrackConfig("audio", "aac", he_aac, 1000))
    feed(channel, video_only)
    w = channel.window()
    audio = hls.media(w, "audio", "")
    parts = re.findall(r"#EXT-X-PART:.*", audio)
    assert parts and all(p.endswith(",GAP=YES") for p in parts)
    complete = [s for s in w.segments if s.complete]
    assert audio.count("#EXT-X-GAP\n#EXTINF:") == len(complete) >= 2
    assert audio.startswith("#EXTM3U\n#EXT-X-VERSION:9\n")
    for name in ("video", "av"):
        text = hls.media(w, name, "")
        assert "GAP" not in text and text.count("#EXT-X-PART:") == len(parts)
    seg = complete[0]
    assert channel.part("audio", seg.msn, 0) is None
    assert await channel.segment("audio", seg.msn) is None
    assert channel.part("av", seg.msn, 0) is not None
    assert await channel.segment("video", seg.msn) is not None
    # TS lists its segments as usual (its first track, the video, is there) ...
    assert "GAP" not in hls.media(w, "ts", "", ts=True)
    await channel.end()
    # ... and a video rung that fell behind is a gap in its own playlist and its twins'.
    w = channel.window()
    for p in w.segments[0].parts:
        p.missing = p.missing | {"360p", "av-360p", "ts-360p"}
    ts = hls.media(w, "ts-360p", "", ts=True)
    assert ts.startswith("#EXTM3U\n#EXT-X-VERSION:8\n") and ts.count("#EXT-X-GAP") == 1

def _audio_config(clip: Path) -> TrackConfig:
    with av.open(str(clip)) as c:
        a = c.streams.audio[0]
        return TrackConfig("audio", "aac", bytes(a.codec_context.extradata),
                           a.time_base.denominator)


async def test_playlists_window_skip_and_disk(tmp_path: Path, clip: Path) -> None:
    channel = LiveChannel("live_x", ChannelSettings(dvr_window=0, window=3, memory_segments=1),
                          tmp_path / "live_x")
    for _ in range(3):  # three publishers, one after the other: three epochs
        channel.begin_epoch()
        feed(channel, clip)
        channel.publisher_gone()
    w = channel.window()
    complete = [s for s in w.segments if s.complete]
    assert [s.msn for s in complete] == [6, 7, 8]  # 9 segments made, the last 3 listed
    assert w.discontinuity_sequence == 2
    text = hls.media(w, "video", "token=t")
    assert "#EXT-X-MEDIA-SEQUENCE:6" in text and "#EXT-X-DISCONTINUITY-SEQUENCE:2" in text
    assert 'URI="init-2.mp4?token=t"' in text and "6.m4s?token=t" in text
    assert "#EXT-X-DISCONTINUITY\n" not in text  # every listed segment is in epoch 2
    ts = hls.media(w, "ts", "", ts=True)
    assert "EXT-X-PART" not in ts and "EXT-X-MAP" not in ts and "6.ts" in ts
    assert ts.splitlines()[1] == "#EXT-X-VERSION:3"
    # Segments beyond the memory window come from disk, identical; TS is rebuilt from them.
    await channel.end()
    first = await channel.segment("video", 6)
    assert first == (tmp_path / "live_x/e2/video/6.m4s").read_bytes()
    ts_bytes = await channel.ts_segment("ts", 6)
    assert ts_bytes[0] == 0x47 and len(ts_bytes) % 188 == 0
    out = tmp_path / "s.ts"
    out.write_bytes(ts_bytes)
    frames = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v",
                             "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0",
                             str(out)], capture_output=True, text=True, check=True).stdout
    assert int(frames.split()[0]) == 60
    # The muxed twin is made from the same tracks: from disk beyond the memory window, from
    # memory within it, with every video and audio sample of its segment.
    for msn in (6, 8):
        muxed = await channel.segment("av", msn)
        assert muxed is not None
        got = _packets(channel.init("av", 2) + muxed)
        for kind in ("video", "audio"):
            alone = _packets(channel.init(kind, 2) + await channel.segment(kind, msn))
            assert got[kind] == alone[kind] and len(alone[kind]) > 10
    assert await channel.segment("av", 5) is None  # no longer listed
    # A crowd asking for a new whole segment at once shares one run (the same bytes object);
    # it is kept while the segment is in memory, made again from disk each time beyond it.
    for name, get in (("av", channel.segment), ("ts", channel.ts_segment)):
        for msn, kept in ((8, True), (6, False)):
            crowd = await asyncio.gather(*(get(name, msn) for _ in range(20)))
            assert crowd[0] is not None and all(c is crowd[0] for c in crowd), (name, msn)
            assert ((await get(name, msn)) is crowd[0]) == kept, (name, msn)
    mpd = live_mpd(channel.window(), "", 0.0)
    assert 'type="static"' in mpd and mpd.count("<Period ") == 1
    # DASH has an adaptation set per kind: the muxed twin is for HLS only
    assert re.findall(r"<Representation id=\"(\w+)\"", mpd) == ["video", "audio"]


def _packets(mp4: bytes) -> dict[str, list[tuple[int, bytes]]]:
    """(dts, bytes) of every packet of an fMP4 given whole, by stream type."""
    got: dict[str, list[tuple[int, bytes]]] = {"video": [], "audio": []}
    with av.open(io.BytesIO(mp4), format="mp4") as c:
        for packet in c.demux():
            if packet.size:
                got[packet.stream.type].append((packet.dts, bytes(packet)))
    return got


async def test_delta_updates_skip_old_segments(tmp_path: Path, clip: Path) -> None:
    channel = LiveChannel("live_y", ChannelSettings(dvr_window=3600), tmp_path / "y")
    channel.begin_epoch()
    feed(channel, clip)
    w = channel.window()
    full = hls.media(w, "video", "")
    skipped = hls.media(w, "video", "", skip=True)
    assert "EXT-X-SKIP" not in full
    # 6 s of segments; CAN-SKIP-UNTIL is 12 s: nothing old enough to skip yet.
    assert "EXT-X-SKIP" not in skipped
    w.target_duration = 1  # 1 s targets: CAN-SKIP-UNTIL 6 s, and no segment starts before it
    skipped = hls.media(w, "video", "", skip=True)
    assert "EXT-X-SKIP" not in skipped
    w.segments[0].start -= 10  # now the first segment is older than 6 s: skipped
    skipped = hls.media(w, "video", "", skip=True)
    m = re.search(r"#EXT-X-SKIP:SKIPPED-SEGMENTS=(\d+)", skipped)
    assert m and int(m[1]) == 1
    assert not re.search(r"^0\.m4s$", skipped, re.M) and re.search(r"^1\.m4s$", skipped, re.M)
    await channel.end()


async def test_blocked_requests_time_out_and_wake_on_the_part(tmp_path: Path,
                                                              clip: Path) -> None:
    """Blocked requests have no timer each: they time out on the channel's tick (a quarter
    of the timeout here) and are released at once when what they wait for is listed."""
    channel = LiveChannel("live_t", ChannelSettings(blocking_timeout=0.4), tmp_path / "t")
    channel.begin_epoch()
    feed(channel, clip)
    wanted = hls.next_part(channel.window().segments[-1])
    assert not channel.has(*wanted)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with asyncio.timeout(3):  # a tick that never comes must fail, not hang
        results = await asyncio.gather(*(channel.wait_for(*wanted, 0.4) for _ in range(50)))
    waited = loop.time() - t0
    assert results == [False] * 50
    assert 0.4 <= waited < 0.4 + 0.1 + 0.15
    # A longer wait ends when the publisher leaves: its last part completes the segment.
    t0 = loop.time()
    waiters = [asyncio.ensure_future(channel.wait_for(*wanted, 5.0)) for _ in range(50)]
    await asyncio.sleep(0.05)
    channel.publisher_gone()
    assert await asyncio.gather(*waiters) == [True] * 50
    assert loop.time() - t0 < 0.5
    await channel.end()


@pytest.mark.parametrize("kind", ["video", "audio"])
async def test_one_track_streams_list_what_they_have(tmp_path: Path, kind: str) -> None:
    """Without audio there is no muxed twin (the master lists the video rendition itself);
    without video the masters list the audio; either way the TS twin carries the one track."""
    clip = _encode(tmp_path / "one.mp4", seconds=3, audio=kind == "audio",
                   video=kind == "video")
    channel = LiveChannel("live_1", ChannelSettings(), tmp_path / "one")
    channel.begin_epoch()
    feed(channel, clip)
    await channel.end()
    w = channel.window()
    assert sorted(r.name for r in w.renditions) == sorted([kind, "ts"])
    codec = "avc1" if kind == "video" else "mp4a"
    for ts, uri in ((False, f"{kind}/index.m3u8"), (True, "ts/index.m3u8")):
        master = hls.master(w, "", ts=ts)
        assert re.findall(r"^[^#].*$", master, re.M) == [uri]
        assert re.search(rf'CODECS="{codec}[^,"]*"', master)
        assert "AUDIO=" not in master and "EXT-X-MEDIA:" not in master
    out = tmp_path / "one.ts"
    out.write_bytes(await channel.ts_segment("ts", 0))
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json",
                            str(out)], capture_output=True, text=True, check=True).stdout
    assert [s["codec_type"] for s in json.loads(probe)["streams"]] == [kind]
    assert await channel.segment("av", 0) is None


async def test_rendition_reports_name_the_renditions_of_the_same_master(
        tmp_path: Path, clip: Path) -> None:
    """A muxed playlist reports the other muxed ones (a ladder rung's twin), a video or
    audio playlist the video and audio ones; TS twins, which have no parts, never."""
    channel = LiveChannel("live_r", ChannelSettings(), tmp_path / "r")
    channel.begin_epoch()
    feed(channel, clip)
    w = channel.window()
    av = next(r for r in w.renditions if r.name == "av")
    w.renditions.append(replace(av, name="av-360p"))  # as a ladder rung's twin is listed
    assert sorted(r.name for r in w.renditions) == ["audio", "av", "av-360p", "ts", "video"]

    def reported(rendition: str) -> list[str]:
        return re.findall(r'RENDITION-REPORT:URI="\.\./([^/]+)/', hls.media(w, rendition, ""))

    assert reported("av") == ["av-360p"]
    assert reported("av-360p") == ["av"]
    assert reported("video") == ["audio"] and reported("audio") == ["video"]
    assert "RENDITION-REPORT" not in hls.media(w, "ts", "", ts=True)
    await channel.end()
