"""Sample entries to `CodecInfo`: RFC 6381 codec strings and decoder configurations."""

from __future__ import annotations

import struct

from ..model import CodecInfo, MediaError
from .boxes import BoxHeader, iter_boxes, parse_header

VIDEO_ENTRIES = {"avc1", "avc3", "hvc1", "hev1", "av01", "vp09", "mp4v", "encv"}
AUDIO_ENTRIES = {"mp4a", "ac-3", "ec-3", "Opus", "fLaC", ".mp3", "alac", "enca"}
_VISUAL_FIELDS = 78  # VisualSampleEntry fields before child boxes
_AUDIO_FIELDS = 28  # AudioSampleEntry (version 0) fields before child boxes


def codec_info(entry: bytes, kind: str) -> CodecInfo:
    """Describe one stsd child (`entry` is the whole box)."""
    head = parse_header(entry, 0, len(entry))
    fourcc = head.type
    body = head.body_offset
    if kind == "video":
        if head.size < body - head.offset + _VISUAL_FIELDS:
            raise MediaError(f"video sample entry '{fourcc}' is truncated")
        width, height = struct.unpack_from(">HH", entry, body + 24)
        kids = _child_map(entry, body + _VISUAL_FIELDS, head.end)
        return _video(fourcc, entry, kids, width, height)
    if head.size < body - head.offset + _AUDIO_FIELDS:
        raise MediaError(f"audio sample entry '{fourcc}' is truncated")
    version = struct.unpack_from(">H", entry, body + 8)[0]
    channels, _bits = struct.unpack_from(">HH", entry, body + 16)
    rate = struct.unpack_from(">I", entry, body + 24)[0] >> 16
    skip = {0: 0, 1: 16, 2: 36}.get(version, 0)  # QuickTime sound description versions
    kids = _child_map(entry, body + _AUDIO_FIELDS + skip, head.end)
    return _audio(fourcc, entry, kids, channels, rate)


def _child_map(data: bytes, start: int, end: int) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    try:
        for child in iter_boxes(data, start, end):
            found.setdefault(child.type, data[child.body_offset : child.end])
    except MediaError:
        pass  # trailing junk after the known children is common and harmless
    return found


def _video(fourcc: str, entry: bytes, kids: dict[str, bytes], w: int, h: int) -> CodecInfo:
    if fourcc in ("avc1", "avc3"):
        cfg = kids.get("avcC")
        if not cfg or len(cfg) < 7:
            raise MediaError("H.264 track without a valid avcC")
        codec = f"{fourcc}.{cfg[1]:02x}{cfg[2]:02x}{cfg[3]:02x}"
        return CodecInfo(fourcc, codec, entry, cfg, width=w, height=h)
    if fourcc in ("hvc1", "hev1"):
        cfg = kids.get("hvcC")
        if not cfg or len(cfg) < 23:
            raise MediaError("HEVC track without a valid hvcC")
        return CodecInfo(fourcc, hevc_codec_string(fourcc, cfg), entry, cfg, width=w, height=h)
    if fourcc == "av01" and len(kids.get("av1C", b"")) >= 4:
        cfg = kids["av1C"]
        profile, level = cfg[1] >> 5, cfg[1] & 0x1F
        tier = "H" if cfg[2] & 0x80 else "M"
        depth = 12 if cfg[2] & 0x20 else (10 if cfg[2] & 0x40 else 8)
        return CodecInfo(fourcc, f"av01.{profile}.{level:02d}{tier}.{depth:02d}", entry, cfg,
                         width=w, height=h)
    if fourcc == "encv":
        raise MediaError("encrypted source media cannot be packaged")
    return CodecInfo(fourcc, fourcc, entry, b"", width=w, height=h)


def hevc_codec_string(fourcc: str, cfg: bytes) -> str:
    """ISO/IEC 14496-15 Annex E: hvc1.<space><profile>.<compat>.<tier><level>.<constraints>."""
    space = "ABC"[((cfg[1] >> 6) & 3) - 1] if (cfg[1] >> 6) & 3 else ""
    tier = "H" if cfg[1] & 0x20 else "L"
    profile = cfg[1] & 0x1F
    compat = int.from_bytes(cfg[2:6], "big")
    reversed_compat = int(f"{compat:032b}"[::-1], 2)
    constraints = list(cfg[6:12])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    level = cfg[12]
    parts = [fourcc, f"{space}{profile}", f"{reversed_compat:X}", f"{tier}{level}"]
    parts += [f"{c:X}" for c in constraints]
    return ".".join(parts)


def _audio(fourcc: str, entry: bytes, kids: dict[str, bytes], ch: int, rate: int) -> CodecInfo:
    if fourcc == "mp4a":
        esds = kids.get("esds")
        if esds is None:
            raise MediaError("AAC track without an esds box")
        oti, asc, _avg = parse_esds(esds)
        if oti == 0x40 and asc:
            aot, asc_rate, asc_channels = parse_audio_specific_config(asc)
            return CodecInfo(fourcc, f"mp4a.40.{aot}", entry, asc,
                             channels=asc_channels or ch, sample_rate=asc_rate or rate)
        if oti in (0x66, 0x67, 0x68):  # MPEG-2 AAC profiles
            return CodecInfo(fourcc, "mp4a.40.2", entry, asc, channels=ch, sample_rate=rate)
        return CodecInfo(fourcc, f"mp4a.{oti:02X}", entry, asc, channels=ch, sample_rate=rate)
    if fourcc == "enca":
        raise MediaError("encrypted source media cannot be packaged")
    names = {"ac-3": "ac-3", "ec-3": "ec-3", "Opus": "opus", "fLaC": "flac", ".mp3": "mp4a.6B",
             "alac": "alac"}
    return CodecInfo(fourcc, names.get(fourcc, fourcc), entry, b"", channels=ch, sample_rate=rate)


def _descriptor(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, body offset, body length) of an MPEG-4 descriptor."""
    if pos + 2 > len(data):
        raise MediaError("truncated esds descriptor")
    tag = data[pos]
    pos += 1
    length = 0
    for _ in range(4):
        if pos >= len(data):
            raise MediaError("truncated esds descriptor")
        b = data[pos]
        pos += 1
        length = (length << 7) | (b & 0x7F)
        if not b & 0x80:
            break
    return tag, pos, length


def parse_esds(esds: bytes) -> tuple[int, bytes, int]:
    """(objectTypeIndication, DecoderSpecificInfo, avgBitrate) from an esds body."""
    data = esds[4:]  # version and flags
    tag, pos, _ = _descriptor(data, 0)
    if tag != 0x03:
        raise MediaError("esds without ES_Descriptor")
    if pos + 3 > len(data):
        raise MediaError("truncated ES_Descriptor")
    flags = data[pos + 2]
    pos += 3
    if flags & 0x80:
        pos += 2
    if flags & 0x40:
        pos += 1 + data[pos]
    if flags & 0x20:
        pos += 2
    tag, pos, length = _descriptor(data, pos)
    if tag != 0x04 or pos + 13 > len(data):
        raise MediaError("esds without DecoderConfigDescriptor")
    oti = data[pos]
    avg = struct.unpack_from(">I", data, pos + 9)[0]
    end = pos + length
    pos += 13
    asc = b""
    if pos < min(end, len(data)):
        tag, body, length = _descriptor(data, pos)
        if tag == 0x05:
            asc = bytes(data[body : body + length])
    return oti, asc, avg


_AAC_RATES = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
              8000, 7350]


def parse_audio_specific_config(asc: bytes) -> tuple[int, int, int]:
    """(audioObjectType, sampling rate, channel configuration) from an AudioSpecificConfig."""
    bits = int.from_bytes(asc[:8].ljust(8, b"\0"), "big")
    pos = 64

    def take(n: int) -> int:
        nonlocal pos
        pos -= n
        return (bits >> pos) & ((1 << n) - 1)

    aot = take(5)
    if aot == 31:
        aot = 32 + take(6)
    index = take(4)
    rate = take(24) if index == 15 else (_AAC_RATES[index] if index < len(_AAC_RATES) else 0)
    channels = take(4)
    return aot, rate, channels


def first_entry(stsd: bytes, box: BoxHeader) -> bytes:
    """The first sample entry of an stsd box (whole box bytes)."""
    start = box.body_offset + 8  # version/flags + entry_count
    if start + 8 > box.end:
        raise MediaError("empty stsd box")
    entry = parse_header(stsd, start, box.end)
    return bytes(stsd[entry.offset : entry.end])
