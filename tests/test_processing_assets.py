"""Thumbnails, poster, sprite + WebVTT, preview clip, image variants and PDF thumbnails.

Frame exactness is judged against PyAV decoding every frame from the start (no seeking): a
thumbnail at t must look like the frame on screen at t, and unlike frames far from it (testsrc2
moves visibly every frame).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image, ImageChops, ImageStat

from mediaorigin.packaging.webvtt import parse_webvtt
from mediaorigin.processing.documents import document_info
from mediaorigin.processing.errors import Cancelled, ProcessingError
from mediaorigin.processing.images import image_variants
from mediaorigin.processing.thumbnails import (
    MAX_THUMBNAILS,
    make_poster,
    make_preview,
    make_sprite,
    make_thumbnails,
    thumbnail_times,
)

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
FFPROBE = shutil.which("ffprobe") or "/usr/bin/ffprobe"
DURATION = 8.0


def ffmpeg(out: Path, *args: str) -> Path:
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", *args, str(out)],
        check=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return out


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s 320x240 at 25 fps, keyframe every 2 s, B-frames (seeking by dts is not enough)."""
    d = tmp_path_factory.mktemp("assets")
    return ffmpeg(
        d / "v.mp4", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440", "-t", str(DURATION),
        "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "50", "-keyint_min", "50",
        "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2",
    )  # fmt: skip


@pytest.fixture(scope="module")
def video_mkv(video: Path) -> Path:
    return ffmpeg(video.with_suffix(".mkv"), "-i", str(video), "-c", "copy")


@pytest.fixture(scope="module")
def reference(video: Path) -> list[tuple[float, Image.Image]]:
    """Every frame of `video`, decoded straight through, with its presentation time."""
    with av.open(str(video)) as c:
        return [(float(f.time), f.to_image()) for f in c.decode(video=0)]


def frame_at(reference: list[tuple[float, Image.Image]], t: float) -> Image.Image:
    return [img for time, img in reference if time <= t + 1e-3][-1]


def diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute pixel difference, 0..255."""
    b = b.convert("RGB").resize(a.size, Image.Resampling.BOX)  # BOX ~ the area scaler used
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b)).mean) / 3


def assert_shows_frame(
    img: Image.Image, reference: list[tuple[float, Image.Image]], t: float
) -> None:
    """`img` is closer to the frame on screen at `t` than to the frames either side of it.

    testsrc2 is detailed, so JPEG and scaling leave a floor of a few levels even for the
    right frame; here the right frame scores at most ~0.72 of a neighbour 40 ms away (at
    240x180 and up: smaller pictures blur the difference, so the tests use at least that).
    """
    near = diff(img, frame_at(reference, t))
    others = [t + d for d in (-0.04, 0.04, 4.0) if 0 <= t + d < DURATION - 0.04]
    for other in others:
        assert near < 0.85 * diff(img, frame_at(reference, other)), (t, other)


# --- thumbnails ------------------------------------------------------------------------------


def test_thumbnail_times() -> None:
    assert thumbnail_times(10.0, count=4) == [2.0, 4.0, 6.0, 8.0]
    assert thumbnail_times(10.0, interval=3) == [0.0, 3.0, 6.0, 9.0]
    assert thumbnail_times(9.0, interval=3) == [0.0, 3.0, 6.0]
    assert len(thumbnail_times(36000.0, interval=1)) == MAX_THUMBNAILS
    assert len(thumbnail_times(100.0, count=5000)) == MAX_THUMBNAILS
    assert all(0 < t < 1.0 for t in thumbnail_times(1.0, count=7))
    assert thumbnail_times(0.0, count=3) == []
    with pytest.raises(ValueError):
        thumbnail_times(10.0)


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_thumbnails_show_the_frame_at_their_time(
    video: Path, video_mkv: Path, reference: list[tuple[float, Image.Image]],
    tmp_path: Path, container: str,
) -> None:  # fmt: skip
    src = video if container == "mp4" else video_mkv  # mkv: no index, keyframes guessed
    # Mid-GOP, on a keyframe, close pairs (decode forward) and a jump back (seek).
    times = [0.52, 1.96, 2.0, 2.12, 5.3, 7.9, 1.0, 0.0]
    thumbs = make_thumbnails(src, tmp_path, times, size=(320, 240))
    assert [t.time for t in thumbs] == times
    for th in thumbs:
        with Image.open(th.path) as img:
            assert img.format == "JPEG" and img.size == (th.width, th.height) == (320, 240)
            assert_shows_frame(img, reference, th.time)


def test_thumbnails_fit_size_keep_aspect_and_never_upscale(video: Path, tmp_path: Path) -> None:
    small = make_thumbnails(video, tmp_path / "s", thumbnail_times(DURATION, count=3), (100, 100))
    assert len(small) == 3
    for th in small:
        with Image.open(th.path) as img:
            assert img.size == (th.width, th.height) == (100, 75)
    big = make_thumbnails(video, tmp_path / "b", [1.0], size=(1920, 1080))
    assert (big[0].width, big[0].height) == (320, 240)


def test_poster(video: Path, reference: list[tuple[float, Image.Image]], tmp_path: Path) -> None:
    poster = make_poster(video, tmp_path / "poster.jpg", size=(240, 240))
    assert poster.time == pytest.approx(DURATION / 4)
    with Image.open(poster.path) as img:
        assert img.size == (240, 180)
        assert_shows_frame(img, reference, poster.time)


# --- sprite ----------------------------------------------------------------------------------


def test_sprite_sheets_and_vtt(
    video: Path, reference: list[tuple[float, Image.Image]], tmp_path: Path
) -> None:
    calls: list[float] = []
    sprite = make_sprite(video, tmp_path, interval=0.5, tile=(320, 180), columns=4, rows=2,
                         progress=calls.append)  # fmt: skip
    assert sprite.tiles == 16 and (sprite.tile_width, sprite.tile_height) == (240, 180)
    assert [p.name for p in sprite.images] == ["sprite-0.jpg", "sprite-1.jpg"]
    sheets = {p.name: Image.open(p) for p in sprite.images}
    try:
        assert all(img.size == (4 * 240, 2 * 180) for img in sheets.values())
        cues = parse_webvtt(sprite.vtt.read_text())
        assert len(cues) == 16
        assert cues[0].start == 0 and cues[-1].end == pytest.approx(DURATION, abs=0.05)
        for a, b in zip(cues, cues[1:], strict=False):
            assert a.end_ms == b.start_ms  # contiguous: no gap, no overlap
        for cue in cues:
            m = re.fullmatch(r"(sprite-\d+\.jpg)#xywh=(\d+),(\d+),(\d+),(\d+)", cue.text)
            assert m, cue.text
            name, (x, y, w, h) = m.group(1), map(int, m.groups()[1:])
            sheet = sheets[name]
            assert (w, h) == (240, 180)
            assert 0 <= x and x + w <= sheet.width and 0 <= y and y + h <= sheet.height
            tile = sheet.crop((x, y, x + w, y + h))
            assert_shows_frame(tile, reference, cue.start)
    finally:
        for img in sheets.values():
            img.close()
    assert calls[0] == 0 and calls[-1] == 100 and calls == sorted(calls)


def test_sprite_last_cue_partial_and_single_sheet(video: Path, tmp_path: Path) -> None:
    sprite = make_sprite(video, tmp_path, interval=3.0)
    cues = parse_webvtt(sprite.vtt.read_text())
    assert [(c.start, c.end) for c in cues] == [(0, 3), (3, 6), (6, pytest.approx(8, abs=0.05))]
    with Image.open(sprite.images[0]) as img:
        assert img.size == (3 * sprite.tile_width, sprite.tile_height)


def test_cancel_stops_sprite(video: Path, tmp_path: Path) -> None:
    seen: list[float] = []

    def progress(p: float) -> None:
        seen.append(p)
        if p > 20:
            raise Cancelled()

    with pytest.raises(Cancelled):
        make_sprite(video, tmp_path, interval=0.25, progress=progress)
    assert 20 < seen[-1] < 100
    assert not (tmp_path / "sprite.vtt").exists()


# --- preview ---------------------------------------------------------------------------------


def test_preview_clip(video: Path, tmp_path: Path) -> None:
    out = make_preview(video, tmp_path / "preview.mp4", seconds=6, height=120)
    info = ffprobe(out)
    assert float(info["format"]["duration"]) == pytest.approx(6.0, abs=0.1)
    streams = info["streams"]
    assert [s["codec_type"] for s in streams] == ["video"]  # silent
    assert (streams[0]["codec_name"], streams[0]["width"], streams[0]["height"]) == (
        "h264", 160, 120,
    )  # fmt: skip
    tall = make_preview(video, tmp_path / "tall.mp4", seconds=2, height=1080)
    assert ffprobe(tall)["streams"][0]["height"] == 240  # never upscaled


def test_preview_cancel_leaves_no_file(video: Path, tmp_path: Path) -> None:
    def progress(p: float) -> None:
        if p > 10:
            raise Cancelled()

    with pytest.raises(Cancelled):
        make_preview(video, tmp_path / "p.mp4", progress=progress)
    assert not (tmp_path / "p.mp4").exists()


def test_video_stages_refuse_audio_only(tmp_path: Path) -> None:
    audio = ffmpeg(tmp_path / "a.m4a", "-f", "lavfi", "-i", "sine", "-t", "1", "-c:a", "aac")
    with pytest.raises(ProcessingError) as e:
        make_thumbnails(audio, tmp_path, [0.5])
    assert e.value.code == "no_streams"


# --- images ----------------------------------------------------------------------------------


def test_image_variants_sizes_and_no_upscale(tmp_path: Path) -> None:
    src = tmp_path / "photo.jpg"
    Image.effect_noise((1000, 500), 40).convert("RGB").save(src)
    variants = image_variants(src, tmp_path / "out")
    assert [(v.width, v.height) for v in variants] == [(640, 320), (320, 160)]
    for v in variants:
        with Image.open(v.path) as img:
            assert (img.format, img.size) == ("JPEG", (v.width, v.height))
        assert v.size == v.path.stat().st_size
    small = tmp_path / "small.png"
    Image.new("RGB", (200, 100), "navy").save(small)
    only = image_variants(small, tmp_path / "small")
    assert [(v.width, v.height) for v in only] == [(200, 100)]


def test_image_variants_apply_exif_orientation(tmp_path: Path) -> None:
    src = tmp_path / "rotated.jpg"
    base = Image.new("RGB", (300, 200), "white")
    base.paste((255, 0, 0), (0, 0, 150, 200))  # left half red before rotation
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise: the red half ends up on top
    base.save(src, exif=exif)
    (v,) = image_variants(src, tmp_path / "out", widths=(100,))
    assert (v.width, v.height) == (100, 150)
    with Image.open(v.path) as img:
        assert img.getexif().get(0x0112) is None  # metadata not carried over
        r, g, _ = img.convert("RGB").getpixel((50, 20))
        assert r > 200 and g < 60


def test_image_variants_keep_alpha_as_png(tmp_path: Path) -> None:
    src = tmp_path / "logo.png"
    Image.new("RGBA", (800, 400), (0, 128, 0, 100)).save(src)
    variants = image_variants(src, tmp_path / "out", widths=(640, 320))
    assert [v.path.suffix for v in variants] == [".png", ".png"]
    with Image.open(variants[0].path) as img:
        assert img.mode == "RGBA" and img.size == (640, 320)


def test_broken_image_is_corrupt(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ProcessingError) as e:
        image_variants(tmp_path / "x.jpg", tmp_path / "out")
    assert e.value.code == "corrupt"


# --- documents -------------------------------------------------------------------------------


def test_document_info(tmp_path: Path) -> None:
    pdf = tmp_path / "doc.pdf"
    pages = [Image.new("RGB", (612, 792), c) for c in ("red", "green", "blue")]
    pages[0].save(pdf, save_all=True, append_images=pages[1:])
    info = document_info(pdf, tmp_path / "thumb.jpg", size=(320, 320))
    assert info.pages == 3
    with Image.open(info.thumbnail) as img:
        assert img.format == "JPEG" and img.size == (info.width, info.height)
        assert info.height == 320 and info.width == pytest.approx(320 * 612 / 792, abs=1)
        r, g, b = img.convert("RGB").getpixel((info.width // 2, info.height // 2))
        assert r > 200 and g < 60 and b < 60  # page 1 is the red one


def test_document_corrupt(tmp_path: Path) -> None:
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog")
    with pytest.raises(ProcessingError) as e:
        document_info(tmp_path / "bad.pdf", tmp_path / "t.jpg")
    assert e.value.code == "corrupt"
