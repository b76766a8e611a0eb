"""The live ABR ladder with real decoders and encoders: a 720p30 clip with B-frames in,
360p/540p rungs out, on the source's timeline and keyframes."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import av
import pytest
from media import run_ffmpeg

from mediaorigin.ingest.frames import Frame, TrackConfig
from mediaorigin.live.ladder import LiveLadder, LiveRung
from mediaorigin.packaging.mp4.sample_entries import avc_dimensions

FPS = 30
SECONDS = 4

# Not in the VOD ladder: 720p's bitrate scaled by pixel count, as plan_ladder does.
RUNG_540P = LiveRung("540p", 540, 1_400_000)

Item = TrackConfig | Frame


def make_clip(path: Path, size: str, seconds: int) -> Path:
    """H.264 with B-frames (as a publisher's x264 makes it), an IDR every second."""
    run_ffmpeg([
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={FPS}:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", str(FPS),
        "-keyint_min", str(FPS), "-sc_threshold", "0", "-pix_fmt", "yuv420p", path,
    ])  # fmt: skip
    return path


def read_clip(path: Path, offset: int = 0) -> tuple[TrackConfig, list[Frame]]:
    """What an ingest would hand on: the avcC and AVCC access units in decode order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base.numerator == 1
        config = TrackConfig("video", "h264", bytes(stream.codec_context.extradata),
                             stream.time_base.denominator)
        frames = [Frame("video", p.dts + offset, p.pts - p.dts, p.is_keyframe, bytes(p))
                  for p in container.demux(stream) if p.size]
    return config, frames


def by_rung(items: list[tuple[str, Item, float]]) -> dict[str, list[Item]]:
    out: dict[str, list[Item]] = {}
    for name, item, _ in items:
        out.setdefault(name, []).append(item)
    return out


def decode(config: TrackConfig, frames: list[Frame]) -> list[tuple[int, int]]:
    """Picture sizes PyAV decodes from an avcC and AVCC frames (as a player's demuxer would)."""
    codec = av.CodecContext.create("h264", "r")
    codec.extradata = config.config
    sizes = []
    for f in [*frames, None]:
        packet = None
        if f is not None:
            packet = av.Packet(f.data)
            packet.pts = packet.dts = f.dts
        sizes += [(p.width, p.height) for p in codec.decode(packet)]
    return sizes


@pytest.fixture(scope="module")
def clip720(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("ladder") / "720p.mp4", "1280x720", SECONDS)


def run_ladder(rungs: list[LiveRung], feed: list[Item], pace: float = 0.0
               ) -> tuple[list[tuple[str, Item, float]], dict[int, float], float]:
    """Feed items (every `pace` seconds, 0 = all at once), close; return emitted items with
    their emit time, the on_frame time per source pts, and the wall time."""
    emitted: list[tuple[str, Item, float]] = []
    fed: dict[int, float] = {}
    ladder = LiveLadder(rungs, lambda name, item: emitted.append((name, item, time.monotonic())))
    start = time.monotonic()
    for i, item in enumerate(feed):
        if isinstance(item, TrackConfig):
            ladder.on_track(item)
            continue
        if pace:
            time.sleep(max(0.0, start + i * pace - time.monotonic()))
        fed[item.dts + item.cts] = time.monotonic()
        ladder.on_frame(item)
    ladder.close()
    return emitted, fed, time.monotonic() - start


def test_rungs_keep_source_timeline_and_keyframes(clip720: Path) -> None:
    config, frames = read_clip(clip720)
    source_pts = sorted(f.dts + f.cts for f in frames)
    source_keys = sorted(f.dts + f.cts for f in frames if f.keyframe)
    assert len(source_pts) == FPS * SECONDS and len(source_keys) == SECONDS
    assert any(f.cts for f in frames)  # B-frames: decode order is not presentation order

    threads = threading.active_count()
    rungs = [RUNG_540P, *LiveLadder.rungs_for(720, ["360p"])]
    emitted, _, wall = run_ladder(rungs, [config, *frames])
    assert threading.active_count() == threads

    out = by_rung(emitted)
    assert sorted(out) == ["360p", "540p"]
    for name, size in (("360p", (640, 360)), ("540p", (960, 540))):
        configs = [i for i in out[name] if isinstance(i, TrackConfig)]
        assert out[name][0] == configs[0] and len(configs) == 1
        assert configs[0].timescale == config.timescale and configs[0].codec == "h264"
        assert avc_dimensions(configs[0].config) == size
        rung_frames = [i for i in out[name] if isinstance(i, Frame)]
        assert [f.dts for f in rung_frames] == source_pts  # exact, strictly increasing
        assert all(f.cts == 0 for f in rung_frames)
        assert [f.dts for f in rung_frames if f.keyframe] == source_keys
        assert decode(configs[0], rung_frames) == [size] * len(source_pts)
    print(f"\nladder 720p -> 540p+360p (veryfast): {len(frames) / wall:.1f} fps")


def test_latency_at_real_time(clip720: Path) -> None:
    config, frames = read_clip(clip720)
    rungs = [RUNG_540P, *LiveLadder.rungs_for(720, ["360p"])]
    emitted, fed, _ = run_ladder(rungs, [config, *frames], pace=1 / FPS)
    for name in ("360p", "540p"):
        delays = sorted(t - fed[i.dts] for n, i, t in emitted if n == name
                        and isinstance(i, Frame))
        assert len(delays) == len(frames)
        p95 = delays[int(0.95 * (len(delays) - 1))]
        print(f"\n{name} latency: median {statistics.median(delays) * 1000:.0f} ms,"
              f" p95 {p95 * 1000:.0f} ms")
        # Decoder reordering (B-frames) plus one encode per rung; far below the 2 s backlog.
        assert p95 < 1.0


def test_new_source_size_resends_rung_config(clip720: Path, tmp_path: Path) -> None:
    config, frames = read_clip(clip720)
    frames = frames[: FPS * 2]
    end = max(f.dts + f.cts for f in frames) + config.timescale // FPS
    config43, frames43 = read_clip(make_clip(tmp_path / "43.mp4", "960x720", 1), offset=end)
    assert config43.timescale == config.timescale
    # The same config again (RTMP publishers repeat it) changes nothing.
    feed = [config, *frames[:FPS], config, *frames[FPS:], config43, *frames43]
    emitted, _, _ = run_ladder([LiveRung("360p", 360, 600_000)], feed)

    items = by_rung(emitted)["360p"]
    configs = [(n, i) for n, i in enumerate(items) if isinstance(i, TrackConfig)]
    assert [avc_dimensions(c.config) for _, c in configs] == [(640, 360), (480, 360)]
    switch = configs[1][0]
    assert items[switch + 1].keyframe and items[switch + 1].dts == end
    pts = sorted(f.dts + f.cts for f in frames + frames43)
    assert [i.dts for i in items if isinstance(i, Frame)] == pts


def test_rungs_for_never_upscales() -> None:
    assert LiveLadder.rungs_for(720, ["1080p", "720p", "360p"]) == [
        LiveRung("360p", 360, 600_000)]
    assert LiveLadder.rungs_for(1080, ["360p", "720p"]) == [
        LiveRung("720p", 720, 2_500_000), LiveRung("360p", 360, 600_000)]
    assert LiveLadder.rungs_for(240, ["360p", "240p"]) == []
    with pytest.raises(ValueError, match="unknown rung"):
        LiveLadder.rungs_for(720, ["999p"])


def test_close_twice_leaves_no_thread() -> None:
    threads = threading.active_count()
    ladder = LiveLadder([LiveRung("360p", 360, 600_000)], lambda name, item: None)
    assert threading.active_count() == threads + 1
    ladder.close()
    ladder.close()
    assert threading.active_count() == threads
    ladder.on_frame(Frame("video", 0, 0, True, b""))  # after close: ignored


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        LiveLadder([], lambda name, item: None)
    with pytest.raises(ValueError, match="preset"):
        LiveLadder([LiveRung("360p", 360, 600_000)], lambda name, item: None, preset="quick")
