"""Sample entries built from live decoder configurations (avcC, hvcC, AudioSpecificConfig).

Live ingest has no MP4 to copy a sample entry from, so one is written here; it is then read
back with `codec_info`, the same code that describes stored files, so codec strings and
dimensions come out exactly as for VOD.
"""

from __future__ import annotations

import struct

from ..model import CodecInfo, MediaError
from .boxes import box, full
from .codecs import codec_info, parse_audio_specific_config


def video_sample_entry(fourcc: bytes, config_box: bytes, config: bytes) -> CodecInfo:
    """avc1/hvc1 entry around an avcC/hvcC record; dimensions from the H.264 SPS."""
    width, height = avc_dimensions(config) if fourcc == b"avc1" else (0, 0)
    fields = (bytes(6) + struct.pack(">H", 1) + bytes(16)
              + struct.pack(">HHIIIH", width, height, 0x00480000, 0x00480000, 0, 1)
              + bytes(32) + struct.pack(">Hh", 0x0018, -1))
    entry = box(fourcc, fields, box(config_box, config))
    return codec_info(entry, "video")


def avc_sample_entry(avcc: bytes) -> CodecInfo:
    return video_sample_entry(b"avc1", b"avcC", avcc)


def hevc_sample_entry(hvcc: bytes) -> CodecInfo:
    return video_sample_entry(b"hvc1", b"hvcC", hvcc)


def aac_sample_entry(asc: bytes, bitrate: int = 0) -> CodecInfo:
    """mp4a entry with an esds carrying the AudioSpecificConfig."""
    try:
        _object_type, rate, channels = parse_audio_specific_config(asc)
    except (IndexError, ValueError, MediaError):
        raise MediaError("invalid AAC AudioSpecificConfig") from None
    if not rate or not 0 < channels <= 8:
        raise MediaError("unsupported AAC AudioSpecificConfig (rate or channels)")
    dsi = _descriptor(0x05, asc)
    dcd = _descriptor(0x04, struct.pack(">BBI", 0x40, 0x15 << 2 | 1, 0)[:5]
                      + struct.pack(">II", bitrate, bitrate) + dsi)
    es = _descriptor(0x03, struct.pack(">HB", 1, 0) + dcd + _descriptor(0x06, b"\x02"))
    fields = (bytes(6) + struct.pack(">H", 1) + bytes(8)
              + struct.pack(">HHHHI", min(channels, 2) if channels != 0 else 2, 16, 0, 0,
                            (rate if rate < 65536 else 0) << 16))
    entry = box(b"mp4a", fields, full(b"esds", 0, 0, es))
    return codec_info(entry, "audio")


def _descriptor(tag: int, body: bytes) -> bytes:
    n = len(body)  # 4-byte expandable size: always valid and simple
    return bytes((tag, 0x80 | (n >> 21) & 0x7F, 0x80 | (n >> 14) & 0x7F,
                  0x80 | (n >> 7) & 0x7F, n & 0x7F)) + body


# --- H.264 SPS: just enough for the picture size ------------------------------------------


def avc_dimensions(avcc: bytes) -> tuple[int, int]:
    """Cropped width and height from the first SPS of an avcC record."""
    if len(avcc) < 8 or avcc[0] != 1:
        raise MediaError("invalid AVCDecoderConfigurationRecord")
    count = avcc[5] & 0x1F
    if count == 0:
        raise MediaError("AVCDecoderConfigurationRecord without an SPS")
    size = struct.unpack_from(">H", avcc, 6)[0]
    sps = avcc[8 : 8 + size]
    if len(sps) != size or size < 4:
        raise MediaError("truncated SPS in AVCDecoderConfigurationRecord")
    try:
        return _sps_dimensions(_unescape(sps[1:]))
    except IndexError:
        raise MediaError("truncated SPS") from None


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def bit(self) -> int:
        byte = self.data[self.pos >> 3]
        value = (byte >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = value << 1 | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise MediaError("invalid Exp-Golomb code in SPS")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        v = self.ue()
        return (v + 1) // 2 if v & 1 else -(v // 2)


_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def _sps_dimensions(rbsp: bytes) -> tuple[int, int]:
    r = _Bits(rbsp)
    profile = r.bits(8)
    r.bits(16)  # constraint flags, level
    r.ue()  # seq_parameter_set_id
    chroma_format = 1
    if profile in _HIGH_PROFILES:
        chroma_format = r.ue()
        if chroma_format == 3:
            r.bit()  # separate_colour_plane_flag
        r.ue()
        r.ue()  # bit depths
        r.bit()  # qpprime_y_zero_transform_bypass_flag
        if r.bit():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format != 3 else 12):
                if r.bit():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.bit()
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.bit()  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = r.bit()
    if not frame_mbs_only:
        r.bit()
    r.bit()  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = height_units * 16 * (2 - frame_mbs_only)
    if r.bit():  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        sub_w = 2 if chroma_format in (1, 2) else 1
        sub_h = (2 if chroma_format == 1 else 1) * (2 - frame_mbs_only)
        if chroma_format == 0:
            sub_w, sub_h = 1, 2 - frame_mbs_only
        width -= (left + right) * sub_w
        height -= (top + bottom) * sub_h
    if not (0 < width <= 16384 and 0 < height <= 16384):
        raise MediaError("SPS gives an impossible picture size")
    return width, height


def _skip_scaling_list(r: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + r.se() + 256) % 256
        last = nxt or last
