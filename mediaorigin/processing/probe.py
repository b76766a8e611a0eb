"""Probe an upload: what it is, decided by its bytes, never by its name.

Order of tests: the four still-image formats we accept (Pillow reads the header and decodes),
then PDF magic (pypdfium2 counts pages), then audio/video through PyAV restricted to a whitelist
of demuxers. The whitelist matters: FFmpeg has demuxers (hls, concat, tty, image sequences)
that open other files or match on extension, which an upload must never reach. A probe also
decodes the first frame, so valid headers over garbage data are refused here, not in a worker
an hour later.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import pypdfium2 as pdfium
from PIL import Image, UnidentifiedImageError

from .errors import ProcessingError

Kind = Literal["video", "audio", "image", "document"]

# Demuxers an upload may use (FFmpeg matches any comma-separated part of a demuxer's name).
DEMUXERS = "mov,mp4,matroska,webm,avi,flv,mpegts,mpeg,mp3,aac,wav,flac,ogg,asf,aiff,caf,amr,w64"
AV_OPTIONS = {
    "probesize": str(10_000_000),  # bytes read to find streams: bounds work on garbage
    "analyzeduration": str(10_000_000),  # microseconds of media analysed
    "format_whitelist": DEMUXERS,
    "protocol_whitelist": "file",  # no nested http/concat/subfile opens
}
IMAGE_FORMATS = ["JPEG", "PNG", "WEBP", "GIF"]
MAX_DECODE_PACKETS = 500  # packets demuxed while looking for a first decodable frame
# Images larger than this are not decoded by the probe (validate refuses them anyway).
MAX_PROBE_DECODE_PIXELS = 64_000_000
TAIL_SCAN_BYTES = 256_000_000  # bytes demuxed past a seek while checking for truncation
_ROTATED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


@dataclass(frozen=True, kw_only=True)
class Probe:
    """What an upload is; width/height are as displayed (EXIF rotation applied for images)."""

    kind: Kind
    format: str  # mp4, mov, matroska, mp3, png, jpeg, pdf, ...
    size: int  # bytes
    duration: float | None = None  # seconds
    width: int | None = None
    height: int | None = None
    bitrate: int | None = None  # bits/s, whole file
    video_codec: str | None = None  # FFmpeg codec names: h264, hevc, vp9, aac, mp3, opus...
    audio_codec: str | None = None
    frame_rate: float | None = None
    audio_channels: int | None = None
    audio_sample_rate: int | None = None
    pages: int | None = None
    has_video: bool = False
    has_audio: bool = False


def probe_file(path: Path) -> Probe:
    """Classify and describe `path`; raise ProcessingError("not_media" | "corrupt")."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise ProcessingError("not_media", "the file is empty")
    with path.open("rb") as f:
        head = f.read(1024)
    # Images first: Pillow goes by the magic at offset 0, so a JPEG carrying "%PDF-" in a
    # comment stays a JPEG (and validate calls it a polyglot).
    image = _probe_image(path, size)
    if image is not None:
        return image
    if b"%PDF-" in head:  # PDF readers accept the header anywhere in the first 1024 bytes
        return _probe_pdf(path, size)
    return _probe_av(path, size)


def _probe_pdf(path: Path, size: int) -> Probe:
    try:
        doc = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as e:
        raise ProcessingError("corrupt", f"unreadable or encrypted PDF: {e}") from None
    try:
        pages = len(doc)
    finally:
        doc.close()
    return Probe(kind="document", format="pdf", size=size, pages=pages)


def _probe_image(path: Path, size: int) -> Probe | None:
    """A still image when Pillow recognises one of IMAGE_FORMATS, else None."""
    with warnings.catch_warnings():
        # A big image is for validate to refuse with its limits, not a warning. Pillow's hard
        # bomb limit (twice MAX_IMAGE_PIXELS, ~179 MP) is far above any sane limit: refuse it
        # here, without touching that process-wide setting.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return _open_image(path, size)
        except Image.DecompressionBombError as e:
            raise ProcessingError("bad_dimensions", str(e)) from None


def _open_image(path: Path, size: int) -> Probe | None:
    try:
        img = Image.open(path, formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        return None
    except (OSError, SyntaxError, ValueError) as e:
        raise ProcessingError("corrupt", f"unreadable image header: {e}") from None
    with img:
        fmt = (img.format or "").lower()
        width, height = img.size
        decode = width * height <= MAX_PROBE_DECODE_PIXELS
        try:
            if decode:
                if fmt == "jpeg":  # DCT-scaled decode: proves the data at 1/64 of the work
                    img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                img.load()  # truncated or corrupt pixel data raises here
            # PNG keeps EXIF after the pixels: do not read it from an image we did not decode.
            orientation = img.getexif().get(0x0112, 1) if decode or fmt != "png" else 1
        except (OSError, SyntaxError, ValueError) as e:
            raise ProcessingError("corrupt", f"image data does not decode: {e}") from None
        if orientation in _ROTATED_ORIENTATIONS:
            width, height = height, width
    return Probe(kind="image", format=fmt, size=size, width=width, height=height)


def _format_name(container: av.container.InputContainer, path: Path) -> str:
    name = container.format.name
    if name.startswith("mov,"):
        with path.open("rb") as f:
            head = f.read(12)
        return "mov" if head[4:12] == b"ftypqt  " else "mp4"
    return name.split(",")[0]


def _is_attached_picture(stream: av.stream.Stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _probe_av(path: Path, size: int) -> Probe:
    try:
        container = av.open(str(path), options=AV_OPTIONS, metadata_errors="ignore")
    except av.FFmpegError as e:
        # strerror, not str(e): that names the stored file's path, which clients must not see.
        raise ProcessingError(
            "not_media", f"not a recognised media file: {e.strerror or type(e).__name__}"
        ) from None
    with container:
        videos = [s for s in container.streams.video if not _is_attached_picture(s)]
        audios = list(container.streams.audio)
        if not videos and not audios:
            raise ProcessingError("no_streams", "no audio or video stream")
        video = videos[0] if videos else None
        audio = audios[0] if audios else None
        fmt = _format_name(container, path)
        duration = container.duration / av.time_base if container.duration else None
        _check_decodes(container, video if video is not None else audio)
        if video is not None and duration:
            _check_tail_decodes(container, video, duration)
        vcc = video.codec_context if video is not None else None
        acc = audio.codec_context if audio is not None else None
        rate = (video.average_rate or video.guessed_rate) if video is not None else None
        probe = Probe(
            kind="video" if video is not None else "audio",
            format=fmt,
            size=size,
            duration=duration,
            width=vcc.width if vcc is not None else None,
            height=vcc.height if vcc is not None else None,
            bitrate=container.bit_rate or None,
            video_codec=vcc.codec.canonical_name if vcc is not None else None,
            audio_codec=acc.codec.canonical_name if acc is not None else None,
            frame_rate=float(rate) if rate else None,
            audio_channels=acc.channels if acc is not None else None,
            audio_sample_rate=acc.sample_rate if acc is not None else None,
            has_video=video is not None,
            has_audio=audio is not None,
        )
    return probe


def _check_decodes(container: av.container.InputContainer, stream: av.stream.Stream) -> None:
    """Demux until one frame decodes; a frame proves the data, not just the headers."""
    seen = 0
    try:
        for packet in container.demux(stream):
            for _frame in packet.decode():
                return
            seen += 1
            if seen >= MAX_DECODE_PACKETS:
                break
    except av.FFmpegError as e:
        raise ProcessingError("corrupt", f"{stream.type} data does not decode: {e}") from None
    raise ProcessingError("corrupt", f"no {stream.type} frame decodes")


def _check_tail_decodes(
    container: av.container.InputContainer, stream: av.stream.Stream, duration: float
) -> None:
    """Seek to 90% of the video's duration, decode a frame there and demux on until a packet
    reaches that time: catches truncated uploads (an MP4 whose moov promises samples past the
    end, an MKV cut short). Video only: audio durations are often estimated from the bitrate
    (VBR MP3), so an audio stream ending early proves nothing. Demuxing without decoding is
    cheap, and bounded for files whose keyframe before the target is far back."""
    tb = stream.time_base
    if tb is None:
        return
    if stream.duration:
        duration = float(stream.duration * tb)
    if duration < 1:
        return
    start = stream.start_time or 0
    target = start + int(duration * 0.9 / tb)
    try:
        container.seek(target, stream=stream, backward=True)
    except av.FFmpegError:
        return  # unseekable: the first-frame check has to do
    _check_decodes(container, stream)
    read = 0
    try:
        for packet in container.demux(stream):
            if packet.pts is not None and packet.pts >= target:
                return
            read += packet.size
            if read > TAIL_SCAN_BYTES:
                return
    except av.FFmpegError as e:
        raise ProcessingError("corrupt", f"video data ends early: {e}") from None
    raise ProcessingError("corrupt", "video data ends before its stated duration (truncated?)")
