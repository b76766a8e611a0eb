"""MP4 (length-prefixed) to Annex B (start-code) access units, for H.264 and HEVC.

MPEG-TS has no sample entry, so the decoder learns the parameter sets from the stream itself:
each keyframe gets them from the config record unless it already carries them in-band. Every
access unit starts with an AUD, which some hardware decoders need to find frame boundaries.
The work is per NAL unit (slicing one memoryview), never per byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import MediaError

START_CODE = b"\x00\x00\x00\x01"

# H.264 NAL unit types (ISO/IEC 14496-10 table 7-1).
AVC_SPS, AVC_PPS, AVC_AUD = 7, 8, 9
# HEVC NAL unit types (ISO/IEC 23008-2 table 7-1).
HEVC_VPS, HEVC_SPS, HEVC_PPS, HEVC_AUD, HEVC_PREFIX_SEI = 32, 33, 34, 35, 39

# AUD with primary_pic_type 7 (any slice type) + stop bit.
AVC_AUD_NAL = START_CODE + b"\x09\xf0"
# AUD (type 35, layer 0, temporal id 0) with pic_type 2 (any slice type) + stop bit.
HEVC_AUD_NAL = START_CODE + b"\x46\x01\x50"


@dataclass(frozen=True)
class AnnexBFormat:
    """What converting one track's samples needs, derived once from its config record."""

    hevc: bool
    length_size: int
    parameter_sets: bytes  # start-code prefixed, in decoding order
    required: frozenset[int]  # NAL types that, all present, mean the sample carries its own

    def nal_type(self, first_byte: int) -> int:
        return (first_byte >> 1) & 0x3F if self.hevc else first_byte & 0x1F


class _Reader:
    """Bounds-checked big-endian reads over a config record; overruns become MediaError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise MediaError(f"truncated {self.what} record")
        chunk, self.pos = self.data[self.pos : end], end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")


def avc_format(config: bytes) -> AnnexBFormat:
    """Parse an AVCDecoderConfigurationRecord (avcC payload)."""
    r = _Reader(config, "avcC")
    r.take(4)  # configurationVersion, profile, compatibility, level
    length_size = (r.u8() & 0x03) + 1
    sets = [r.take(r.u16()) for _ in range(r.u8() & 0x1F)]  # SPS
    sets += [r.take(r.u16()) for _ in range(r.u8())]  # PPS
    if not sets:
        raise MediaError("avcC record carries no parameter sets")
    return AnnexBFormat(
        hevc=False,
        length_size=length_size,
        parameter_sets=b"".join(START_CODE + s for s in sets),
        required=frozenset((AVC_SPS, AVC_PPS)),
    )


def hevc_format(config: bytes) -> AnnexBFormat:
    """Parse an HEVCDecoderConfigurationRecord (hvcC payload)."""
    r = _Reader(config, "hvcC")
    r.take(21)  # profile, tier, level, constraint flags, chroma, bit depths, frame rate
    length_size = (r.u8() & 0x03) + 1
    by_type: dict[int, list[bytes]] = {}
    for _ in range(r.u8()):
        nal_type = r.u8() & 0x3F
        by_type.setdefault(nal_type, []).extend(r.take(r.u16()) for _ in range(r.u16()))
    order = (HEVC_VPS, HEVC_SPS, HEVC_PPS, HEVC_PREFIX_SEI)  # decoding order, whatever the record's
    sets = [s for t in order for s in by_type.get(t, ()) if not _is_user_data_sei(s)]
    if not sets:
        raise MediaError("hvcC record carries no parameter sets")
    return AnnexBFormat(
        hevc=True,
        length_size=length_size,
        parameter_sets=b"".join(START_CODE + s for s in sets),
        required=frozenset((HEVC_VPS, HEVC_SPS, HEVC_PPS)),
    )


def _is_user_data_sei(nal: bytes) -> bool:
    """Prefix SEI whose first message is user_data_unregistered (type 5).

    Encoders (x265) put kilobytes of settings text there; repeating it before every keyframe
    is pure overhead, while other declarative SEI (HDR metadata) must be kept.
    """
    return (nal[0] >> 1) & 0x3F == HEVC_PREFIX_SEI and len(nal) > 2 and nal[2] == 5


def access_unit(fmt: AnnexBFormat, sample: memoryview, keyframe: bool) -> list[bytes | memoryview]:
    """The Annex B pieces of one sample: AUD, parameter sets (keyframes), start-coded NALs.

    AUDs already in the sample are dropped so that ours is the only one and comes first.
    """
    nals = _split(fmt, sample)
    aud_type = HEVC_AUD if fmt.hevc else AVC_AUD
    types = {fmt.nal_type(nal[0]) for nal in nals}
    parts: list[bytes | memoryview] = [_hevc_aud(nals) if fmt.hevc else AVC_AUD_NAL]
    if keyframe and not fmt.required <= types:
        parts.append(fmt.parameter_sets)
    for nal in nals:
        if fmt.nal_type(nal[0]) != aud_type:
            parts.append(START_CODE)
            parts.append(nal)
    return parts


def _hevc_aud(nals: list[memoryview]) -> bytes:
    """HEVC AUD carrying the picture's TemporalId, as the spec requires of an AUD."""
    for nal in nals:
        if (nal[0] >> 1) & 0x3F < 32 and len(nal) > 1:  # first VCL NAL unit
            tid_plus1 = nal[1] & 0x07
            return HEVC_AUD_NAL if tid_plus1 == 1 else HEVC_AUD_NAL[:5] + bytes((tid_plus1, 0x50))
    return HEVC_AUD_NAL


def _split(fmt: AnnexBFormat, sample: memoryview) -> list[memoryview]:
    """Length-prefixed NAL units of one sample (empty ones skipped)."""
    nals = []
    pos, end, size_len = 0, len(sample), fmt.length_size
    while pos < end:
        if pos + size_len > end:
            raise MediaError("truncated NAL unit length in video sample")
        size = int.from_bytes(sample[pos : pos + size_len], "big")
        pos += size_len
        if pos + size > end:
            raise MediaError("NAL unit overruns its video sample")
        if size:
            nals.append(sample[pos : pos + size])
        pos += size
    return nals
