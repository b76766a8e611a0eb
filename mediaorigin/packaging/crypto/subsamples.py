"""Subsample maps for NAL-structured video (ISO/IEC 23001-7 section 10.2/10.4 and 14496-15).

A sample of length-prefixed NAL units becomes a list of (BytesOfClearData, BytesOfProtectedData)
pairs. What stays clear:
- every length prefix and NAL unit header (1 byte in AVC, 2 in HEVC), so that a player can find
  and classify NAL units without the key;
- whole non-VCL NAL units (SPS, PPS, SEI, AUD, ...);
- the first bytes of a VCL NAL unit that do not fill a 16-byte block: the protected range is
  always whole blocks ending at the NAL unit's end (required for 'cbcs', allowed and common for
  'cenc', where CTR would not need it);
- for 'cbcs', at least the first `CBCS_CLEAR_LEAD` bytes of each VCL NAL unit. The scheme wants
  the slice header readable; without a slice-header parser we keep a fixed lead clear, as HLS
  SAMPLE-AES does (32 bytes covers the slice headers of ordinary streams).
"""

from __future__ import annotations

from typing import Literal

from ..model import MediaError

VideoCodec = Literal["avc", "hevc"]
Subsample = tuple[int, int]

BLOCK = 16
CBCS_CLEAR_LEAD = 32
_MAX_CLEAR = 0xFFFF  # BytesOfClearData is 16 bits
_HEADER_SIZE = {"avc": 1, "hevc": 2}


def is_vcl(codec: VideoCodec, first_byte: int) -> bool:
    """Whether a NAL unit carries slice data (the only kind that is encrypted)."""
    if codec == "avc":
        return 1 <= first_byte & 0x1F <= 5
    return (first_byte >> 1) & 0x3F < 32


def nal_subsamples(sample: bytes | memoryview, codec: VideoCodec, nal_length_size: int = 4,
                   scheme: str = "cenc") -> list[Subsample]:
    """The subsample map of one sample; the pairs cover the sample exactly."""
    if nal_length_size not in (1, 2, 4):
        raise MediaError(f"NAL length size {nal_length_size} is not 1, 2 or 4")
    header = _HEADER_SIZE[codec]
    lead = max(header, CBCS_CLEAR_LEAD) if scheme == "cbcs" else header
    out: list[Subsample] = []
    clear = 0
    pos, end = 0, len(sample)
    while pos < end:
        if end - pos < nal_length_size:
            raise MediaError(f"truncated NAL length at byte {pos} of a {end}-byte sample")
        size = int.from_bytes(sample[pos : pos + nal_length_size], "big")
        body = pos + nal_length_size
        if size > end - body:
            raise MediaError(f"NAL unit of {size} bytes overruns the sample at byte {pos}")
        protected = 0
        if size > lead and is_vcl(codec, sample[body]):
            protected = (size - lead) // BLOCK * BLOCK
        clear += nal_length_size + size - protected
        if protected:
            while clear > _MAX_CLEAR:
                out.append((_MAX_CLEAR, 0))
                clear -= _MAX_CLEAR
            out.append((clear, protected))
            clear = 0
        pos = body + size
    while clear:
        step = min(clear, _MAX_CLEAR)
        out.append((step, 0))
        clear -= step
    return out
