"""Refuse uploads we will not process: too big, too long, absurd dimensions, or polyglots.

A polyglot is a file that is valid as two formats at once (a JPEG that is also a PDF, HTML or
ZIP). We serve uploads back from our own origin, so a file a browser or another tool could
read as something else is refused outright rather than sanitised. The checks are cheap byte
tests documented beside `_SIGNATURES`; they are deliberately strict, a rare false positive on
a real photo or video costs less than serving active content.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ProcessingError
from .probe import Probe

HEAD_BYTES = 4096  # "the first few KB" scanned for foreign signatures
PDF_HEAD_BYTES = 1024  # readers find %PDF- anywhere in the first 1024 bytes
TAIL_BYTES = 65_536 + 22  # a ZIP end-of-central-directory record sits in the last 64 KB + 22

# Markup that a browser or interpreter sniffs near the start of a file (lower-cased match).
_MARKUP = (b"<html", b"<script", b"<?php", b"<svg", b"<!doctype html")
_ZIP_LOCAL = b"PK\x03\x04"
_ZIP_EOCD = b"PK\x05\x06"


@dataclass(frozen=True)
class Limits:
    """Upper bounds per upload; defaults suit a lecture-video platform (8K stills, 6 h)."""

    max_size: int = 20 * 1024**3  # bytes
    max_duration: float = 6 * 3600.0  # seconds
    max_width: int = 8192
    max_height: int = 8192
    max_pixels: int = 8192 * 4320
    min_dimension: int = 16
    max_pages: int = 2000


def validate(path: Path, probe: Probe, limits: Limits) -> None:
    """Raise ProcessingError when the upload breaks a limit or looks like a polyglot."""
    if probe.size > limits.max_size:
        raise ProcessingError(
            "too_large", f"{probe.size} bytes is over the limit of {limits.max_size}"
        )
    if probe.duration is not None and probe.duration > limits.max_duration:
        raise ProcessingError(
            "too_long", f"{probe.duration:.0f} s is over the limit of {limits.max_duration:.0f} s"
        )
    if probe.kind in ("video", "audio") and not (probe.has_video or probe.has_audio):
        raise ProcessingError("no_streams", "no audio or video stream")
    if probe.kind in ("video", "image"):
        _check_dimensions(probe, limits)
    if probe.kind == "document":
        if not probe.pages:
            raise ProcessingError("no_streams", "the document has no pages")
        if probe.pages > limits.max_pages:
            raise ProcessingError(
                "too_many_pages", f"{probe.pages} pages is over the limit of {limits.max_pages}"
            )
    _check_polyglot(Path(path), probe)


def _check_dimensions(probe: Probe, limits: Limits) -> None:
    w, h = probe.width or 0, probe.height or 0
    if min(w, h) < limits.min_dimension:
        raise ProcessingError("bad_dimensions", f"{w}x{h} is smaller than {limits.min_dimension}")
    if w > limits.max_width or h > limits.max_height or w * h > limits.max_pixels:
        raise ProcessingError(
            "bad_dimensions",
            f"{w}x{h} is over the limit of {limits.max_width}x{limits.max_height} "
            f"or {limits.max_pixels} pixels",
        )


def _check_polyglot(path: Path, probe: Probe) -> None:
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
        tail = b""
        if probe.kind == "image":
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    reason = foreign_signature(probe.format, head, tail)
    if reason is not None:
        raise ProcessingError("polyglot", f"{probe.format} file {reason}")


def foreign_signature(fmt: str, head: bytes, tail: bytes = b"") -> str | None:
    """Why `head`/`tail` of a file detected as `fmt` also look like another format, or None.

    - the magic at offset 0 must be `fmt`'s own (`_magic_ok`); unknown formats are not checked;
    - no `MZ` (Windows executable) or ZIP local header at offset 0;
    - no `%PDF-` in the first 1024 bytes of anything but a PDF;
    - no HTML/script/PHP/SVG markup in the first 4 KB;
    - for images (`tail` given), no ZIP end-of-central-directory record in the last 64 KB:
      ZIP readers find archives from the end, so a ZIP appended to a PNG still opens.
    """
    if not _magic_ok(fmt, head):
        return f"does not start with the {fmt} signature"
    if head[:2] == b"MZ" or head[:4] == _ZIP_LOCAL:
        return "starts like an executable or ZIP archive"
    if fmt != "pdf" and b"%PDF-" in head[:PDF_HEAD_BYTES]:
        return "carries a PDF header"
    lowered = head.lower()
    for marker in _MARKUP:
        if marker in lowered:
            return f"carries markup ({marker.decode()})"
    if _ZIP_EOCD in tail:
        return "carries a ZIP archive at its end"
    return None


_MP4_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot", b"uuid"}


def _magic_ok(fmt: str, head: bytes) -> bool:
    """Offset-0 magic of each format we accept; True for formats not listed here."""
    if fmt in ("mp4", "mov"):
        return head[4:8] in _MP4_BOXES
    if fmt in ("wav", "avi", "webp", "w64"):
        return head[:4] in (b"RIFF", b"riff", b"RF64")
    if fmt == "mp3":
        return head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] >= 0xE0)
    if fmt == "aac":
        return head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] >= 0xF0)
    if fmt == "mpegts":  # 188-byte packets, or 192 (M2TS) with a 4-byte timecode first
        return head[:1] == b"\x47" or head[4:5] == b"\x47"
    prefixes = _PREFIXES.get(fmt)
    return prefixes is None or head.startswith(prefixes)


_PREFIXES: dict[str, tuple[bytes, ...]] = {
    "pdf": (b"%PDF-",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
    "matroska": (b"\x1a\x45\xdf\xa3",),
    "flac": (b"fLaC", b"ID3"),
    "ogg": (b"OggS",),
    "flv": (b"FLV",),
    "asf": (b"\x30\x26\xb2\x75",),
    "aiff": (b"FORM",),
    "caf": (b"caff",),
    "amr": (b"#!AMR",),
    "mpeg": (b"\x00\x00\x01\xba",),
}
