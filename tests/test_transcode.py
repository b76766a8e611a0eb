"""The ABR ladder transcoder, judged by ffprobe and by decoding its output.

Sources are made with the ffmpeg CLI per module (small: 640x360, 6 s, 25 fps, B-frames, stereo
AAC). The packager relies on keyframes at identical times in every rendition, so that is
checked packet by packet, as are faststart, durations, frame counts and cleanup on failure.
"""

from __future__ import annotations

import json
import struct
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import pytest
from ffmpeg_tools import FFMPEG, FFPROBE
from PIL import Image, ImageChops, ImageStat

from mediaorigin.processing.errors import Cancelled, ProcessingError
from mediaorigin.processing.ladder import Rung, parse_bitrate, plan_ladder
from mediaorigin.processing.transcode import (
    AudioSettings,
    Rendition,
    VideoSettings,
    transcode_audio_ladder,
    transcode_ladder,
)
from mediaorigin.processing.watermark import Watermark

X264_BFRAMES = ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-x264-params",
                "bframes=2", "-pix_fmt", "yuv420p"]  # fmt: skip


def ffmpeg(*args: str | Path) -> None:
    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y", *map(str, args)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def make_av(path: Path, size: str = "640x360", seconds: int = 6, rate: int = 25,
            vf: list[str] | None = None) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
           "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
           *(vf or []), *X264_BFRAMES, "-g", "40", "-c:a", "aac", "-ac", "2", path)  # fmt: skip
    return path


def probe(path: Path, *args: str) -> dict:
    out = subprocess.run([FFPROBE, "-v", "error", "-of", "json", *args, str(path)],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return json.loads(out)


def stream(path: Path, selector: str) -> dict:
    entries = ("stream=codec_name,width,height,channels,sample_rate,duration,nb_read_packets,"
               "bit_rate")
    streams = probe(path, "-select_streams", selector, "-count_packets",
                    "-show_entries", entries)["streams"]  # fmt: skip
    assert len(streams) == 1, f"{path.name} {selector}: {streams}"
    return streams[0]


def video_packets(path: Path) -> list[tuple[float, bool]]:
    """(pts_time, keyframe) per video packet, in presentation order."""
    packets = probe(path, "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags")
    times = [(float(p["pts_time"]), "K" in p["flags"]) for p in packets["packets"]]
    return sorted(times)


def keyframes(path: Path) -> list[float]:
    return [t for t, key in video_packets(path) if key]


def top_level_boxes(path: Path) -> list[str]:
    boxes, data, pos = [], path.read_bytes(), 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        boxes.append(kind.decode())
        pos += size if size else len(data)
    return boxes


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sources")
    src = {
        "main": make_av(d / "main.mp4"),
        "small": make_av(d / "small.mp4", size="480x270", seconds=3),
        "long": make_av(d / "long.mp4", seconds=10),
        # Every third frame for the first 3 s, then all of them: variable frame rate.
        "vfr": make_av(d / "vfr.mp4", vf=["-vf", r"select=not(mod(n\,3))+gt(n\,75)",
                                          "-fps_mode", "vfr"]),  # fmt: skip
    }
    # Audio 0.5 s after the video: the output pads silence so both start at 0 and stay in sync.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=3", "-itsoffset", "0.5",
           "-f", "lavfi", "-i", "sine=sample_rate=44100:duration=3", *X264_BFRAMES, "-c:a", "aac",
           "-ac", "2", d / "late.mp4")  # fmt: skip
    src["late_audio"] = d / "late.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100:duration=4", "-ac", "2",
           "-c:a", "libmp3lame", "-b:a", "128k", d / "audio.mp3")  # fmt: skip
    src["mp3"] = d / "audio.mp3"
    ffmpeg("-i", src["main"], "-c", "copy", "-movflags", "+faststart", d / "fs.mp4")
    (d / "truncated.mp4").write_bytes((d / "fs.mp4").read_bytes()[:150_000])
    src["truncated"] = d / "truncated.mp4"
    (d / "garbage.mp4").write_bytes(bytes(range(256)) * 400)
    src["garbage"] = d / "garbage.mp4"
    return src


@pytest.fixture(scope="module")
def ladder(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
           ) -> tuple[list[Rendition], list[float]]:
    progress: list[float] = []
    rungs = plan_ladder(640, 360, ["1080p", "360p", "240p"])
    out = tmp_path_factory.mktemp("ladder")
    done = transcode_ladder(sources["main"], out, rungs, VideoSettings(), AudioSettings(),
                            progress=progress.append)  # fmt: skip
    return done, progress


# --- the plan -----------------------------------------------------------------------------------


def test_parse_bitrate() -> None:
    assert parse_bitrate("5000k") == 5_000_000
    assert parse_bitrate("5M") == 5_000_000
    assert parse_bitrate("800000") == 800_000
    assert parse_bitrate(64_000) == 64_000
    assert parse_bitrate("1.5M") == 1_500_000
    for bad in ("fast", "", "-5k", "5G", 0, True):
        with pytest.raises(ProcessingError) as err:
            parse_bitrate(bad)  # type: ignore[arg-type]
        assert err.value.code == "bad_config"


def test_plan_never_upscales_and_keeps_aspect() -> None:
    rungs = plan_ladder(1920, 1080, ["240p", "1080p", "720p"], {"720p": "3M"})
    assert [(r.name, r.width, r.height) for r in rungs] == [
        ("1080p", 1920, 1080), ("720p", 1280, 720), ("240p", 426, 240)]  # fmt: skip
    assert rungs[1].video_bitrate == 3_000_000 and rungs[0].video_bitrate == 5_000_000

    small = plan_ladder(480, 270, ["1080p", "720p", "480p", "240p"])
    assert [(r.name, r.width, r.height) for r in small] == [("270p", 480, 270),
                                                           ("240p", 426, 240)]  # fmt: skip
    only = plan_ladder(320, 181, ["1080p", "720p"])
    assert [(r.name, r.width, r.height) for r in only] == [("180p", 318, 180)]
    # Anamorphic DV: 720x480 stored, 16:9 displayed.
    dv = plan_ladder(720, 480, ["480p"], sample_aspect_ratio=Fraction(32, 27))
    assert (dv[0].width, dv[0].height) == (854, 480)


@pytest.mark.parametrize("call", [
    lambda: plan_ladder(640, 360, ["4k"]),
    lambda: plan_ladder(640, 360, ["360p"], {"999p": "1M"}),
    lambda: plan_ladder(640, 360, ["360p"], {"360p": "lots"}),
    lambda: plan_ladder(640, 360, []),
    lambda: VideoSettings(codec="vp9"),
    lambda: VideoSettings(preset="turbo"),
    lambda: VideoSettings(keyframe_interval=0),
    lambda: AudioSettings(codec="opus"),
    lambda: AudioSettings(channels=6),
    lambda: Watermark(),
    lambda: Watermark(text="x", position="middle"),
])  # fmt: skip
def test_bad_config(call: object) -> None:
    with pytest.raises(ProcessingError) as err:
        call()  # type: ignore[operator]
    assert err.value.code == "bad_config"


# --- the ladder -----------------------------------------------------------------------------


def test_renditions_are_h264_aac_at_planned_sizes(ladder: tuple[list[Rendition], list[float]],
                                                  sources: dict[str, Path]) -> None:
    done, _ = ladder
    assert [(r.name, r.width, r.height) for r in done] == [("360p", 640, 360), ("240p", 426, 240)]
    src_video = stream(sources["main"], "v:0")
    for r in done:
        assert r.path.name == f"{r.name}.mp4" and r.size_bytes == r.path.stat().st_size
        v, a = stream(r.path, "v:0"), stream(r.path, "a:0")
        assert (v["codec_name"], v["width"], v["height"]) == ("h264", r.width, r.height)
        assert (a["codec_name"], a["channels"], a["sample_rate"]) == ("aac", 2, "48000")
        assert abs(float(v["duration"]) - float(src_video["duration"])) <= 0.04
        assert abs(float(a["duration"]) - 6.0) < 0.05
        assert v["nb_read_packets"] == src_video["nb_read_packets"] == "150"
        boxes = top_level_boxes(r.path)
        assert boxes.index("moov") < boxes.index("mdat"), boxes  # faststart
    assert not list(done[0].path.parent.glob("*.partial"))


def test_keyframes_every_interval_in_every_rendition(
        ladder: tuple[list[Rendition], list[float]]) -> None:
    done, _ = ladder
    for r in done:
        packets = video_packets(r.path)
        assert packets[0][0] == 0.0  # first frame at pts 0
        assert keyframes(r.path) == [0.0, 2.0, 4.0]


def test_progress_increases_to_100(ladder: tuple[list[Rendition], list[float]]) -> None:
    _, progress = ladder
    assert progress == sorted(progress) and progress[-1] == 100.0
    assert all(0 <= p <= 100 for p in progress)


def test_small_source_is_not_upscaled(sources: dict[str, Path], tmp_path: Path) -> None:
    rungs = plan_ladder(480, 270, ["1080p", "720p", "480p", "240p"])
    done = transcode_ladder(sources["small"], tmp_path, rungs, VideoSettings(), AudioSettings())
    assert [(stream(r.path, "v:0")["width"], stream(r.path, "v:0")["height"]) for r in done] == [
        (480, 270), (426, 240)]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["240p.mp4", "270p.mp4"]


def test_vfr_source_keyframes_aligned(sources: dict[str, Path], tmp_path: Path) -> None:
    src_times = [t for t, _ in video_packets(sources["vfr"])]
    rungs = plan_ladder(640, 360, ["360p", "240p"])
    done = transcode_ladder(sources["vfr"], tmp_path, rungs, VideoSettings(), AudioSettings())
    # The first frame at or after each 2 s boundary, the same in both renditions.
    expected = sorted({min(t for t in src_times if t >= b - 1e-6) for b in (0, 2, 4)})
    for r in done:
        assert [round(t, 3) for t, _ in video_packets(r.path)] == [round(t, 3) for t in src_times]
        assert [round(t, 3) for t in keyframes(r.path)] == [round(t, 3) for t in expected]
    assert expected[1] != 2.0  # the source really is VFR around the boundary


def test_framerate_conversion(sources: dict[str, Path], tmp_path: Path) -> None:
    rungs = plan_ladder(640, 360, ["240p"])
    done = transcode_ladder(sources["main"], tmp_path, rungs, VideoSettings(framerate=15),
                            AudioSettings(channels=1, sample_rate=44_100))  # fmt: skip
    v, a = stream(done[0].path, "v:0"), stream(done[0].path, "a:0")
    assert v["nb_read_packets"] == "90"
    assert keyframes(done[0].path) == [0.0, 2.0, 4.0]
    assert (a["channels"], a["sample_rate"]) == (1, "44100")


def test_late_audio_is_padded_to_start_with_video(sources: dict[str, Path],
                                                  tmp_path: Path) -> None:
    rungs = plan_ladder(320, 180, ["240p"])
    done = transcode_ladder(sources["late_audio"], tmp_path, rungs, VideoSettings(),
                            AudioSettings())  # fmt: skip
    src_audio_start = float(probe(sources["late_audio"], "-select_streams", "a:0",
                                  "-show_entries", "stream=start_time")["streams"][0]["start_time"])
    a = stream(done[0].path, "a:0")
    assert src_audio_start > 0.4
    assert abs(float(a["duration"]) - (src_audio_start + 3.0)) < 0.06


def test_bitrate_roughly_honoured(sources: dict[str, Path], tmp_path: Path) -> None:
    rungs = [Rung("360p", 360, 400_000, 64_000)]
    done = transcode_ladder(sources["long"], tmp_path, rungs, VideoSettings(), AudioSettings())
    bitrate = int(stream(done[0].path, "v:0")["bit_rate"])
    assert 0.6 * 400_000 <= bitrate <= 1.4 * 400_000, bitrate


def test_cancel_from_progress_leaves_nothing(sources: dict[str, Path], tmp_path: Path) -> None:
    def cancel(_: float) -> None:
        raise Cancelled()

    rungs = plan_ladder(640, 360, ["360p", "240p"])
    with pytest.raises(Cancelled):
        transcode_ladder(sources["main"], tmp_path, rungs, VideoSettings(), AudioSettings(),
                         progress=cancel)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["truncated", "garbage"])
def test_corrupt_source(sources: dict[str, Path], tmp_path: Path, name: str) -> None:
    rungs = plan_ladder(640, 360, ["360p", "240p"])
    with pytest.raises(ProcessingError) as err:
        transcode_ladder(sources[name], tmp_path, rungs, VideoSettings(), AudioSettings())
    assert err.value.code == "corrupt"
    assert list(tmp_path.iterdir()) == []


def test_audio_only_ladder(sources: dict[str, Path], tmp_path: Path) -> None:
    progress: list[float] = []
    done = transcode_audio_ladder(sources["mp3"], tmp_path, [64_000, 128_000], AudioSettings(),
                                  progress=progress.append)  # fmt: skip
    assert [r.name for r in done] == ["audio-128k", "audio-64k"]
    for r in done:
        a = stream(r.path, "a:0")
        assert (a["codec_name"], a["channels"], a["sample_rate"]) == ("aac", 2, "48000")
        assert abs(float(a["duration"]) - 4.0) < 0.1
        assert probe(r.path, "-show_entries", "stream=codec_type")["streams"] == [
            {"codec_type": "audio"}]  # fmt: skip
    assert done[0].size_bytes > done[1].size_bytes
    assert progress[-1] == 100.0


# --- watermark -------------------------------------------------------------------------------


def frame_at(path: Path, index: int) -> Image.Image:
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_image().convert("L")
    raise AssertionError(f"{path} has fewer than {index + 1} frames")


def mean_diff(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int]) -> float:
    return ImageStat.Stat(ImageChops.difference(a.crop(box), b.crop(box))).mean[0]


def test_watermark_changes_only_its_corner(sources: dict[str, Path], tmp_path: Path) -> None:
    rungs = plan_ladder(640, 360, ["360p"])
    plain = transcode_ladder(sources["main"], tmp_path / "plain", rungs, VideoSettings(),
                             AudioSettings())[0]  # fmt: skip
    mark = Watermark(text="MEDIAORIGIN", position="bottom-right", opacity=0.9, scale=0.3)
    marked = transcode_ladder(sources["main"], tmp_path / "marked", rungs, VideoSettings(),
                              AudioSettings(), watermark=mark)[0]  # fmt: skip
    a, b = frame_at(plain.path, 30), frame_at(marked.path, 30)
    corner = (int(640 * 0.65), int(360 * 0.8), 640, 360)
    elsewhere = (0, 0, 400, 250)
    assert mean_diff(a, b, corner) > 10
    assert mean_diff(a, b, elsewhere) < 2
