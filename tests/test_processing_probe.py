"""Probe, validate and passthrough on generated uploads (ffmpeg CLI, Pillow; nothing committed).

Probe fields are judged against ffprobe, an independent reader; classification must follow the
bytes, so files are also tested under misleading names.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mediaorigin.processing.errors import ProcessingError
from mediaorigin.processing.passthrough import check_passthrough, keyframe_times, passthrough_ok
from mediaorigin.processing.probe import Probe, probe_file
from mediaorigin.processing.validate import Limits, foreign_signature, validate

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
FFPROBE = shutil.which("ffprobe") or "/usr/bin/ffprobe"
TESTSRC = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"]
SINE = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
AAC = ["-c:a", "aac", "-ac", "2", "-b:a", "96k"]


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


def jpeg_with_comment_at(offset: int, payload: bytes, size: tuple[int, int] = (64, 48)) -> bytes:
    """A valid JPEG whose COM segment puts `payload` exactly at byte `offset`."""
    buf = io.BytesIO()
    Image.new("RGB", size, "orange").save(buf, "JPEG")
    jpeg = buf.getvalue()
    pad = offset - 6  # SOI (2) + COM marker (2) + length (2)
    body = b" " * pad + payload
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("uploads")
    f: dict[str, Path] = {}
    f["mp4"] = ffmpeg(d / "av.mp4", *TESTSRC, *SINE, "-t", "4", *H264, "-g", "50", *AAC)
    f["faststart"] = ffmpeg(d / "fs.mp4", "-i", str(f["mp4"]), "-c", "copy",
                            "-movflags", "+faststart")  # fmt: skip
    f["mkv"] = ffmpeg(d / "av.mkv", "-i", str(f["mp4"]), "-c", "copy")
    f["long_gop"] = ffmpeg(
        d / "long_gop.mp4", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-t", "20",
        *H264, "-g", "1000", "-keyint_min", "1000", "-sc_threshold", "0",
    )  # fmt: skip
    f["mpeg4_mp3"] = ffmpeg(d / "mpeg4.mp4", *TESTSRC, *SINE, "-t", "2", "-c:v", "mpeg4",
                            "-c:a", "libmp3lame", "-ac", "2")  # fmt: skip
    f["m4a"] = ffmpeg(d / "audio.m4a", *SINE, "-t", "3", *AAC)
    f["mp3"] = ffmpeg(d / "audio.mp3", *SINE, "-t", "3", "-c:a", "libmp3lame", "-ac", "2")
    f["mp3_script"] = ffmpeg(d / "script.mp3", *SINE, "-t", "1", "-c:a", "libmp3lame",
                             "-metadata", "title=<script>alert(1)</script>")  # fmt: skip
    for name, fmt in (("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP"), ("gif", "GIF")):
        f[name] = d / f"still.{name}"
        Image.new("RGB", (64, 48), "teal").save(f[name], fmt)
    f["wide_png"] = d / "wide.png"
    Image.new("RGB", (20000, 16), "white").save(f["wide_png"])
    f["tiny_png"] = d / "tiny.png"
    Image.new("RGB", (8, 8), "white").save(f["tiny_png"])
    f["pdf"] = d / "doc.pdf"
    pages = [Image.new("RGB", (612, 792), c) for c in ("red", "green", "blue")]
    pages[0].save(f["pdf"], save_all=True, append_images=pages[1:])
    f["text"] = d / "notes.txt"
    f["text"].write_text("just some text\nnothing to see here\n" * 50)
    f["random"] = d / "random.mp4"
    f["random"].write_bytes(os.urandom(200_000))
    # Misleading names: content decides.
    f["mp4_as_jpg"] = d / "movie.jpg"
    shutil.copy(f["mp4"], f["mp4_as_jpg"])
    f["png_as_mp4"] = d / "picture.mp4"
    shutil.copy(f["png"], f["png_as_mp4"])
    # Truncated uploads: moov at the end (lost) and moov first (samples lost).
    for key in ("mp4", "faststart", "mkv"):
        data = f[key].read_bytes()
        f[f"cut_{key}"] = d / f"cut_{f[key].name}"
        f[f"cut_{key}"].write_bytes(data[: int(len(data) * 0.3)])
    # Polyglots.
    f["jpeg_pdf"] = d / "jpeg_pdf.jpg"
    f["jpeg_pdf"].write_bytes(jpeg_with_comment_at(100, b"%PDF-1.4\n"))
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("evil.html", "<html><script>alert(1)</script></html>")
    f["png_zip"] = d / "png_zip.png"
    f["png_zip"].write_bytes(f["png"].read_bytes() + zbuf.getvalue())
    return f


# --- probe -----------------------------------------------------------------------------------


def test_probe_video_matches_ffprobe(files: dict[str, Path]) -> None:
    for key, fmt in (("mp4", "mp4"), ("mkv", "matroska")):
        p = probe_file(files[key])
        ref = ffprobe(files[key])
        v = next(s for s in ref["streams"] if s["codec_type"] == "video")
        a = next(s for s in ref["streams"] if s["codec_type"] == "audio")
        assert (p.kind, p.format, p.has_video, p.has_audio) == ("video", fmt, True, True)
        assert p.duration == pytest.approx(float(ref["format"]["duration"]), abs=1e-3)
        assert p.bitrate == int(ref["format"]["bit_rate"])
        assert p.size == int(ref["format"]["size"]) == files[key].stat().st_size
        assert (p.width, p.height) == (v["width"], v["height"]) == (320, 240)
        assert p.video_codec == v["codec_name"] == "h264"
        num, den = map(int, v["avg_frame_rate"].split("/"))
        assert p.frame_rate == pytest.approx(num / den) == 25
        assert p.audio_codec == a["codec_name"] == "aac"
        assert p.audio_channels == a["channels"] == 2
        assert p.audio_sample_rate == int(a["sample_rate"]) == 48000
        assert p.pages is None


def test_probe_audio(files: dict[str, Path]) -> None:
    # FFmpeg 8 (PyAV) trims MP3 encoder delay from the duration, the 5.1 ffprobe does not:
    # allow one MP3 frame (24 ms at 48 kHz).
    for key, fmt, codec, tol in (("mp3", "mp3", "mp3", 0.025), ("m4a", "mp4", "aac", 1e-3)):
        p = probe_file(files[key])
        ref = ffprobe(files[key])
        assert (p.kind, p.format, p.audio_codec) == ("audio", fmt, codec)
        assert (p.has_video, p.has_audio, p.width, p.video_codec) == (False, True, None, None)
        assert p.duration == pytest.approx(float(ref["format"]["duration"]), abs=tol)
        assert p.audio_sample_rate == 48000


@pytest.mark.parametrize("key", ["png", "jpeg", "webp", "gif"])
def test_probe_still_images(files: dict[str, Path], key: str) -> None:
    p = probe_file(files[key])
    assert (p.kind, p.format, p.width, p.height) == ("image", key, 64, 48)
    assert (p.duration, p.has_video, p.frame_rate) == (None, False, None)


def test_probe_exif_rotated_image_reports_display_size(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.new("RGB", (300, 200), "red").save(tmp_path / "r.jpg", exif=exif)
    p = probe_file(tmp_path / "r.jpg")
    assert (p.width, p.height) == (200, 300)


def test_probe_pdf(files: dict[str, Path]) -> None:
    p = probe_file(files["pdf"])
    assert (p.kind, p.format, p.pages) == ("document", "pdf", 3)
    assert p.size == files["pdf"].stat().st_size


def test_classified_by_content_not_extension(files: dict[str, Path]) -> None:
    assert probe_file(files["mp4_as_jpg"]).kind == "video"
    assert probe_file(files["mp4_as_jpg"]).format == "mp4"
    image = probe_file(files["png_as_mp4"])
    assert (image.kind, image.format) == ("image", "png")


@pytest.mark.parametrize("key", ["text", "random"])
def test_non_media_is_refused(files: dict[str, Path], key: str) -> None:
    with pytest.raises(ProcessingError) as e:
        probe_file(files[key])
    assert e.value.code == "not_media"


def test_empty_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ProcessingError) as e:
        probe_file(tmp_path / "empty.mp4")
    assert e.value.code == "not_media"


@pytest.mark.parametrize("key", ["cut_mp4", "cut_faststart", "cut_mkv"])
def test_truncated_video_is_refused(files: dict[str, Path], key: str) -> None:
    with pytest.raises(ProcessingError) as e:
        probe_file(files[key])
    assert e.value.code in ("corrupt", "not_media")


def test_faststart_cut_is_corrupt_not_unknown(files: dict[str, Path]) -> None:
    """Headers intact, samples missing: the probe must notice the data, not just the moov."""
    with pytest.raises(ProcessingError) as e:
        probe_file(files["cut_faststart"])
    assert e.value.code == "corrupt"


def test_truncated_image_is_corrupt(tmp_path: Path) -> None:
    Image.effect_noise((256, 256), 64).convert("RGB").save(tmp_path / "n.png")
    data = (tmp_path / "n.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ProcessingError) as e:
        probe_file(tmp_path / "cut.png")
    assert e.value.code == "corrupt"


def test_broken_pdf_is_corrupt(tmp_path: Path) -> None:
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
    with pytest.raises(ProcessingError) as e:
        probe_file(tmp_path / "bad.pdf")
    assert e.value.code == "corrupt"


# --- validate --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["mp4", "mkv", "mp3", "m4a", "png", "jpeg", "webp", "gif", "pdf"])
def test_good_uploads_validate(files: dict[str, Path], key: str) -> None:
    validate(files[key], probe_file(files[key]), Limits())


def refused(path: Path, limits: Limits | None = None, probe: Probe | None = None) -> str:
    with pytest.raises(ProcessingError) as e:
        validate(path, probe or probe_file(path), limits or Limits())
    return e.value.code


def test_size_and_duration_limits(files: dict[str, Path]) -> None:
    mp4 = files["mp4"]
    assert refused(mp4, Limits(max_size=mp4.stat().st_size - 1)) == "too_large"
    assert refused(mp4, Limits(max_duration=3.5)) == "too_long"
    validate(mp4, probe_file(mp4), Limits(max_size=mp4.stat().st_size, max_duration=4.1))
    assert refused(files["pdf"], Limits(max_pages=2)) == "too_many_pages"


def test_absurd_dimensions(files: dict[str, Path]) -> None:
    assert refused(files["wide_png"]) == "bad_dimensions"
    assert refused(files["tiny_png"]) == "bad_dimensions"
    assert refused(files["mp4"], Limits(max_pixels=320 * 240 - 1)) == "bad_dimensions"
    assert refused(files["mp4"], Limits(max_height=239)) == "bad_dimensions"


def test_polyglots_are_refused(files: dict[str, Path]) -> None:
    assert files["jpeg_pdf"].read_bytes()[100:105] == b"%PDF-"
    assert probe_file(files["jpeg_pdf"]).kind == "image"  # a valid JPEG...
    assert refused(files["jpeg_pdf"]) == "polyglot"  # ...that a PDF reader also opens
    assert probe_file(files["png_zip"]).kind == "image"
    assert refused(files["png_zip"]) == "polyglot"
    assert probe_file(files["mp3_script"]).kind == "audio"
    assert refused(files["mp3_script"]) == "polyglot"


def test_format_magic_mismatch_is_polyglot(files: dict[str, Path], tmp_path: Path) -> None:
    # A probe claiming mp4 for bytes that do not start with an ISO box is refused.
    fake = Probe(kind="video", format="mp4", size=files["png"].stat().st_size, width=64,
                 height=48, has_video=True)  # fmt: skip
    assert refused(files["png"], probe=fake) == "polyglot"
    assert foreign_signature("mp4", b"\x00\x00\x00\x18ftypisom") is None
    assert foreign_signature("mp4", b"MZ\x90\x00\x00\x00\x00\x00") is not None
    assert foreign_signature("png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50 + b"<SVG") is not None
    assert foreign_signature("jpeg", b"\xff\xd8\xff\xe0", b"...PK\x05\x06...") is not None
    assert foreign_signature("matroska", b"PK\x03\x04") is not None
    assert foreign_signature("pdf", b"%PDF-1.7\n") is None


# --- passthrough -----------------------------------------------------------------------------


def test_passthrough_h264_aac_with_regular_keyframes(files: dict[str, Path]) -> None:
    assert passthrough_ok(files["mp4"])
    assert passthrough_ok(files["faststart"])
    assert passthrough_ok(files["m4a"])  # audio-only AAC


def test_passthrough_refuses_long_keyframe_gap(files: dict[str, Path]) -> None:
    check = check_passthrough(files["long_gop"])
    assert not check.ok and "keyframe" in check.reason
    assert passthrough_ok(files["long_gop"], max_keyframe_interval=25.0)


@pytest.mark.parametrize(
    "key", ["mpeg4_mp3", "mp3", "mkv", "png", "pdf", "text", "random", "cut_faststart"]
)
def test_passthrough_refuses_other_codecs_and_containers(files: dict[str, Path], key: str) -> None:
    assert passthrough_ok(files[key]) is False


def test_keyframe_times_from_the_index(files: dict[str, Path]) -> None:
    assert keyframe_times(files["mp4"]) == pytest.approx([0.0, 2.0])  # -g 50 at 25 fps, 4 s
    assert keyframe_times(files["long_gop"]) == [0.0]
    assert keyframe_times(files["mkv"]) is None  # not ours to index
    assert keyframe_times(files["m4a"]) is None  # no video
